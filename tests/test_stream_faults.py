"""Streaming through the gateway when the pipeline misbehaves: a dispatcher killed mid-stream,
and a client that leaves while its request still waits for a dispatcher. The stack runs one
dispatcher call at a time, so a slow request keeps the next one waiting in JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.conftest import Stack, stack_of_its_own
from tests.harness import rows_when_ready
from tests.test_gateway import gateway_process


@pytest.fixture(scope="module")
def stack(database_url, emulator_process, tmp_path_factory) -> Iterator[Stack]:
    """The services, on a NATS of their own, with one dispatcher call in flight at most."""
    with stack_of_its_own(tmp_path_factory.mktemp("one-dispatch"), database_url,
                          emulator_process, pipeline="dispatcher_concurrency = 1\n") as stack:
        yield stack


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory) -> Iterator[str]:
    with gateway_process(stack, tmp_path_factory.mktemp("gateway")) as base:
        yield base


@pytest.fixture
async def http(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        yield client


def streamed(request_id: str, **options) -> dict:
    return {"model": "auto", "stream": True, "max_tokens": 120, "request_id": request_id,
            "messages": [{"role": "user",
                          "content": "Explain how DNS resolution works, step by step."}],
            **options}


def calls_of(emulator, model: str) -> int:
    counts = emulator.control("GET", "stats")["counts"]
    return sum(sum(by_model.get(model, {}).values()) for by_model in counts.values())


async def test_a_client_that_leaves_while_its_request_waits_is_never_called(
        http, emulator, conn):
    """A holds the only dispatcher slot (~5 s); B's client leaves while B waits behind it.
    Before: the dispatcher listened for B's cancel only once B's hop began, so it was lost, and
    B's model was called and billed for nobody."""
    emulator.faults(latency_per_output_token_ms=40)
    a_id, b_id = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    a = asyncio.create_task(http.post("/v1/chat/completions",
                                      json=streamed(a_id, model="simple")))
    for _ in range(100):
        if emulator.control("GET", "stats")["in_flight"] == 1:
            break
        await asyncio.sleep(0.05)
    b_calls = calls_of(emulator, "gpt-4o")  # B's model, on another tier than A's
    b = asyncio.create_task(http.post("/v1/chat/completions",
                                      json=streamed(b_id, model="gpt-4o")))
    await asyncio.sleep(1.0)
    assert emulator.control("GET", "stats")["in_flight"] == 1  # A alone: B waits

    b.cancel()  # httpx closes B's connection: the gateway publishes B's cancel
    with contextlib.suppress(asyncio.CancelledError):
        await b
    assert (await a).status_code == 200

    rows = await rows_when_ready(
        conn, "SELECT status, error_code, cost_usd FROM requests WHERE request_id = %s",
        (b_id,), wait_s=30)
    assert rows == [("error", "cancelled", 0.0)]
    attempts = await (await conn.execute("SELECT count(*) FROM attempts WHERE request_id = %s",
                                         (b_id,))).fetchone()
    assert attempts == (0,)
    assert calls_of(emulator, "gpt-4o") == b_calls


async def test_a_dispatcher_killed_mid_stream_does_not_send_the_answer_again(
        http, emulator, conn, stack):
    """Before: the hop, redelivered, streamed the answer again from its start, and the reply's
    whole answer followed: the client read the opening three times."""
    emulator.faults(latency_per_output_token_ms=30)
    request_id = f"c-{uuid.uuid4().hex}"
    contents: list[str] = []
    frames: list[dict] = []
    killed = False
    async with http.stream("POST", "/v1/chat/completions",
                           json=streamed(request_id, max_tokens=200)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            frame = json.loads(line.removeprefix("data: "))
            frames.append(frame)
            contents += [c["delta"]["content"] for c in frame.get("choices", [])
                         if c["delta"].get("content")]
            if contents and not killed:  # the first piece is out: the dispatcher crashes
                killed = True
                stack.processes.kill("dispatcher")
                stack.processes.start("dispatcher")

    text = "".join(contents)
    assert text.count(contents[0]) == 1, f"text repeated: {text!r}"
    assert frames[-1]["error"]["code"] == "upstream_error"
    rows = await rows_when_ready(
        conn, "SELECT status, error_code, cost_usd FROM requests WHERE request_id = %s",
        (request_id,), wait_s=30)
    attempts = await (await conn.execute(
        "SELECT reason, input_tokens, cost_usd FROM attempts WHERE request_id = %s",
        (request_id,))).fetchall()
    assert [row[:2] for row in rows] == [("error", "upstream_error")]
    # The call the dead dispatcher paid for is in the ledger once, at its floor (before: no
    # row, and the request cost nothing).
    (lost,) = attempts
    assert lost[0].startswith("stream stopped: its dispatcher died after releasing it")
    assert lost[1] > 0 and lost[2] > 0 and rows[0][2] == lost[2]
