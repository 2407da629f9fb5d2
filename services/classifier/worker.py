"""Classifier worker: the front door. Validates each request, tags its difficulty, picks the
starting tier and hands the envelope to the dispatcher through JetStream.

Online requests arrive on router.v1.chat (core request-reply; the caller's inbox travels in the
envelope and the escalator answers it). Batch jobs arrive on the ROUTER_JOBS stream.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from shared import outcomes, subjects
from shared.errors import ErrorCode, RouterError
from shared.messages import (
    ChatRequest,
    Classification,
    Envelope,
    Origin,
    new_request_id,
    parse_request,
)
from shared.runtime import Service

from .chain import Classifier

log = structlog.get_logger(__name__)

service = Service("classifier")
broker, cfg = service.broker, service.config
classifier = Classifier(cfg.classifier)


@service.app.on_startup
async def load_models() -> None:
    await asyncio.to_thread(classifier.warm_up)


@broker.subscriber(
    subjects.CHAT,
    queue="classifier",
    no_reply=True,  # the escalator replies, several hops later
    max_workers=cfg.pipeline.classifier_concurrency,
)
async def on_chat(_body: object) -> None:
    msg = service.message()
    origin = Origin(kind="online", reply_to=msg.reply_to or None,
                    correlation_id=msg.correlation_id)
    trace_id = new_request_id()
    try:
        await intake(msg.body, origin, trace_id)
    except Exception as exc:  # a core message has no redelivery: answer now, whatever happened
        log.exception("chat.failed", trace_id=trace_id)
        await _reject(msg.body, origin, trace_id, time.time(),
                      RouterError(ErrorCode.INTERNAL, f"the router failed: {type(exc).__name__}"))


@service.consumer("classifier", cfg.pipeline.classifier_concurrency)
async def on_job(_body: object) -> None:
    msg = service.message()
    trace_id = outcomes.job_trace_id(msg.raw_message.metadata.sequence.stream)
    await service.settle(msg, lambda: intake(msg.body, Origin(kind="batch"), trace_id))


async def intake(body: bytes, origin: Origin, trace_id: str) -> None:
    received_at = time.time()
    try:
        request = parse_request(body, cfg.limits.max_prompt_chars)
        pinned, top = _tier_bounds(request)
    except RouterError as error:
        await _reject(body, origin, trace_id, received_at, error)
        return
    request_id = request.request_id or trace_id
    if origin.kind == "batch":
        origin = origin.model_copy(update={"job_id": request.job_id or outcomes.DEFAULT_JOB_ID})
    verdict = await classifier.classify(request.prompt_text)
    start = pinned if pinned is not None else min(cfg.start_tier(verdict.difficulty), top)
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
        ),
        start_tier=cfg.tiers[start].name,
        tier_index=start,
        max_tier_index=top,
    )
    await broker.publish(
        envelope.model_dump_json().encode(),
        subjects.DISPATCH,
        headers={subjects.MSG_ID: f"{trace_id}.1.d"},
        stream=subjects.PIPELINE_STREAM,
    )


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
    body: bytes, origin: Origin, trace_id: str, received_at: float, error: RouterError
) -> None:
    request_id, job_id = outcomes.salvage_ids(body)
    request_id = request_id or trace_id  # a redelivered job is rejected under the same id
    if origin.kind == "batch":
        origin = origin.model_copy(update={"job_id": job_id or outcomes.DEFAULT_JOB_ID})
    log.info("request.rejected", request_id=request_id, code=error.code, bytes=len(body))
    await outcomes.fail(
        broker,
        origin=origin,
        request_id=request_id,
        trace_id=trace_id,
        code=error.code,
        message=error.message,
        event=outcomes.rejection_event(request_id=request_id, origin=origin, body=body,
                                       received_at=received_at),
    )
