"""The HTTP gateway as a process of its own in front of the running stack: the official OpenAI
SDK pointed at it, and the seed's curl examples sent with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from services.escalator.scoring import Scorer
from services.gateway import app as gateway_app
from services.gateway import errors as gateway_errors
from services.gateway import openai_api
from shared.config import load_config
from shared.messages import Answer
from smart_router import embedded
from tests import harness
from tests.harness import rows_when_ready

CONFIG = load_config(harness.TEST_CONFIG)
TIERS = [t.name for t in CONFIG.tiers]
TIER_MODELS = {t.name: {m.model for m in t.models} for t in CONFIG.tiers}
SEED_FIELDS = {"response": str, "model_used": str, "difficulty_tag": str, "cost_usd": float,
               "latency_ms": float, "escalated": bool}


@contextlib.contextmanager
def gateway_process(stack, log_dir: Path, **env: str) -> Iterator[str]:
    """A gateway process of its own, on a port of its own, in front of the stack: its URL."""
    port = embedded.free_port()
    processes = harness.Processes({**stack.processes.env, "GATEWAY_PORT": str(port), **env},
                                  log_dir)
    processes.start("gateway", [sys.executable, "-m", "services.gateway"])
    base = f"http://127.0.0.1:{port}"
    try:
        harness.wait_for_http(f"{base}/v1/health")
        yield base
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_process(stack, tmp_path_factory.mktemp("gateway")) as base:
        yield base


@pytest.fixture
async def sdk(gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    # No retries: each test sees the first answer, and an error is raised at once.
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="any-key",
                                  max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
async def http(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        yield client


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


async def test_a_plain_completion_answers_in_openai_schema_with_the_routers_facts(sdk, conn):
    raw = await sdk.chat.completions.with_raw_response.create(
        model="auto", messages=ask("What is the capital of France?"))
    completion = raw.parse()

    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    tier = raw.headers["x-router-tier"]
    assert tier in TIERS and completion.model in TIER_MODELS[tier]
    assert raw.headers["x-router-difficulty"] in ("simple", "medium", "complex")
    assert raw.headers["x-router-escalated"] == "false"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)
    request_id = raw.headers["x-request-id"]
    assert completion.id == f"chatcmpl-{request_id}"

    rows = await rows_when_ready(
        conn, "SELECT model_used, cost_usd, input_tokens, output_tokens FROM requests"
        " WHERE request_id = %s", (request_id,))
    model_used, cost, input_tokens, output_tokens = rows[0]
    assert model_used == completion.model
    assert float(cost) == pytest.approx(float(raw.headers["x-router-cost-usd"]), abs=1e-9)
    assert (input_tokens, output_tokens) == (completion.usage.prompt_tokens,
                                             completion.usage.completion_tokens)


async def test_content_parts_developer_messages_and_limits_reach_the_router(sdk):
    completion = await sdk.chat.completions.create(
        model="auto", max_completion_tokens=3, temperature=0.2, user="end-user-7",
        metadata={"app": "tests"}, top_p=0.9, seed=1,  # ignored: sampling only
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Explain how DNS "},
                                               {"type": "text", "text": "resolution works"}]}])

    # 3 tokens hold no answer: the served answer was cut, and says so.
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 3 * len(TIERS)


@pytest.mark.parametrize(("model", "tier", "models"), [
    ("complex", "complex", TIER_MODELS["complex"]),
    ("gpt-4o", "complex", {"gpt-4o"}),
    ("gpt-4o-mini", "simple", {"gpt-4o-mini"}),  # the second of its tier: only it answers
    ("anthropic:claude-sonnet-4-5", "complex", {"claude-sonnet-4-5"}),
    ("smart-router", None, None),
])
async def test_the_model_names_a_tier_a_model_or_the_router(sdk, model, tier, models):
    raw = await sdk.chat.completions.with_raw_response.create(model=model,
                                                              messages=ask("hello there"))

    if tier is not None:
        assert raw.headers["x-router-tier"] == tier
        assert raw.parse().model in models
    else:
        assert raw.headers["x-router-tier"] in TIERS


async def test_models_list_names_the_router_its_tiers_and_models(sdk):
    ids = [m.id async for m in sdk.models.list()]

    assert ids[:2] == ["auto", "smart-router"]
    assert set(TIERS) <= set(ids)
    assert set().union(*TIER_MODELS.values()) <= set(ids)
    assert len(ids) == len(set(ids))
    assert (await sdk.models.retrieve("gpt-4o")).owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("no-such-model")


@pytest.mark.parametrize(("options", "code", "param"), [
    ({"model": "no-such-model"}, "invalid_request", "model"),
    ({"messages": [{"role": "system", "content": "only a system message"}]},
     "invalid_request", None),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
     "invalid_request", None),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "invalid_request", None),
    ({"n": 2}, "invalid_request", None),
    ({"temperature": 7}, "invalid_request", None),
    ({"max_completion_tokens": 0, "max_tokens": 50}, "invalid_request", None),  # before: 50
    ({"extra_body": {"max_cost_usd": 1e-9}}, "budget_exceeded", None),
])
async def test_bad_requests_are_the_sdks_bad_request_error(sdk, options, code, param):
    request = {"model": "auto", "messages": ask("Name a prime number."), **options}

    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(**request)

    assert caught.value.status_code == 400
    assert caught.value.code == code and caught.value.param == param
    assert caught.value.type == "invalid_request_error" and caught.value.message


async def test_a_request_over_the_byte_limit_is_413(sdk):
    too_long = "x" * (CONFIG.limits.max_request_bytes + 1)

    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.chat.completions.create(model="auto", messages=ask(too_long))

    assert caught.value.status_code == 413 and caught.value.code == "prompt_too_large"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_within_the_byte_limit_is_answered_whatever_its_characters(
        sdk, http, stream):
    """Both doors take the same requests: characters outside ASCII, which an escaping encoder
    would have grown up to sixfold past the limit (and past NATS's max_payload), are answered
    by /v1/chat/completions as by /v1/chat."""
    for text in ("\u4e2d" * (CONFIG.limits.max_request_bytes // 4), "\x7f" * 200_000):
        seed = await http.post("/v1/chat", json={"prompt": text})
        assert seed.status_code == 200, seed.text[:300]
        reply = await sdk.chat.completions.create(model="auto", messages=ask(text),
                                                  stream=stream)
        if stream:
            assert [chunk async for chunk in reply]
        else:
            assert reply.choices[0].message.content


async def test_a_request_head_over_the_bound_is_refused_before_it_is_all_read(gateway, http):
    """A head (request line and headers) is bounded before any key is checked: a header sent
    in 64 KiB pieces is refused (431, the connection closed) long before 64 MiB of it are in;
    before, the gateway read it all, growing by as much. It goes on serving."""
    host, port = gateway.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = b""
    try:
        writer.write(b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nx-big: ")
        for _ in range(1024):
            writer.write(b"a" * 65_536)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    except ConnectionError:  # closed on us: the 431 may be lost with the unread bytes
        answer = b"HTTP/1.1 431 (the connection was closed mid-send)"
    finally:
        writer.close()

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert (await http.get("/v1/health")).status_code == 200


async def test_pipelined_requests_each_within_the_head_bound_are_both_answered(gateway):
    """Two requests of 40 KiB heads in one write (80 KiB, over the bound together): each is
    within it, so each is answered."""
    host, port = gateway.removeprefix("http://").split(":")
    head = b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nx-pad: %s\r\n\r\n" % (b"a" * 40_960)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + head.replace(b"x-pad", b"connection: close\r\nx-pad"))
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()

    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]


async def test_fastapis_own_refusals_are_coded_errors_in_the_routes_shape(http):
    """No such path, a method the path does not take: the router's code in OpenAI's shape, or
    in the router's on its own routes; never FastAPI's {"detail": ...}."""
    missing = await http.post("/v1/nothing", json={})
    wrong_method = await http.get("/v1/chat")
    openai_wrong_method = await http.get("/v1/chat/completions")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "invalid_request"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert set(wrong_method.json()) == {"request_id", "error"}
    assert wrong_method.json()["error"]["code"] == "invalid_request"
    assert openai_wrong_method.status_code == 405
    assert openai_wrong_method.json()["error"]["type"] == "invalid_request_error"


async def test_a_post_whose_body_is_not_said_to_be_json_is_refused_415(http):
    """A page on another site may post text, a form or untyped bytes to this address without
    the browser asking the gateway first (CORS): such a body is refused before it is read.
    Before, /v1/chat answered a text/plain post, and billed it."""
    body = b'{"prompt": "Name a colour."}'
    for path, content_type in (("/v1/chat", "text/plain"), ("/v1/chat", None),
                               ("/v1/chat/completions", "application/x-www-form-urlencoded"),
                               ("/v1/feedback", "text/plain;charset=UTF-8")):
        headers = {"content-type": content_type} if content_type else {}
        response = await http.post(path, content=body, headers=headers)

        assert response.status_code == 415, (path, content_type, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    typed = await http.post("/v1/chat", content=body,
                            headers={"content-type": "application/json; charset=utf-8"})
    assert typed.status_code == 200, typed.text


async def test_a_host_name_not_served_is_refused_on_every_route(strict_gateway):
    """A page that rebinds its own name to the gateway's address sends that name as Host: it is
    refused (400) on every route, before any key or body. Loopback names and
    GATEWAY_ALLOWED_HOSTS are served."""
    port = strict_gateway.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=strict_gateway, timeout=30) as client:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "not a host"):
            for method, path in (("GET", "/v1/health"), ("POST", "/v1/chat"),
                                 ("GET", "/v1/models"), ("GET", "/docs")):
                refused = await client.request(method, path, headers={"host": host})
                assert refused.status_code == 400, (host, path)
                assert "GATEWAY_ALLOWED_HOSTS" in refused.text
        for host in (f"localhost:{port}", "router.example", f"ROUTER.example:{port}"):
            served = await client.get("/v1/health", headers={"host": host})
            assert served.status_code == 200, (host, served.text)


@pytest.fixture(scope="module")
def strict_gateway(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with short head and body timeouts, to see them at work, and a host name."""
    with gateway_process(stack, tmp_path_factory.mktemp("strict-gateway"),
                         GATEWAY_HEAD_TIMEOUT_S="1", GATEWAY_BODY_TIMEOUT_S="1",
                         GATEWAY_ALLOWED_HOSTS="router.example") as base:
        yield base


async def _answer_to(base: str, sent: list[bytes], pause_s: float = 0.0) -> bytes:
    """What the gateway answers on a connection that sends `sent`, piece by piece, `pause_s`
    apart, and nothing more: all it writes until it closes the connection."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=10))
    try:
        for piece in sent:
            if answer.done():  # answered and closed: a write now would be reset
                break
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause_s)
        return await answer
    finally:
        writer.close()


async def test_a_connection_that_sends_no_head_in_time_is_answered_408_and_closed(
        strict_gateway):
    """A connection that sends nothing, and one whose head comes a byte every 0.2 s, are each
    answered 408 and closed when the head timeout (1 s) passes; before, both were held for
    ever (uvicorn times out only the wait between two requests)."""
    silent = await _answer_to(strict_gateway, [])
    trickled = await _answer_to(
        strict_gateway, [b"GET /v1/health HTTP/1.1\r\n"] + [b"x"] * 50, pause_s=0.2)

    for answer in (silent, trickled):
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"GATEWAY_HEAD_TIMEOUT_S" in answer


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/completions"])
async def test_a_body_that_does_not_arrive_in_time_is_a_coded_408(strict_gateway, path):
    """A body stalled after its first bytes is answered 408 `timeout` (in the route's error
    shape) when the body timeout (1 s) passes, and the connection is closed; before, the
    request waited for the rest for ever."""
    head = (b"POST %s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n" % path.encode())
    answer = await _answer_to(strict_gateway, [head, b'{"prompt": "Na'])

    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"connection: close" in status.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "timeout" and "GATEWAY_BODY_TIMEOUT_S" in error["message"]
    assert ("type" in error) == (path == "/v1/chat/completions")


@pytest.mark.parametrize(("path", "headers"), [
    ("/v1/chat", b"content-type: text/plain\r\n"),  # 415, before the body is read
    ("/v1/nothing", b"content-type: application/json\r\n"),  # 404
    ("/v1/chat", b"content-type: application/json\r\ncontent-length: 900000000\r\n"),  # 413
])
async def test_a_request_refused_before_its_body_is_read_does_not_hold_its_connection(
        strict_gateway, path, headers):
    """Its answer sent, the connection is closed within a few seconds while the client still
    sends its body a byte at a time; before, every byte kept it alive, so a few such clients
    held every connection the gateway allows."""
    host, port = strict_gateway.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    length = b"" if b"content-length" in headers else b"content-length: 100000\r\n"
    writer.write(b"POST %s HTTP/1.1\r\nhost: localhost\r\n%s%s\r\n{"
                 % (path.encode(), headers, length))
    answer = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=20))
    sent = 0
    try:
        while not answer.done() and sent < 60:  # 12 s of trickling at most
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
            sent += 1
            await asyncio.sleep(0.2)
        received = await answer
    finally:
        writer.close()

    assert received.split(b" ")[1] in (b"404", b"413", b"415"), received[:200]
    assert sent < 30  # closed after the answer and LINGER_S (2 s), long before 12 s


async def test_a_request_pipelined_after_a_refused_one_is_answered(strict_gateway):
    """A refused request whose body comes in soon after (the client sent it anyway), then a
    second request on the same connection: both are answered (the refusal's linger ends once
    its body is in)."""
    refused = (b"POST /v1/chat HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\n"
               b"content-length: 20000\r\n\r\n")
    second = b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    answer = await _answer_to(strict_gateway, [refused + b"x" * 10_000, b"x" * 10_000 + second],
                              pause_s=0.1)

    assert answer.startswith(b"HTTP/1.1 415 "), answer[:200]
    assert b"HTTP/1.1 200 " in answer, answer[-300:]


async def test_past_the_connection_limit_a_request_is_429_overloaded_with_retry_after(
        stack, tmp_path):
    """With 3 connections open (GATEWAY_MAX_CONNECTIONS=3), each in the middle of a request, a
    fourth's request is answered 429 `overloaded` with Retry-After, in its route's shape; once
    they close, it is served."""
    with gateway_process(stack, tmp_path, GATEWAY_MAX_CONNECTIONS="3") as base:
        host, port = base.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        for _, writer in held:
            writer.write(b"GET /v1/models HTTP/1.1\r\n")  # a head begun, not ended
            await writer.drain()
        await asyncio.sleep(0.2)  # read by the gateway
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                chat = await client.post("/v1/chat", json={"prompt": "Name a colour."})
                models = await client.get("/v1/models")
        finally:
            for _, writer in held:
                writer.close()
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            served = await client.get("/v1/models")

    assert chat.status_code == 429 and chat.json()["error"]["code"] == "overloaded"
    assert chat.json()["error"]["retry_after_s"] == 1 and chat.headers["retry-after"] == "1"
    assert models.status_code == 429 and models.json()["error"]["type"] == "rate_limit_error"
    assert models.headers["x-should-retry"] == "true"
    assert served.status_code == 200


async def test_at_the_connection_limit_a_silent_connection_makes_room(stack, tmp_path):
    """Sockets opened and left silent fill the limit: a new client's request is served, and
    the oldest silent socket is closed. Before, every request was refused 429 until the head
    timeout closed them (an attacker reopening them kept the gateway shut)."""
    with gateway_process(stack, tmp_path, GATEWAY_MAX_CONNECTIONS="3") as base:
        host, port = base.removeprefix("http://").split(":")
        held = []
        for _ in range(3):
            held.append(await asyncio.open_connection(host, int(port)))
            await asyncio.sleep(0.05)  # opened in this order
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                served = [(await client.get("/v1/models")).status_code for _ in range(3)]
            closed = [await asyncio.wait_for(reader.read(), 5) == b"" for reader, _ in held[:1]]
        finally:
            for _, writer in held:
                writer.close()

    assert served == [200, 200, 200]
    assert closed == [True]  # the oldest, closed without a word: it had asked nothing


async def test_a_reused_request_id_is_the_sdks_conflict_error(sdk):
    request_id = f"gw-{uuid.uuid4().hex}"
    await sdk.chat.completions.create(model="auto", messages=ask("Name a prime number."),
                                      extra_body={"request_id": request_id})

    with pytest.raises(openai.ConflictError) as caught:
        await sdk.chat.completions.create(model="auto", messages=ask("Name a colour."),
                                          extra_body={"request_id": request_id})

    assert caught.value.code == "duplicate_request"
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_no_provider_is_a_502_the_sdk_does_not_retry(sdk, emulator):
    emulator.faults({"action": "rate_limit", "retry_after_s": 1})
    calls_before = emulator.control("GET", "stats")["total"]

    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.with_options(max_retries=2).chat.completions.create(
            model="simple", max_tokens=20, messages=ask("Name a prime number."))

    assert caught.value.status_code == 502 and caught.value.code == "no_provider_available"
    # One request's calls (every model of every tier, each round), not three requests':
    # x-should-retry false stops the SDK's own retries.
    calls = emulator.control("GET", "stats")["total"] - calls_before
    one_request = (CONFIG.limits.provider_retries + 1) * sum(len(t.models) for t in CONFIG.tiers)
    assert 0 < calls <= one_request


def test_overloaded_is_429_with_retry_after():
    reply = {"request_id": "r1", "error": {"code": "overloaded", "message": "busy",
                                           "retry_after_s": 1.5}}

    response = gateway_errors.openai_error(reply)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2" and response.headers["retry-after-ms"] == "1500"
    assert response.headers["x-should-retry"] == "true"
    assert json.loads(response.body)["error"] == {"message": "busy", "type": "rate_limit_error",
                                                  "param": None, "code": "overloaded"}


class _Replies:
    """A router stream that was sent `messages`, after the first piece."""

    def __init__(self, *messages: dict) -> None:
        self._messages = iter(messages)

    async def next(self) -> dict:
        return next(self._messages)

    def close(self, *, left: bool) -> None:
        pass


async def _sent_text(*messages: dict) -> tuple[str, list[dict]]:
    """The text a streaming client is sent when the pieces then `messages` come: its content,
    and the frames after the pieces."""
    first = {"delta": "Paris is", "request_id": "r1", "model": "m"}
    frames = [json.loads(event.removeprefix(b"data: ")) async for event in gateway_app._events(
        _Replies(*messages), openai_api.Chunks("r1", "m"), first, include_usage=False)
        if event != b"data: [DONE]\n\n"]
    content = "".join(f["choices"][0]["delta"].get("content", "") for f in frames
                      if f.get("choices"))
    return content, frames[-1:]


async def test_a_reply_that_does_not_go_on_from_the_pieces_sent_ends_in_an_error():
    """A stream started over (its dispatcher died after the release): before, the whole answer
    was sent again after the pieces, and the client read its opening twice."""
    reply = {"request_id": "r1", "response": "Paris is the capital.", "tier": "simple",
             "difficulty_tag": "simple", "cost_usd": 0.0, "saved_usd": 0.0, "escalated": False,
             "emulated": True, "model_used": "m", "attempts": []}

    content, last = await _sent_text({"delta": " the capital."}, reply)
    assert content == "Paris is the capital." and last[0]["choices"][0]["finish_reason"]

    content, last = await _sent_text({"delta": "Paris is"}, reply)  # started over
    assert content == "Paris isParis is"
    assert last == [{"error": {"message": "the stream broke after it was released",
                               "type": "server_error", "param": None, "code": "upstream_error"}}]


async def test_stream_true_gives_openai_chunks_and_usage(sdk, conn, http):
    stream = await sdk.chat.completions.create(
        model="auto", messages=ask("What is the capital of France?"), stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1
    facts = next(c for c in chunks if c.choices and c.choices[0].finish_reason).x_router
    assert facts["cost_usd"] > 0 and facts["tier"] in TIERS
    rows = await rows_when_ready(conn, "SELECT ttft_ms, latency_ms FROM requests WHERE"
                                 " request_id = %s", (facts["request_id"],))
    ttft_ms, latency_ms = rows[0]
    assert ttft_ms is not None and 0 < ttft_ms <= latency_ms
    shown = (await http.get("/v1/stats")).json()["ttft_ms"]  # what `smart-router stats` prints
    assert shown["streamed"] >= 1 and shown["p50"] > 0


@pytest.mark.parametrize("tier", CONFIG.tiers, ids=lambda t: t.name)
async def test_each_tiers_sdk_streams_with_its_real_usage(sdk, conn, tier):
    """Each provider SDK's own stream (Anthropic, Groq, OpenAI on the seed's tiers)."""
    raw = await sdk.chat.completions.with_raw_response.create(**streamed_request(
        model=tier.name, messages=ask("What is the capital of France?")))
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])

    assert text.strip()
    rows = await rows_when_ready(
        conn, "SELECT provider, model, output_tokens, reason FROM attempts WHERE request_id = %s"
        " ORDER BY attempt", (raw.headers["x-request-id"],))
    provider, model, output_tokens, reason = rows[0]
    assert (provider, model) == (tier.models[0].provider, tier.models[0].model)
    assert output_tokens > 0 and "estimated" not in reason


def streamed_request(**options) -> dict:
    return {"model": "auto", "stream": True, "max_tokens": 300,
            "messages": ask("Explain how DNS resolution works, step by step."), **options}


async def test_pieces_arrive_while_the_provider_is_still_answering(sdk, emulator):
    emulator.faults(latency_per_output_token_ms=20)

    stream = await sdk.chat.completions.create(**streamed_request())
    pieces, in_flight_at_first = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if in_flight_at_first is None:  # the provider call is still running?
                in_flight_at_first = emulator.control("GET", "stats")["in_flight"]
            pieces.append(chunk.choices[0].delta.content)

    assert in_flight_at_first == 1
    assert len(pieces) > 3


async def test_a_weak_opening_escalates_before_the_caller_sees_any_of_it(sdk, emulator, conn):
    simple = CONFIG.tiers[0]
    emulator.faults({"action": "refuse", "model": simple.models[0].model})

    raw = await sdk.chat.completions.with_raw_response.create(**streamed_request(model="simple"))
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])

    assert raw.headers["x-router-tier"] != "simple"
    assert raw.headers["x-router-escalated"] == "true"
    assert not Scorer(CONFIG.escalation).score(Answer(
        text=text, attempt=1, tier_index=0, finish_reason="stop")).signals
    rows = await rows_when_ready(
        conn, "SELECT model, outcome, reason FROM attempts WHERE request_id = %s ORDER BY"
        " attempt", (raw.headers["x-request-id"],), at_least=2)
    model, outcome, reason = rows[0]
    assert model == simple.models[0].model and outcome == "weak" and "refusal" in reason


async def test_a_client_that_leaves_mid_stream_stops_the_provider_call(http, emulator, conn):
    # 400 tokens at 50 ms each would take 20 s: the call must end long before that.
    emulator.faults(latency_per_output_token_ms=50)

    async with http.stream("POST", "/v1/chat/completions",
                           json=streamed_request(max_tokens=400)) as response:
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break
        assert emulator.control("GET", "stats")["in_flight"] == 1
    # Leaving the block closed the connection mid-stream.

    rows = await rows_when_ready(conn, "SELECT error_code FROM requests WHERE request_id = %s",
                                 (request_id,))
    assert rows[0][0] == "cancelled"
    assert emulator.control("GET", "stats")["in_flight"] == 0


async def test_a_client_that_leaves_before_the_first_piece_stops_the_call_at_once(
        http, emulator, conn):
    """The provider's first token comes after 4 s; the client leaves once the call is under way.
    The call stops within 1.5 s of its leaving; before, it ran until the first piece."""
    emulator.faults(latency_ms=4000)
    request_id = f"gw-{uuid.uuid4().hex}"
    asking = asyncio.create_task(http.post("/v1/chat/completions",
                                           json=streamed_request(request_id=request_id)))
    for _ in range(100):
        if emulator.control("GET", "stats")["in_flight"] == 1:
            break
        await asyncio.sleep(0.05)
    assert emulator.control("GET", "stats")["in_flight"] == 1

    asking.cancel()  # httpx closes the connection
    with contextlib.suppress(asyncio.CancelledError):
        await asking
    for _ in range(30):
        if emulator.control("GET", "stats")["in_flight"] == 0:
            break
        await asyncio.sleep(0.05)

    assert emulator.control("GET", "stats")["in_flight"] == 0
    rows = await rows_when_ready(conn, "SELECT error_code FROM requests WHERE request_id = %s",
                                 (request_id,))
    assert rows[0][0] == "cancelled"


async def test_the_seeds_curl_examples_answer_the_seeds_fields(http, stack):
    # curl -X POST http://localhost:8000/v1/chat -H "Content-Type: application/json"
    #      -d '{"prompt": "What is the capital of France?"}'
    response = await http.post("/v1/chat", json={"prompt": "What is the capital of France?"})

    assert response.status_code == 200, response.text
    reply = response.json()
    for name, kind in SEED_FIELDS.items():
        assert isinstance(reply[name], kind), (name, reply[name])
    assert reply["response"].strip()
    assert reply["difficulty_tag"] in ("simple", "medium", "complex")
    assert reply["model_used"] in TIER_MODELS[reply["tier"]]
    assert response.headers["x-request-id"] == reply["request_id"]

    health = await http.get("/v1/health")  # curl http://localhost:8000/v1/health
    assert health.status_code == 200 and health.json()["ok"] is True
    gateways = health.json()["services"]["gateway"]["instances"]
    assert {i["url"] for i in gateways} >= {str(http.base_url).rstrip("/")}

    stats = await http.get("/v1/stats")  # curl http://localhost:8000/v1/stats
    assert stats.status_code == 200 and {"requests", "by_tier"} <= set(stats.json())
    refused = await http.get("/v1/stats", params={"days": 0})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request"
    assert "'days'" in refused.json()["error"]["message"]


async def test_feedback_over_http_reaches_the_ledger_or_is_refused_with_a_status(http, conn):
    reply = (await http.post("/v1/chat", json={"prompt": "Name a mountain."})).json()
    await rows_when_ready(conn, "SELECT 1 FROM requests WHERE request_id = %s",
                          (reply["request_id"],))

    ack = await http.post("/v1/feedback", json={"request_id": reply["request_id"], "score": 0.5})
    unknown = await http.post("/v1/feedback", json={"request_id": "no-such", "score": 0.5})
    invalid = await http.post("/v1/feedback", json={"request_id": reply["request_id"],
                                                     "score": 2})
    too_large = await http.post("/v1/feedback", content=b"x" * 5000,
                                headers={"content-type": "application/json"})

    assert ack.status_code == 200, ack.text
    assert ack.json() == {"request_id": reply["request_id"], "score": 0.5, "recorded": True}
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_request")
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (400, "invalid_request")
    assert (too_large.status_code, too_large.json()["error"]["code"]) == (400, "invalid_request")
    (row,) = await (await conn.execute("SELECT score FROM feedback WHERE request_id = %s",
                                       (reply["request_id"],))).fetchall()
    assert row == (0.5,)


async def test_the_seeds_chat_refuses_bad_requests_with_the_routers_error(http):
    for body, status, code in ((b'{"prompt": ""}', 400, "invalid_request"),
                               (b'{"prompt": "hi", "colour": "red"}', 400, "invalid_request"),
                               (b"not json", 400, "invalid_request"),
                               (b'{"prompt": "hi", "stream": true}', 400, "invalid_request"),
                               (b'{"prompt": "hi", "\\u0073tream": true}', 400,
                                "invalid_request"),
                               (json.dumps({"prompt": "x" * CONFIG.limits.max_request_bytes})
                                .encode(), 413, "prompt_too_large")):
        response = await http.post("/v1/chat", content=body,
                                   headers={"content-type": "application/json"})

        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code


async def test_the_docs_come_from_the_pydantic_models(http):
    docs = await http.get("/docs")
    schema = (await http.get("/openapi.json")).json()

    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    components = schema["components"]["schemas"]
    assert {"ChatRequest", "ChatReply", "ErrorReply", "CompletionRequest"} <= set(components)
    assert set(SEED_FIELDS) <= set(components["ChatReply"]["properties"])
    body = schema["paths"]["/v1/chat"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert "prompt" in components["ChatRequest"]["properties"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_bench_via_http_compares_the_gateway_with_nats_in_one_run(stack, gateway, stream):
    env = {**stack.processes.env, "NATS_URL": stack.nats_url, "DATABASE_URL": stack.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.cli", "bench", "--via", "http", "--requests", "20",
         "--concurrency", "5", "--gateway", gateway, "--json", *(["--stream"] if stream else [])],
        env=env, capture_output=True, text=True, timeout=120, cwd=harness.ROOT)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["nats"]["answered"] == report["http"]["answered"] == 20
    assert set(report["gateway_overhead"]["added_latency_ms"]) == {"p50", "p95", "p99"}
    assert report["gateway_overhead"]["throughput_kept"] > 0
    assert ("time_to_first_token_ms" in report["http"]) is stream
    assert report["ledger"]["rows"] == report["ledger"]["expected"]
