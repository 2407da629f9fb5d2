"""Classifier worker: the front door. Validates each request, tags its difficulty, picks the
starting tier and hands the envelope to the dispatcher through JetStream.

Online requests arrive on router.v1.chat (core request-reply; the caller's inbox travels in the
envelope and the escalator answers it). Batch jobs arrive on the ROUTER_JOBS stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError

from shared import idempotency, outcomes, payload, subjects
from shared.errors import ErrorCode, RouterError
from shared.messages import (
    ChatRequest,
    Claim,
    Classification,
    Envelope,
    ErrorBody,
    ErrorReply,
    Origin,
    new_request_id,
    parse_request,
)
from shared.runtime import Service

from .admission import Admission
from .chain import Classifier

log = structlog.get_logger(__name__)

service = Service("classifier")
broker, cfg = service.broker, service.config
classifier = Classifier(cfg.classifier,
                        router_shares=(cfg.routing.strong_share, cfg.routing.medium_share))
admission = Admission(cfg.pipeline.max_online_in_flight)
done_subject = subjects.done(new_request_id())


@service.app.on_startup
async def load_models() -> None:
    await asyncio.to_thread(classifier.warm_up)
    # The model's thread runs Python between its numpy and ONNX calls; with the default 5 ms
    # switch interval it kept the event loop, which answers refusals, waiting behind it.
    sys.setswitchinterval(SWITCH_INTERVAL_S)


@service.app.after_startup
async def open_front_door() -> None:
    """Plain nats-py subscriptions, no framework hop: admission must cost far less than the work
    it refuses, so a burst is answered at once."""
    nc = broker.connection
    await nc.subscribe(done_subject, cb=_count_out)
    # The shared subject (open mode, admin) and the per-tenant ones client identities may use.
    for subject in (subjects.CHAT, f"{subjects.CHAT}.*"):
        chat_subscriptions.append(await nc.subscribe(subject, queue="classifier", cb=on_chat))


@service.app.on_shutdown
async def close_front_door() -> None:
    """Take no more requests, and let the ones in hand reach the dispatcher."""
    for subscription in chat_subscriptions:
        with contextlib.suppress(Exception):
            await subscription.drain()  # the requests already queued are still served
    if chats:
        await asyncio.wait(chats, timeout=cfg.limits.provider_timeout_s)


chat_subscriptions: list[Subscription] = []
chats: set[asyncio.Task] = set()  # requests in hand, and refusals' ledger rows
SALVAGE_MAX_BYTES = 4096
SWITCH_INTERVAL_S = 0.0005


async def _count_out(msg: Msg) -> None:
    admission.done(msg.data.decode())


async def on_chat(msg: Msg) -> None:
    """Runs in nats-py's delivery loop, so it never waits on work: an admitted request goes on as
    a task of its own; a refusal is answered here (one publish), its ledger row follows."""
    origin = Origin(kind="online", tenant=subjects.tenant_of(msg.subject),
                    reply_to=msg.reply or None,
                    correlation_id=(msg.headers or {}).get("correlation_id"))
    trace_id, received_at = new_request_id(), time.time()
    if admission.admit(trace_id, received_at + cfg.limits.request_timeout_s):
        _spawn(_serve_chat(msg.data, origin, trace_id, received_at))
        return
    # Reading the ids of a large body would make a refusal cost what it saves.
    small = len(msg.data) <= SALVAGE_MAX_BYTES
    request_id = (outcomes.salvage_ids(msg.data)[0] if small else None) or trace_id
    tenant = origin.tenant or (outcomes.salvage_tenant(msg.data) if small else None)
    if origin.reply_to and _reply_allowed(origin):
        refusal = ErrorReply(request_id=request_id, error=ErrorBody(
            code=ErrorCode.OVERLOADED,
            message=f"the router holds {admission.limit} online requests already; try again "
                    "shortly",
            retry_after_s=cfg.pipeline.overloaded_retry_after_s))
        await outcomes.send_reply(broker, origin, refusal.model_dump_json().encode(), trace_id)
    event = outcomes.rejection_event(trace_id=trace_id, request_id=request_id, origin=origin,
                                     body=msg.data, received_at=received_at, tenant=tenant)
    _spawn(outcomes.publish_event(broker, event.model_copy(
        update={"error_code": ErrorCode.OVERLOADED})))


def _reply_allowed(origin: Origin) -> bool:
    """A tenant's own subject may only be answered in that tenant's inboxes: a refusal must not
    become a way to publish into another tenant's."""
    return origin.tenant is None or (origin.reply_to or "").startswith(
        subjects.inbox_prefix(origin.tenant) + ".")


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    chats.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task) -> None:
    chats.discard(task)
    if not task.cancelled() and task.exception() is not None:  # a refusal's row not recorded
        log.error("chat.task_failed", reason=repr(task.exception()))


