"""Each stage reads what it consumes as if it came from outside: an envelope whose tier, costs
or counts are impossible is refused when it is read (the stage dead-letters it at once), never
called, billed or answered."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from pydantic import ValidationError

from shared import subjects
from shared.messages import Envelope
from tests import harness
from tests.stage_helpers import attempt, envelope

TIERS = 3


def forged(**fields: object) -> dict:
    body = json.loads(envelope(attempts=[attempt(1)]).model_dump_json())
    for path, value in fields.items():
        *parents, leaf = path.split("__")
        target = body
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[leaf] = value
    return body


@pytest.mark.parametrize("fields", [
    {"tier_index": -1},                        # Python would read it as the last tier
    {"tier_index": 2, "max_tier_index": 1},    # above the request's own bound
    {"max_tier_index": TIERS},                 # beyond the configured tiers
    {"hop": 0},
    {"attempts__0__cost_usd": -1000.0},
    {"attempts__0__cost_usd": math.inf},
    {"attempts__0__input_tokens": -5},
    {"attempts__0__n": 0},
    {"hop": 40_000},                           # past the ledger's smallint
    {"trace_id": "a b.*"},                     # not a key the hop-record bucket can hold
    {"deadline": math.nan},                    # would switch every timeout off
    {"answer": {"text": "x", "attempt": 9, "tier_index": 0, "finish_reason": "stop"}},
], ids=lambda fields: ",".join(f"{k}={v}" for k, v in fields.items()))
def test_an_impossible_envelope_is_refused_when_read(fields):
    body = json.dumps(forged(**fields)).encode()  # allow_nan: inf is written as Infinity

    with pytest.raises(ValidationError):
        Envelope.model_validate_json(body, context={"tiers": TIERS})


def test_a_possible_envelope_is_read_whole():
    body = json.dumps(forged()).encode()

    read = Envelope.model_validate_json(body, context={"tiers": TIERS})

    assert read.model_dump(mode="json") == json.loads(body)


async def test_a_forged_dispatch_is_a_dead_letter_and_calls_no_model(stack, nc, conn, emulator):
    trace = f"forged-{uuid.uuid4().hex[:8]}"
    body = forged(tier_index=-1, request_id=trace, trace_id=trace)
    before = emulator.control("GET", "stats")

    ack = await nc.jetstream().publish(subjects.DISPATCH, json.dumps(body).encode(),
                                       stream=subjects.PIPELINE_STREAM)

    rows = await harness.rows_when_ready(
        conn, "SELECT deliveries, reason FROM dead_letters WHERE subject = %s AND stream_seq = %s",
        (subjects.DISPATCH, ack.seq))
    assert rows[0][0] == 1 and "tier_index" in rows[0][1]
    assert emulator.control("GET", "stats")["total"] == before["total"]
    cur = await conn.execute("SELECT count(*) FROM requests WHERE trace_id = %s", (trace,))
    assert (await cur.fetchone())[0] == 0  # its figures are nobody's bill
