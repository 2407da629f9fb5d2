"""Idempotency keys, with the semantics users know from Stripe and the OpenAI batch API: the same
`request_id` with the same request returns the first result again without calling a provider;
the same id with a different request is refused (`duplicate_request`) and never billed to the
first. Keys are scoped by tenant and, for batch jobs, by job, and kept for
`pipeline.dedup_window_s`.

The classifier claims a key when a request arrives (an atomic create in a KV bucket); whichever
stage answers the request stores the reply under it (see `outcomes.deliver`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel

from shared import payload, subjects
from shared.messages import ChatRequest, Claim, Origin

PENDING_POLL_S = 0.2


class Record(BaseModel):
    """A key's value: the request it was first used for, and its reply once there is one."""

    fingerprint: str
    trace_id: str
    reply: dict | None = None


def claim_for(request: ChatRequest, origin: Origin) -> Claim | None:
    """The key a request with a caller's request_id claims; None without one."""
    if request.request_id is None:
        return None
    tenant = hashlib.sha256((request.tenant or "").encode()).hexdigest()[:16]
    scope = f"job-{origin.job_id}" if origin.kind == "batch" else "online"
    # Fields left at their defaults are left out: a field added by an upgrade must not make a
    # retry of an older request look like another request.
    content = request.model_dump_json(exclude={"request_id", "job_id"},
                                      exclude_defaults=True).encode()
    return Claim(key=f"{tenant}.{scope}.{request.request_id}",
                 fingerprint=hashlib.sha256(content).hexdigest())


async def take(broker: NatsBroker, claim: Claim, trace_id: str) -> Record | None:
    """Claim the key for this request: None when it is ours now, else the record of the
    request that holds it."""
    kv = await broker.key_value(subjects.REQUESTS_BUCKET, declare=False)
    record = Record(fingerprint=claim.fingerprint, trace_id=trace_id)
    try:
        await kv.create(claim.key, record.model_dump_json().encode())
        return None
    except KeyWrongLastSequenceError:
        pass
    try:
        entry = await kv.get(claim.key)
    except KeyNotFoundError:  # expired between the two calls: the key is free again
        return await take(broker, claim, trace_id)
    return Record.model_validate_json(entry.value or b"{}")


async def release(broker: NatsBroker, claim: Claim) -> None:
    """Give a key back when its request was refused for a passing reason (overloaded)."""
    kv = await broker.key_value(subjects.REQUESTS_BUCKET, declare=False)
    await kv.delete(claim.key)


async def reply_when_done(broker: NatsBroker, claim: Claim, deadline: float) -> dict | None:
    """The reply of the request holding the key, waited for until `deadline` (a retry sent while
    the first is still running); None if it does not come in time."""
    kv = await broker.key_value(subjects.REQUESTS_BUCKET, declare=False)
    while time.time() < deadline:
        try:
            entry = await kv.get(claim.key)
        except KeyNotFoundError:
            return None
        record = Record.model_validate_json(entry.value or b"{}")
        if record.reply is not None:
            return record.reply
        await asyncio.sleep(PENDING_POLL_S)
    return None


async def store_reply(broker: NatsBroker, claim: Claim, trace_id: str, reply: dict) -> None:
    kv = await broker.key_value(subjects.REQUESTS_BUCKET, declare=False)
    body = Record(fingerprint=claim.fingerprint, trace_id=trace_id,
                  reply=reply).model_dump_json().encode()
    try:
        payload.check(broker.connection.max_payload, claim.key, body)
    except payload.TooLarge:
        body = Record(fingerprint=claim.fingerprint, trace_id=trace_id, reply={"error": {
            "code": "internal_error", "message": "the first reply is too large to keep"},
        }).model_dump_json().encode()
    await kv.put(claim.key, body)
