"""What a hop paid for, kept in the hops bucket under the trace and the hop, as long as a
message's redeliveries last (topology.HOP_DEDUP_WINDOW_S, 10 minutes): a message redelivered
after a crash, or after a publish that failed, replays what its first delivery paid for instead
of paying again. The dispatcher keeps its calls and answer, the escalator its paid checks'
verdict."""

from __future__ import annotations

from typing import TypeVar

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel

from shared import payload, subjects

log = structlog.get_logger(__name__)

Record = TypeVar("Record", bound=BaseModel)


async def keep(broker: NatsBroker, key: str, record: BaseModel) -> None:
    """Without the record (bucket full, too large, no receipt in time) a redelivered hop pays
    again; the request still goes on, since failing it here would redeliver it, and pay again,
    for sure."""
    body = record.model_dump_json().encode()
    try:
        hops = await broker.key_value(subjects.HOPS_BUCKET, declare=False)  # cached
        payload.check(broker.connection.max_payload, key, body)
        await hops.put(key, body)
    except Exception as exc:
        log.warning("hop.not_recorded", key=key, reason=f"{type(exc).__name__}: {exc}")


async def kept(broker: NatsBroker, key: str, kind: type[Record]) -> Record | None:
    hops = await broker.key_value(subjects.HOPS_BUCKET, declare=False)
    try:
        entry = await hops.get(key)
    except KeyNotFoundError:
        return None
    return kind.model_validate_json(entry.value) if entry.value else None
