"""No request can stop a service: sizes are checked in bytes at the door, every publish fits the
server's max_payload, a long answer is cut, names PostgreSQL cannot store are refused, and a burst
past the admission bound is answered at once with `overloaded`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from shared import payload, subjects
from shared.config import load_config
from shared.messages import MAX_FEATURE_BYTES, Answer, Features
from smart_router import client
from tests.harness import ask, rows_when_ready
from tests.stage_helpers import attempt, envelope

LIMITS = load_config().limits
CJK = "界"  # three bytes in UTF-8


def calls(stack) -> int:
    return stack.emulator.control("GET", "stats")["total"]


async def everyone_still_answers(nc) -> None:
    reply = await ask(nc, {"prompt": "What is 2 + 2?"})
    assert "error" not in reply, reply
    health = await client.service_health(nc)
    assert health["ok"], health["problems"]


async def test_a_megabyte_of_short_messages_is_refused_before_anything_is_published(
        stack, nc, conn):
    messages = [{"role": "user", "content": "hi"}] * 33_500
    body = json.dumps({"messages": messages, "request_id": "many-messages"},
                      separators=(",", ":")).encode()
    assert 1_000_000 < len(body) < nc.max_payload  # the size that took the classifier down
    before = calls(stack)

    reply = await ask(nc, body)

    assert reply["error"]["code"] == "prompt_too_large", reply
    assert str(LIMITS.max_request_bytes) in reply["error"]["message"]
    assert calls(stack) == before
    rows = await rows_when_ready(
        conn, "SELECT status, error_code FROM requests WHERE request_id = %s", ("many-messages",))
    assert rows == [("error", "prompt_too_large")]
    await everyone_still_answers(nc)


async def test_too_many_messages_under_the_byte_limit_are_refused(stack, nc):
    messages = [{"role": "user", "content": "hi"}] * (LIMITS.max_messages + 1)

    reply = await ask(nc, {"messages": messages})

    assert reply["error"]["code"] == "prompt_too_large"
    assert f"limit is {LIMITS.max_messages}" in reply["error"]["message"]


async def test_a_multibyte_prompt_just_over_the_byte_limit_is_refused(stack, nc):
    prompt = CJK * (LIMITS.max_request_bytes // 3)  # under the limit in characters, over in bytes
    body = json.dumps({"prompt": prompt, "tier": "simple"}, ensure_ascii=False).encode()
    assert len(prompt) < LIMITS.max_request_bytes < len(body)
    before = calls(stack)

    reply = await ask(nc, body)

    assert reply["error"]["code"] == "prompt_too_large"
    assert calls(stack) == before
    await everyone_still_answers(nc)


async def test_a_multibyte_prompt_just_under_the_byte_limit_is_answered_one_call_per_hop(
        stack, nc):
    overhead = len(json.dumps({"prompt": "", "tier": "simple"}).encode())
    prompt = CJK * ((LIMITS.max_request_bytes - overhead) // 3)
    body = json.dumps({"prompt": prompt, "tier": "simple"}, ensure_ascii=False).encode()
    assert LIMITS.max_request_bytes - 3 < len(body) <= LIMITS.max_request_bytes
    before = calls(stack)

    reply = await ask(nc, body, timeout=60)

    assert "error" not in reply, reply["error"]
    assert calls(stack) - before == len(reply["attempts"])  # no call repeated by a redelivery
    await everyone_still_answers(nc)


def test_an_envelope_at_every_limit_with_features_fits_what_services_reserve():
    """A request at the byte limit with two answers at theirs, a busy request's attempts and
    the largest feature vector (ledger.store_features) fit what the start-up check reserves;
    a server that cannot carry the features is refused at start-up, not at the limit."""
    overhead = len(json.dumps({"prompt": ""}).encode())
    text = "y" * (LIMITS.max_answer_bytes - 2)  # the answer's JSON string at the limit
    answer = Answer(text=text, attempt=1, tier_index=0, finish_reason="stop", score=0.1,
                    signals=["hedging"], logprob_mean=-0.5)
    busy = [attempt(n, "weak").model_copy(update={"reason": "r" * 300}) for n in range(1, 21)]
    full = envelope("x" * (LIMITS.max_request_bytes - overhead), attempts=busy,
                    tenant="t" * 64).model_copy(update={
                        "answer": answer, "best": answer,
                        "features": Features(feature_set="both",
                                             values=b"\x00" * MAX_FEATURE_BYTES)})
    body = full.model_dump_json().encode()
    headers = {subjects.MSG_ID: f"{full.trace_id}.{full.hop}.d"}
    reserved = (LIMITS.max_request_bytes + 2 * LIMITS.max_answer_bytes
                + payload.ENVELOPE_RESERVE + payload.FEATURES_RESERVE)

    assert payload.message_size(body, headers) <= reserved
    payload.check_limits(LIMITS, reserved)
    payload.check_limits(LIMITS, reserved - 1)  # without features, a byte short still fits
    with pytest.raises(ValueError, match="envelope and features"):
        payload.check_limits(LIMITS, reserved - 1, features=True)


async def test_an_answer_over_the_byte_limit_is_cut_and_says_so(stack, nc, emulator):
    emulator.faults({"action": "ramble", "model": "claude-haiku-4-5", "times": 1})
    before = calls(stack)

    reply = await ask(nc, {"prompt": "Say hello.", "tier": "simple", "max_tokens": 100_000},
                      timeout=60)

    assert "error" not in reply, reply
    assert len(json.dumps(reply["response"], ensure_ascii=False).encode()) <= (
        LIMITS.max_answer_bytes)
    assert len(reply["response"]) > LIMITS.max_answer_bytes // 8  # cut, not dropped
    assert "cut to" in reply["attempts"][0]["reason"]
    assert calls(stack) - before == len(reply["attempts"])
    await everyone_still_answers(nc)


@pytest.mark.parametrize("field, value", [
    ("tenant", "a\u0000b"),
    ("tenant", "line\nbreak"),
    ("tenant", "bell\u0007"),
    ("metadata", {"k\u0000": 1}),
    ("metadata", {"tab\there": "x"}),
    ("request_id", "a\u0000b"),
    ("job_id", "x\u001fy"),
    ("tier", "simple\u0000"),
])
async def test_names_postgresql_cannot_store_are_invalid(stack, nc, field, value):
    reply = await ask(nc, {"prompt": "hi", field: value})

    assert reply["error"]["code"] == "invalid_request", reply


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"1e400", b"NaN", b"-1", b"0"])
async def test_a_budget_must_be_a_finite_positive_number(stack, nc, raw):
    reply = await ask(nc, b'{"prompt": "hi", "max_cost_usd": ' + raw + b"}")

    assert reply["error"]["code"] == "invalid_request", reply


async def test_nul_in_a_prompt_is_answered_and_recorded(stack, nc, conn):
    reply = await ask(nc, {"prompt": "what is\u0000 this?", "request_id": "nul-in-prompt"})

    assert "error" not in reply, reply
    rows = await rows_when_ready(
        conn, "SELECT status FROM requests WHERE request_id = %s", ("nul-in-prompt",))
    assert rows == [("ok",)]


async def test_a_burst_past_the_bound_is_refused_at_once_and_the_rest_is_served(
        stack, nc, conn):
    bound = load_config().pipeline.max_online_in_flight
    assert bound == 200
    sent: dict[int, float] = {}
    tenant = f"burst-{uuid.uuid4().hex[:8]}"

    async def one(i: int) -> tuple[dict, float]:
        body = json.dumps({"prompt": f"Burst prompt number {i}: what is {i} squared?",
                           "tenant": tenant}).encode()
        sent[i] = time.perf_counter()
        msg = await nc.request("router.v1.chat", body, timeout=30)
        return json.loads(msg.data), time.perf_counter() - sent[i]

    results = await asyncio.gather(*(one(i) for i in range(2_000)))

    overloaded = sorted(t for r, t in results if r.get("error", {}).get("code") == "overloaded")
    served = [t for r, t in results if "error" not in r]
    others = [r for r, _ in results if "error" in r and r["error"]["code"] != "overloaded"]
    assert not others, others[:3]
    assert len(served) >= bound
    assert len(overloaded) >= 1_000
    assert all(r["error"]["retry_after_s"] > 0 for r, _ in results if "error" in r)
    # Refused long before the deadline (15 s in the test config); before admission control the
    # same burst was answered at p50 27 s. Measured here: p50 0.05-0.08 s, last 0.08-0.09 s on an
    # idle machine (the refusals queue behind one another on two shared cores); the bounds leave a
    # margin for a loaded one.
    assert overloaded[len(overloaded) // 2] < 1.0, f"median {overloaded[len(overloaded) // 2]}"
    assert overloaded[-1] < 3.0
    # Every refusal is a ledger row too, recorded after the burst is answered.
    rows = await rows_when_ready(
        conn, "SELECT 1 FROM requests WHERE tenant = %s AND error_code = 'overloaded'",
        (tenant,), at_least=len(overloaded), wait_s=30)
    assert len(rows) == len(overloaded)
    await everyone_still_answers(nc)