async def _serve_chat(body: bytes, origin: Origin, trace_id: str, received_at: float) -> None:
    handed_on = False
    try:
        handed_on = await intake(body, origin.model_copy(update={"done_subject": done_subject}),
                                 trace_id)
    except Exception as exc:  # a core message has no redelivery: answer now, whatever happened
        log.exception("chat.failed", trace_id=trace_id)
        await _reject(body, origin, trace_id, received_at,
                      RouterError(ErrorCode.INTERNAL, f"the router failed: {type(exc).__name__}"))
    finally:
        if not handed_on:
            admission.done(trace_id)


@service.consumer("classifier", cfg.pipeline.classifier_concurrency)
async def on_job(_body: object) -> None:
    msg = service.message()
    meta = msg.raw_message.metadata
    trace_id = outcomes.job_trace_id(meta.sequence.stream, meta.timestamp)
    origin = Origin(kind="batch", tenant=subjects.tenant_of(msg.raw_message.subject))
    await service.settle(msg, lambda: intake(msg.body, origin, trace_id))


async def intake(body: bytes, origin: Origin, trace_id: str) -> bool:
    """Validate, classify and hand the request to the dispatcher; False when it was answered
    here instead (rejected)."""
    received_at = time.time()
    try:
        request = _vouched(parse_request(body, cfg.limits), origin)
        pinned, top = _tier_bounds(request)
    except RouterError as error:
        await _reject(body, origin, trace_id, received_at, error)
        return False
    request_id = request.request_id or trace_id
    if origin.kind == "batch":
        origin = origin.model_copy(update={"job_id": request.job_id or outcomes.DEFAULT_JOB_ID,
                                           "tenant": request.tenant})
    claim = idempotency.claim_for(request, origin)
    if claim is not None:
        try:
            earlier = await idempotency.take(broker, claim, trace_id)
        except APIError as exc:  # the bucket is full: no key can be honoured now
            if origin.kind == "batch":
                raise  # redelivered after a backoff
            await _reject(body, origin, trace_id, received_at, _overloaded(exc),
                          tenant=request.tenant)
            return False
        if earlier is not None and earlier.trace_id != trace_id:  # not our own redelivery
            await _answer_reused_id(body, request, origin, trace_id, received_at, claim, earlier)
            return False
        origin = origin.model_copy(update={"claim": claim})
    try:
        verdict = await classifier.classify(request.prompt_text)
        # A router model, when configured, picks the routing row; the tag stays in the reply.
        decided_by = ("request" if pinned is not None
                      else "router_model" if verdict.routed_as is not None else "difficulty")
        start = pinned if pinned is not None else min(
            cfg.start_tier(verdict.routed_as or verdict.difficulty), top)
        envelope = Envelope(
            request_id=request_id,
            trace_id=trace_id,
            request=request,
            origin=origin,
            received_at=received_at,
            deadline=received_at + (cfg.limits.batch_timeout_s if origin.kind == "batch"
                                    else cfg.limits.request_timeout_s),
            classification=Classification(
                difficulty=verdict.difficulty,
                confidence=verdict.confidence,
                backend=verdict.backend,
                latency_ms=verdict.latency_ms,
                strong_score=verdict.strong_score,
                decided_by=decided_by,
            ),
            start_tier=cfg.tiers[start].name,
            tier_index=start,
            max_tier_index=top,
        )
        await payload.publish(
            broker,
            envelope.model_dump_json().encode(),
            subjects.DISPATCH,
            headers={subjects.MSG_ID: f"{trace_id}.1.d"},
            stream=subjects.PIPELINE_STREAM,
        )
    except payload.TooLarge as exc:
        error = RouterError(ErrorCode.PROMPT_TOO_LARGE, f"the request cannot travel: {exc}")
    except APIError as exc:  # the pipeline stream is full (its max_bytes) or refuses for now
        error = _overloaded(exc)
        if claim is not None:  # a passing refusal: the same id may be tried again
            await idempotency.release(broker, claim)
            origin = origin.model_copy(update={"claim": None})
        if origin.kind == "batch":
            raise  # a job waits in its stream and is redelivered after a backoff
    except Exception:
        if claim is not None:  # the key must not stay pending for the whole window
            await idempotency.release(broker, claim)
        raise
    else:
        return True
    await _reject(body, origin, trace_id, received_at, error, tenant=request.tenant)
    return False


