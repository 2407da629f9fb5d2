"""How a request ends, wherever it ends: the answer or error goes back where the request came
from (an online caller's inbox, or a batch job's results subject) and the ledger gets its row.

Every publish here is idempotent: results and events carry a Nats-Msg-Id, and the ledger dedups
on request_id, so a redelivered handler that runs this twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import structlog
from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from shared import idempotency, payload, subjects
from shared.errors import ErrorCode
from shared.messages import (
    PRINTABLE_RE,
    TOKEN_RE,
    Attempt,
    AttemptEvent,
    DeadLetterEvent,
    Envelope,
    ErrorBody,
    ErrorReply,
    Origin,
    RequestEvent,
    fingerprint,
)

log = structlog.get_logger(__name__)

DEFAULT_JOB_ID = "default"
# How long the events of calls already paid for are tried again in place before the failure is
# raised (a NATS restart takes seconds): were they given up while the hop record is missing too,
# the redelivered message would call again and these calls would have no ledger row.
BILL_PATIENCE_S = 30.0


async def deliver(broker: NatsBroker, origin: Origin, reply: BaseModel, *, msg_id: str) -> None:
    """The reply to an online caller's inbox, or a batch result (deduped on msg_id), kept under
    the request's idempotency key if it holds one. A reply too large to send is replaced by an
    error reply that says so."""
    if origin.claim is not None:  # first, so a retry that arrives after the reply finds it
        try:
            await idempotency.store_reply(broker, origin.claim, msg_id,
                                          reply.model_dump(mode="json"))
        except Exception:  # the caller's answer matters more than a later retry's
            log.exception("idempotency.reply_not_kept", key=origin.claim.key)
    body = reply.model_dump_json().encode()
    try:
        await send_reply(broker, origin, body, msg_id)
    except payload.TooLarge as exc:
        log.error("reply.too_large", size=exc.size, limit=exc.limit)
        error = ErrorReply(request_id=getattr(reply, "request_id", None), job_id=origin.job_id,
                           error=ErrorBody(code=ErrorCode.PROMPT_TOO_LARGE, message=str(exc)))
        await send_reply(broker, origin, error.model_dump_json().encode(), msg_id)
    if origin.done_subject:  # the classifier that admitted it counts it out
        await broker.publish(msg_id.encode(), origin.done_subject)


async def send_reply(broker: NatsBroker, origin: Origin, body: bytes, msg_id: str) -> None:
    """The reply, to its caller: an online caller's reply subject, a batch job's results.
    A request on a tenant's subject is answered only in that tenant's own inboxes: its reply
    subject is the caller's to choose, and answering another's would publish into it (a
    refusal, an error ending another caller's stream)."""
    if origin.kind == "online":
        if origin.reply_to and not subjects.own_inbox(origin.tenant, origin.reply_to):
            log.info("reply.not_sent", reason="reply subject outside the tenant's inboxes",
                     tenant=origin.tenant)
        elif origin.reply_to:  # a plain publish with no reply subject has nobody to answer
            # nats-py directly: a core reply needs nothing of FastStream's publish path, which
            # costs more than the rest of a refusal under a burst.
            headers = {"correlation_id": origin.correlation_id} if origin.correlation_id else None
            payload.check(broker.connection.max_payload, origin.reply_to, body, headers)
            await broker.connection.publish(origin.reply_to, body, headers=headers)
        return
    await payload.publish(
        broker,
        body,
        subjects.results(origin.tenant, origin.job_id or DEFAULT_JOB_ID),
        headers={subjects.MSG_ID: msg_id},
        stream=subjects.RESULTS_STREAM,
    )


async def publish_event(broker: NatsBroker, event: RequestEvent | AttemptEvent, *,
                        verdict: bool = False) -> None:
    """An event for the ledger, deduplicated on its key: a request's trace, an attempt's call
    (and, once more, the escalator's verdict on a call's answer)."""
    if isinstance(event, RequestEvent):
        subject, msg_id = subjects.REQUEST_EVENTS, f"r.{event.trace_id}"
    else:
        subject, msg_id = subjects.ATTEMPT_EVENTS, f"{'v' if verdict else 'a'}.{event.call_id}"
    headers = {subjects.MSG_ID: msg_id}
    body = event.model_dump_json().encode()
    if isinstance(event, RequestEvent) and event.prompt_text:
        try:
            payload.check(broker.connection.max_payload, subject, body, headers)
        except payload.TooLarge:  # the row matters more than the stored text
            body = event.model_copy(update={"prompt_text": None}).model_dump_json().encode()
    await payload.publish(broker, body, subject, headers=headers, stream=subjects.EVENTS_STREAM)


async def record_attempts(broker: NatsBroker, envelope: Envelope, attempts: list[Attempt], *,
                          verdict: bool = False, patience_s: float = BILL_PATIENCE_S) -> None:
    """The ledger's rows for calls of this envelope's request. The dispatcher records each call
    as soon as it returns, before anything after it can fail; the escalator records its
    verdict on an answer (`weak`) as an update of the same row. A failed publish is tried again
    for `patience_s` (and the try under way, at most payload.RECEIPT_TIMEOUT_S) before it is
    raised."""
    now = time.time()
    events = [AttemptEvent(**a.model_dump(), trace_id=envelope.trace_id,
                           request_id=envelope.request_id, tenant=envelope.request.tenant, at=now)
              for a in attempts]

    async def publish_all() -> None:  # again: the events already in are deduplicated
        await asyncio.gather(*(publish_event(broker, e, verdict=verdict) for e in events))

    try:  # the usual case, without building a retry loop for it
        return await publish_all()
    except Exception as error:
        if not _worth_another_try(error):
            raise
        log.warning("attempts.not_recorded_yet", tries=1, reason=_reason(error))
    retrying = AsyncRetrying(
        stop=stop_after_delay(patience_s),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        retry=retry_if_exception(_worth_another_try),
        before_sleep=_note_unrecorded,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await publish_all()


def _worth_another_try(error: BaseException) -> bool:
    """A server or connection failure; not a cancellation (the service stopping), nor an event
    too large (as large the next time)."""
    return isinstance(error, Exception) and not isinstance(error, payload.TooLarge)


def _note_unrecorded(retry: RetryCallState) -> None:
    error = retry.outcome.exception() if retry.outcome else None
    log.warning("attempts.not_recorded_yet", tries=1 + retry.attempt_number,
                reason=_reason(error))


def _reason(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}"[:200]


def request_event(
    envelope: Envelope, *, store_prompt: bool, status: str, error_code: str | None = None
) -> RequestEvent:
    """The ledger row of an envelope; the reply's figures are computed from the same fields."""
    sha, chars = fingerprint(envelope.request.prompt_text)
    return RequestEvent(
        trace_id=envelope.trace_id,
        request_id=envelope.request_id,
        received_at=envelope.received_at,
        finished_at=time.time(),
        tenant=envelope.request.tenant,
        source=envelope.origin.kind,
        job_id=envelope.origin.job_id,
        status=status,  # type: ignore[arg-type]
        error_code=error_code,
        difficulty=envelope.classification.difficulty,
        start_tier=envelope.start_tier,
        classifier_backend=envelope.classification.backend,
        classifier_confidence=envelope.classification.confidence,
        attempts=len(envelope.attempts),
        cost_usd=envelope.cost_usd,
        input_tokens=sum(a.input_tokens for a in envelope.attempts),
        output_tokens=sum(a.output_tokens for a in envelope.attempts),
        emulated=any(a.emulated for a in envelope.attempts),
        latency_ms=(time.time() - envelope.received_at) * 1000,
        provider_latency_ms=sum(a.latency_ms for a in envelope.attempts),
        ttft_ms=envelope.ttft_ms,
        prompt_sha256=sha,
        prompt_chars=chars,
        # PostgreSQL text cannot hold NUL: the stored copy drops it (the hash is of the original).
        prompt_text=envelope.request.prompt_text.replace("\x00", "") if store_prompt else None,
        features=envelope.features.values if envelope.features else None,
        feature_set=envelope.features.feature_set if envelope.features else None,
    )


class NotRecorded(Exception):
    """An error reply was sent, and its ledger row could not be published."""


async def fail(
    broker: NatsBroker,
    *,
    origin: Origin,
    request_id: str,
    trace_id: str,
    code: ErrorCode,
    message: str,
    event: RequestEvent,
    retry_after_s: float | None = None,
) -> None:
    """An error reply to the caller and an error row in the ledger: never silence. A row that
    cannot be published after the reply went raises NotRecorded: the caller has its answer,
    and must not be sent another."""
    reply = ErrorReply(
        request_id=request_id,
        job_id=origin.job_id if origin.kind == "batch" else None,
        error=ErrorBody(code=code, message=message, retry_after_s=retry_after_s),
    )
    await deliver(broker, origin, reply, msg_id=trace_id)
    try:
        await publish_event(broker, event.model_copy(update={"status": "error",
                                                             "error_code": code}))
    except Exception as exc:
        raise NotRecorded(f"the error reply went, its ledger row did not: "
                          f"{type(exc).__name__}: {exc}") from exc


def rejection_event(
    *, trace_id: str, request_id: str, origin: Origin, prompt: tuple[str, int],
    received_at: float, tenant: str | None = None, finished_at: float | None = None,
    error_code: ErrorCode | None = None,
) -> RequestEvent:
    """The ledger row of a request refused before classification; `prompt` is the raw body's
    body_fingerprint."""
    sha, chars = prompt
    finished_at = finished_at or time.time()
    return RequestEvent(
        trace_id=trace_id,
        request_id=request_id,
        tenant=tenant,
        received_at=received_at,
        finished_at=finished_at,
        source=origin.kind,
        job_id=origin.job_id,
        status="error",
        error_code=error_code,
        latency_ms=(finished_at - received_at) * 1000,
        prompt_sha256=sha,
        prompt_chars=chars,
    )


def body_fingerprint(body: bytes) -> tuple[str, int]:
    """What the ledger keeps of a body it could not read as a request."""
    return fingerprint(body.decode("utf-8", "replace"))


class Salvaged(NamedTuple):
    """What a body that failed validation says of itself, where it is usable: its ids, and the
    tenant it names (for its results subject, hashed there when it is not a safe token)."""

    request_id: str | None = None
    job_id: str | None = None
    tenant: str | None = None


def salvage(body: bytes) -> Salvaged:
    """The body read once (a refusal under a burst must cost little)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deeply nested bodies too
        return Salvaged()
    if not isinstance(data, dict):
        return Salvaged()
    return Salvaged(_token(data.get("request_id")), _token(data.get("job_id")),
                    name_or_none(data.get("tenant")))


def name_or_none(value: object) -> str | None:
    """`value` if it is a name a request may give (messages.Name), else None. Not cut to
    length: a 70-character tenant's first 64 characters may be another tenant's name."""
    if isinstance(value, str) and len(value) <= 64 and PRINTABLE_RE.fullmatch(value):
        with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate is no name
            value.encode()
            return value
    return None


def _token(value: object) -> str | None:
    return value if isinstance(value, str) and TOKEN_RE.fullmatch(value) else None


@dataclass(frozen=True)
class Unsettled:
    """A stream message that no delivery settled: handed over by a handler that gave up, or
    read back from its stream after JetStream's max-deliveries advisory (a crash loop)."""

    stream: str
    subject: str
    stream_seq: int
    deliveries: int
    body: bytes
    stored_at: datetime

    @classmethod
    def of(cls, msg: NatsMessage) -> Unsettled:
        meta = msg.raw_message.metadata
        return cls(meta.stream, msg.raw_message.subject, meta.sequence.stream,
                   meta.num_delivered, msg.body, meta.timestamp)


def job_trace_id(stream_seq: int, stored_at: datetime) -> str:
    """A job's place in its stream names its hops, so a redelivered job dedups downstream. The
    time it was stored is part of it: a sequence alone starts over with a new stream or server,
    and the ledger keys requests on their trace."""
    # Whole seconds: nats-py reads the stored time with different rounding in a delivery's
    # metadata and in a message read back from its stream.
    return f"job{stream_seq}-{int(stored_at.timestamp())}"


async def dead_letter(
    broker: NatsBroker, message: Unsettled, reason: str, *, store_prompt: bool, tiers: int
) -> None:
    """Record a message no delivery could settle, and tell its caller why when the message
    says who that is: a batch job's results subject, or an envelope's origin (only when the
    envelope reads as possible with the `tiers` configured: a forged one is recorded, never
    answered or billed)."""
    is_job = message.stream == subjects.JOBS_STREAM
    ending = _job_ending(message) if is_job else _envelope_ending(message, store_prompt, tiers)
    event = DeadLetterEvent(
        subject=message.subject,
        stream_seq=message.stream_seq,
        deliveries=message.deliveries,
        reason=reason,
        request_id=ending.row.request_id if ending else None,
        body_bytes=len(message.body),
        at=time.time(),
    )
    await payload.publish(
        broker,
        event.model_dump_json().encode(),
        subjects.DEAD_LETTER_EVENTS,
        headers={subjects.MSG_ID: f"dl.{message.stream}.{message.stream_seq}"},
        stream=subjects.EVENTS_STREAM,
    )
    if ending is not None:
        await fail(
            broker,
            origin=ending.origin,
            request_id=ending.row.request_id,
            trace_id=ending.trace_id,
            code=ErrorCode.DEAD_LETTER,
            message="the router could not process this request; it is recorded for an operator",
            event=ending.row,
        )


class _Ending(NamedTuple):
    origin: Origin
    row: RequestEvent
    trace_id: str


def _job_ending(message: Unsettled) -> _Ending:
    """A job's caller reads its results subject, named by the job_id when the body has one."""
    trace_id = job_trace_id(message.stream_seq, message.stored_at)
    found = salvage(message.body)
    origin = Origin(kind="batch", job_id=found.job_id or DEFAULT_JOB_ID,
                    tenant=subjects.tenant_of(message.subject) or found.tenant)
    row = rejection_event(trace_id=trace_id, request_id=found.request_id or trace_id,
                          origin=origin, prompt=body_fingerprint(message.body),
                          received_at=time.time())
    return _Ending(origin, row, trace_id)


def _envelope_ending(message: Unsettled, store_prompt: bool, tiers: int) -> _Ending | None:
    try:
        envelope = Envelope.read(message.body, tiers)
    except ValidationError:
        return None
    row = request_event(envelope, store_prompt=store_prompt, status="error")
    return _Ending(envelope.origin, row, envelope.trace_id)
