"""Whatever arrives at the front doors gets an answer: random JSON, random bytes, huge and deeply
nested payloads, wrong types and Unicode edge cases, on router.v1.chat and router.v1.jobs. No
consumer dies, nothing stays in a stream, and a poison message is a dead letter in the ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import nats
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import subjects
from shared.config import load_config
from smart_router import client
from tests import harness

KNOWN_CODES = {"invalid_request", "prompt_too_large", "no_provider_available",
               "budget_exceeded", "timeout", "internal_error", "overloaded"}
FIELDS = ("prompt", "messages", "request_id", "job_id", "tenant", "tier", "max_tier",
          "max_cost_usd", "max_tokens", "temperature", "metadata")
TEXT_FIELDS = ("prompt", "request_id", "job_id", "tenant", "tier", "max_tier")
LIMITS = load_config().limits

awkward_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.sampled_from(
    ["", " ", "\u0000", "\ud7ff", "\ufeff", "e\u0301", "🙂" * 50, "\u202e" + "abc", "\n" * 20])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | awkward_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(awkward_text, inner, max_size=5),
    max_leaves=20,
)
# Requests that look almost right: known fields, any values, sometimes an unknown field.
near_requests = st.dictionaries(st.sampled_from(FIELDS) | awkward_text, json_values,
                                min_size=1, max_size=6)
# NUL and other control characters in every string field, and in message contents and metadata.
control_text = st.text(alphabet=st.characters(max_codepoint=0x1F) | st.just("\x7f"),
                       min_size=1, max_size=5)
mixed_control = st.tuples(awkward_text, control_text, awkward_text).map("".join)
control_requests = st.one_of(
    st.tuples(st.sampled_from(TEXT_FIELDS), mixed_control).map(
        lambda kv: {"prompt": "hello", kv[0]: kv[1]}),
    mixed_control.map(lambda t: {"messages": [{"role": "user", "content": t}]}),
    mixed_control.map(lambda t: {"prompt": "hi", "metadata": {t: 1, "ok": t}}),
)
# Lone surrogates, which JSON can spell but UTF-8 cannot hold.
lone_surrogates = st.tuples(
    st.sampled_from(TEXT_FIELDS),
    st.sampled_from(["\\ud800", "\\udfff", "x\\ud83d", "\\udc00y"]),
).map(lambda fs: (b'{"prompt": "hi", "' + fs[0].encode() + b'": "' + fs[1].encode() + b'"}'))
# Multi-byte text a few bytes either side of the byte limit, and many messages.
near_limit = st.tuples(st.sampled_from(["é", "界", "🙂"]), st.integers(-8, 8)).map(
    lambda cd: json.dumps({"prompt": cd[0] * ((LIMITS.max_request_bytes - 14)
                                              // len(cd[0].encode()) + cd[1])},
                          ensure_ascii=False).encode())
many_messages = st.integers(LIMITS.max_messages - 2, LIMITS.max_messages + 2).map(
    lambda n: json.dumps({"messages": [{"role": "user", "content": "x"}] * n}).encode())

payloads = st.one_of(
    near_requests.map(lambda d: json.dumps(d).encode()),
    control_requests.map(lambda d: json.dumps(d).encode()),
    lone_surrogates,
    near_limit,
    many_messages,
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=512),
    st.integers(1, 200_000).map(lambda n: json.dumps({"prompt": "x" * n}).encode()),
    st.integers(100, 50_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(410_000, 600_000).map(lambda n: json.dumps({"prompt": "y" * n}).encode()),
)


@pytest.fixture(scope="module")
def wire(stack) -> Iterator[tuple[asyncio.AbstractEventLoop, nats.NATS]]:
    """A plain nats-py client on its own loop: hypothesis drives synchronous examples."""
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(nats.connect(stack.nats_url))
    yield loop, nc
    loop.run_until_complete(nc.close())
    loop.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=payloads)
def test_anything_on_chat_gets_an_answer_or_a_clear_error(wire, payload):
    loop, nc = wire

    msg = loop.run_until_complete(nc.request(subjects.CHAT, payload, timeout=20))
    reply = json.loads(msg.data)

    if "error" in reply:
        assert reply["error"]["code"] in KNOWN_CODES and reply["error"]["message"]
    else:
        assert isinstance(reply["response"], str) and reply["model_used"]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=payloads)
def test_anything_on_jobs_is_answered_and_recorded(wire, stack, payload):
    loop, nc = wire

    async def publish_and_find_its_row() -> tuple:
        ack = await nc.jetstream().publish(subjects.JOBS, payload)
        async with await psycopg.AsyncConnection.connect(stack.database_url,
                                                         autocommit=True) as conn:
            rows = await harness.rows_when_ready(  # a job is traced by its place in the stream
                conn, "SELECT status, error_code FROM requests WHERE trace_id LIKE %s",
                (f"job{ack.seq}-%",), wait_s=20)
        return rows[0]

    status, code = loop.run_until_complete(publish_and_find_its_row())

    assert status == "ok" or code in KNOWN_CODES


async def test_after_the_storm_no_consumer_died_and_no_stream_holds_a_message(stack, nc):
    await asyncio.sleep(2)
    js = nc.jetstream()

    for stream in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM):
        info = await js.stream_info(stream)
        assert info.state.messages == 0, f"{stream} still holds {info.state.messages}"
    assert all(p.poll() is None for p in stack.processes.procs.values())
    assert (await client.service_health(nc))["ok"]


async def test_a_poison_pipeline_message_is_a_dead_letter_the_ledger_shows(stack, nc, conn):
    before = (await client.request(nc, subjects.STATS, {}, timeout=5))["dead_letters"]

    ack = await nc.jetstream().publish(subjects.DISPATCH, b'{"not": "an envelope"}')

    rows = await harness.rows_when_ready(
        conn, "SELECT reason FROM dead_letters WHERE subject = %s AND stream_seq = %s",
        (subjects.DISPATCH, ack.seq))
    assert "ValidationError" in rows[0][0]
    after = (await client.request(nc, subjects.STATS, {}, timeout=5))["dead_letters"]
    assert after == before + 1
