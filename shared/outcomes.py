"""How a request ends, wherever it ends: the answer or error goes back where the request came
from (an online caller's inbox, or a batch job's results subject) and the ledger gets its row.

Every publish here is idempotent: results and events carry a Nats-Msg-Id, and the ledger dedups
on request_id, so a redelivered handler that runs this twice changes nothing.
"""

from __future__ import annotations

import json
import time

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, ValidationError

from shared import subjects
from shared.errors import ErrorCode
from shared.messages import (
    TOKEN_RE,
    AttemptEvent,
    DeadLetterEvent,
    Envelope,
    ErrorBody,
    ErrorReply,
    Origin,
    RequestEvent,
    fingerprint,
)

DEFAULT_JOB_ID = "default"


async def deliver(broker: NatsBroker, origin: Origin, reply: BaseModel, *, msg_id: str) -> None:
    """The reply to an online caller's inbox, or a batch result (deduped on msg_id)."""
    body = reply.model_dump_json().encode()
    if origin.kind == "online":
        if origin.reply_to:  # a plain publish with no reply subject has nobody to answer
            await broker.publish(body, origin.reply_to, correlation_id=origin.correlation_id)
        return
    await broker.publish(
        body,
        subjects.results(origin.job_id or DEFAULT_JOB_ID),
        headers={subjects.MSG_ID: msg_id},
        stream=subjects.RESULTS_STREAM,
    )


async def publish_event(broker: NatsBroker, event: RequestEvent | AttemptEvent) -> None:
    if isinstance(event, RequestEvent):
        subject, msg_id = subjects.REQUEST_EVENTS, f"r.{event.request_id}"
    else:
        subject, msg_id = subjects.ATTEMPT_EVENTS, f"a.{event.request_id}.{event.n}"
    await broker.publish(
        event.model_dump_json().encode(),
        subject,
        headers={subjects.MSG_ID: msg_id},
        stream=subjects.EVENTS_STREAM,
    )


def request_event(
    envelope: Envelope, *, store_prompt: bool, status: str, error_code: str | None = None
) -> RequestEvent:
    """The ledger row of an envelope; the reply's figures are computed from the same fields."""
    sha, chars = fingerprint(envelope.request.prompt_text)
    return RequestEvent(
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
        prompt_sha256=sha,
        prompt_chars=chars,
        prompt_text=envelope.request.prompt_text if store_prompt else None,
    )


async def fail(
    broker: NatsBroker,
    *,
    origin: Origin,
    request_id: str,
    trace_id: str,
    code: ErrorCode,
    message: str,
    event: RequestEvent,
) -> None:
    """An error reply to the caller and an error row in the ledger: never silence."""
    reply = ErrorReply(
        request_id=request_id,
        job_id=origin.job_id if origin.kind == "batch" else None,
        error=ErrorBody(code=code, message=message),
    )
    await deliver(broker, origin, reply, msg_id=trace_id)
    await publish_event(broker, event.model_copy(update={"status": "error", "error_code": code}))


def rejection_event(
    *, request_id: str, origin: Origin, body: bytes, received_at: float
) -> RequestEvent:
    """The ledger row of a request refused before classification; it hashes the raw body."""
    sha, chars = fingerprint(body.decode("utf-8", "replace"))
    return RequestEvent(
        request_id=request_id,
        received_at=received_at,
        finished_at=time.time(),
        source=origin.kind,
        job_id=origin.job_id,
        status="error",
        latency_ms=(time.time() - received_at) * 1000,
        prompt_sha256=sha,
        prompt_chars=chars,
    )


def salvage_ids(body: bytes) -> tuple[str | None, str | None]:
    """request_id and job_id from a body that failed validation, when they are usable."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deeply nested bodies too
        return None, None
    if not isinstance(data, dict):
        return None, None
    return _token(data.get("request_id")), _token(data.get("job_id"))


def _token(value: object) -> str | None:
    return value if isinstance(value, str) and TOKEN_RE.fullmatch(value) else None


async def dead_letter(
    broker: NatsBroker,
    msg: NatsMessage,
    reason: str,
    *,
    request_id: str | None = None,
    trace_id: str | None = None,
    ending: tuple[Origin, RequestEvent] | None = None,
) -> None:
    """Record a message no delivery could settle, and tell its caller when we know who it is."""
    raw = msg.raw_message
    event = DeadLetterEvent(
        subject=raw.subject,
        stream_seq=raw.metadata.sequence.stream,
        deliveries=raw.metadata.num_delivered,
        reason=reason,
        request_id=request_id,
        body_bytes=len(raw.data),
        at=time.time(),
    )
    await broker.publish(
        event.model_dump_json().encode(),
        subjects.DEAD_LETTER_EVENTS,
        headers={subjects.MSG_ID: f"dl.{raw.metadata.stream}.{event.stream_seq}"},
        stream=subjects.EVENTS_STREAM,
    )
    if ending is not None and request_id is not None:
        origin, request_row = ending
        await fail(
            broker,
            origin=origin,
            request_id=request_id,
            trace_id=trace_id or request_id,
            code=ErrorCode.DEAD_LETTER,
            message="the router could not process this request; it is recorded for an operator",
            event=request_row,
        )


async def dead_letter_envelope(
    broker: NatsBroker, msg: NatsMessage, reason: str, *, store_prompt: bool
) -> None:
    """Dead-letter a pipeline message; when it is a readable envelope, its caller hears why."""
    try:
        envelope = Envelope.model_validate_json(msg.body)
    except ValidationError:
        await dead_letter(broker, msg, reason)
        return
    row = request_event(envelope, store_prompt=store_prompt, status="error")
    await dead_letter(broker, msg, reason, request_id=envelope.request_id,
                      trace_id=envelope.trace_id, ending=(envelope.origin, row))