def _overloaded(exc: APIError) -> RouterError:
    return RouterError(ErrorCode.OVERLOADED, f"the router's queues refuse the request for now: "
                       f"{exc.description}", cfg.pipeline.overloaded_retry_after_s)


async def _answer_reused_id(
    body: bytes, request: ChatRequest, origin: Origin, trace_id: str, received_at: float,
    claim: Claim, earlier: idempotency.Record,
) -> None:
    """A request_id seen within the window: the first reply again for the same request (no
    provider call, nothing billed), `duplicate_request` for a different one."""
    if earlier.fingerprint != claim.fingerprint:
        await _reject(body, origin, trace_id, received_at, RouterError(
            ErrorCode.DUPLICATE_REQUEST,
            f"request_id '{request.request_id}' was used for a different request in the last "
            f"{cfg.pipeline.dedup_window_s:.0f} s; give this request an id of its own"),
            tenant=request.tenant)
        return
    reply = earlier.reply
    if reply is None and origin.kind == "online":  # the first is still running: wait for it
        reply = await idempotency.reply_when_done(
            broker, claim, received_at + cfg.limits.request_timeout_s)
    if reply is None:  # a batch duplicate: the first's result goes to the same job
        log.info("request.duplicate_pending", request_id=request.request_id)
        if origin.kind == "online":
            await _reject(body, origin, trace_id, received_at, RouterError(
                ErrorCode.TIMEOUT, "the first request with this request_id is still running"),
                tenant=request.tenant)
        return
    log.info("request.replayed", request_id=request.request_id)
    await outcomes.send_reply(broker, origin, json.dumps(reply).encode(), earlier.trace_id)


def _vouched(request: ChatRequest, origin: Origin) -> ChatRequest:
    """The request with the tenant its subject names: a client identity may publish only on
    its own tenant's subjects (the server's permissions vouch for it), and a body naming
    another tenant is refused. On the shared subjects the body's tenant stands (open mode)."""
    vouched = origin.tenant
    if vouched is None:
        return request
    if not subjects.TENANT_TOKEN_RE.fullmatch(vouched):
        raise RouterError(ErrorCode.INVALID_REQUEST, f"'{vouched}' is not a tenant name")
    if request.tenant is not None and request.tenant != vouched:
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"'tenant': this connection is tenant '{vouched}', not "
                          f"'{request.tenant}'")
    if origin.kind == "online" and origin.reply_to and not origin.reply_to.startswith(
            subjects.inbox_prefix(vouched) + "."):
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"replies to tenant '{vouched}' go to its own inbox "
                          f"({subjects.inbox_prefix(vouched)}.>), not {origin.reply_to}")
    return request.model_copy(update={"tenant": vouched})


def _tier_bounds(request: ChatRequest) -> tuple[int | None, int]:
    """The pinned starting tier, if any, and the highest tier this request may reach."""
    names = [t.name for t in cfg.tiers]
    for field in ("tier", "max_tier"):
        value = getattr(request, field)
        if value is not None and value not in names:
            raise RouterError(ErrorCode.INVALID_REQUEST,
                              f"'{field}': unknown tier '{value}' (tiers: {', '.join(names)})")
    top = cfg.top_tier_index
    if request.max_tier:
        top = min(top, cfg.tier_index(request.max_tier))
    pinned = cfg.tier_index(request.tier) if request.tier else None
    if pinned is not None and pinned > top:
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"'tier' is above the highest tier this request may reach "
                          f"({cfg.tiers[top].name})")
    return pinned, top


async def _reject(
    body: bytes, origin: Origin, trace_id: str, received_at: float, error: RouterError, *,
    tenant: str | None = None,
) -> None:
    """Answer with the error and record the refusal; `tenant` once the request is valid."""
    request_id, job_id = outcomes.salvage_ids(body)
    request_id = request_id or trace_id  # a redelivered job is rejected under the same id
    if origin.kind == "batch":
        origin = origin.model_copy(update={"job_id": job_id or outcomes.DEFAULT_JOB_ID,
                                           "tenant": origin.tenant or outcomes.salvage_tenant(
                                               body)})
    log.info("request.rejected", request_id=request_id, code=error.code, bytes=len(body))
    await outcomes.fail(
        broker,
        origin=origin.model_copy(update={"done_subject": None}),  # never counted in
        request_id=request_id,
        trace_id=trace_id,
        code=error.code,
        message=error.message,
        retry_after_s=error.retry_after_s,
        event=outcomes.rejection_event(trace_id=trace_id, request_id=request_id, origin=origin,
                                       body=body, received_at=received_at, tenant=tenant),
    )
