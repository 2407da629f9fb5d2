"""Turns the messages of a batch into entries for the writer. An event that cannot be read, or
could not be stored as it is, becomes a dead letter saying why: it is recorded, never dropped,
and never reaches PostgreSQL as a row that would fail the batch or be billed."""

from __future__ import annotations

import structlog
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from shared import subjects
from shared.messages import AttemptEvent, DeadLetterEvent, RequestEvent, describe_validation_error

from . import columns
from .writer import Entry, Origin

log = structlog.get_logger(__name__)

_EVENT_TYPES: dict[str, tuple[type[BaseModel], str, dict[str, columns.Column]]] = {
    subjects.REQUEST_EVENTS: (RequestEvent, "requests", columns.REQUESTS),
    subjects.ATTEMPT_EVENTS: (AttemptEvent, "attempts", columns.ATTEMPTS),
    subjects.DEAD_LETTER_EVENTS: (DeadLetterEvent, "dead_letters", columns.DEAD_LETTERS),
}


def read(messages: list[Msg]) -> list[Entry]:
    return [_entry(m) for m in messages]


def origin_of(msg: Msg) -> Origin:
    meta = msg.metadata
    return Origin(subject=msg.subject, stream_seq=meta.sequence.stream,
                  deliveries=meta.num_delivered, body_bytes=len(msg.data),
                  at=meta.timestamp.timestamp())


def _entry(msg: Msg) -> Entry:
    origin = origin_of(msg)
    kind = _EVENT_TYPES.get(msg.subject)
    if kind is None:
        return _refused(origin, f"unreadable event: no event type for subject {msg.subject}")
    model, table, types = kind
    try:
        event = model.model_validate_json(msg.data)
    except ValidationError as exc:
        return _refused(origin, f"unreadable event: {describe_validation_error(exc)}")
    if found := columns.problems(table, types, event):
        return _refused(origin, f"cannot be stored: {'; '.join(found)}",
                        getattr(event, "request_id", None))
    return Entry(event, origin)  # type: ignore[arg-type]


def _refused(origin: Origin, reason: str, request_id: str | None = None) -> Entry:
    letter = origin.dead_letter(reason, request_id)
    log.warning("ledger.dead_letter", subject=letter.subject, seq=origin.stream_seq,
                reason=letter.reason)
    return Entry(letter, origin, replaced=True)
