"""Providers that misbehave in ways the official SDKs pass on: every call still ends as an
attempt with its cost (an exception instead would fail the hop, whose redelivery pays again),
and what a streaming caller is sent stays well-formed and within the answer's bound.

The provider here is a small OpenAI-wire server whose behaviour a word in the prompt picks;
the SDK, the adapter, the tier caller and the relay (on real NATS) are the real ones."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.dispatcher.streaming import Cancels, Relay, Released
from services.dispatcher.tier_call import TierCaller
from services.dispatcher.worker import HopResult, bounded
from services.escalator.scoring import Scorer
from shared import payload
from shared.config import Limits, ModelRef, PricingConfig, Tier, load_config
from shared.messages import ChatRequest, Classification, Envelope, Origin
from shared.pricing import Pricer
from shared.providers import Providers
from tests import harness

CONFIG = load_config(harness.TEST_CONFIG)
TIER = Tier(name="simple", models=(ModelRef(provider="openai", model="gpt-4o-mini"),))
MAX_ANSWER_BYTES = 2048
LIMITS = Limits(max_request_bytes=262_144, max_messages=1_000,
                max_answer_bytes=MAX_ANSWER_BYTES, request_timeout_s=30, batch_timeout_s=30,
                provider_timeout_s=5.0, default_max_tokens=256, provider_retries=1,
                retry_max_wait_s=5.0)
OPENING = "The capital of France is Paris. "
CALLS = web.AppKey("calls", dict)
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
# Each stream's pieces, as JSON string literals (so a lone surrogate's escape goes as is).
STREAMS = {
    "split-emoji": [json.dumps(OPENING), '"\\ud83d"', '"\\ude00 and \\ud83d"', '" done."'],
    "long": [json.dumps(OPENING)] + [json.dumps("é" * 100 + "\n")] * 30,
    "broken": [json.dumps(OPENING), json.dumps("It is a lovely city, ")],
    "broken-early": [json.dumps("The capital "), json.dumps("of France ")],  # before release
}


def _completion(content: str, usage: dict) -> str:
    return ('{"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", '
            '"choices": [{"index": 0, "message": {"role": "assistant", "content": '
            f'{content}}}, "finish_reason": "stop"}}], "usage": {json.dumps(usage)}}}')


def _chunk(delta: str | None, usage: dict | None = None) -> bytes:
    choices = "[]" if delta is None else (
        '[{"index": 0, "delta": {"content": ' + delta + '}, "finish_reason": null}]')
    usage_part = f', "usage": {json.dumps(usage)}' if usage else ""
    return (b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 1, '
            b'"model": "gpt-4o-mini", "choices": %s%s}\n\n'
            % (choices.encode(), usage_part.encode()))


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    mode = body["messages"][-1]["content"].split()[0]
    request.app[CALLS][mode] = request.app[CALLS].get(mode, 0) + 1
    if mode == "nan-retry":
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"retry-after": "nan"})
    if not body.get("stream"):
        usage = {**USAGE, "prompt_tokens": -5} if mode == "negative-usage" else USAGE
        content = '"Paris \\ud83d"' if mode == "lone-surrogate" else '"Paris."'
        return web.Response(text=_completion(content, usage), content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for piece in STREAMS[mode]:
        await response.write(_chunk(piece))
        await asyncio.sleep(0.01)
    if mode.startswith("broken"):
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write(_chunk(None, USAGE))
    await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def provider(monkeypatch) -> AsyncIterator[dict[str, int]]:
    """The misbehaving provider, on a free port, and its calls by mode."""
    app = web.Application()
    app[CALLS] = {}
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    for name, value in harness.emulator_env(f"http://{host}:{port}").items():
        monkeypatch.setenv(name, value)
    yield app[CALLS]
    await runner.cleanup()


@pytest.fixture
async def caller(provider) -> AsyncIterator[TierCaller]:
    providers = Providers()
    yield TierCaller(providers, Pricer(PricingConfig()), LIMITS, want_logprobs=False)
    await providers.aclose()


def envelope(prompt: str, *, reply_to: str | None = None) -> Envelope:
    now = time.time()
    return Envelope(
        request_id="r1", trace_id="t1",
        request=ChatRequest(prompt=prompt, stream=reply_to is not None),
        origin=Origin(kind="online", reply_to=reply_to), received_at=now, deadline=now + 30,
        classification=Classification(difficulty="simple", confidence=1, backend="test",
                                      latency_ms=0),
        start_tier="simple", tier_index=0, max_tier_index=2,
    )


async def test_a_negative_token_count_is_a_bad_response_not_a_crash(caller):
    """Before: genai-prices' ValueError left the tier caller, and the hop was redelivered."""
    result = await caller.call(envelope("negative-usage please"), TIER)

    assert [a.outcome for a in result.attempts] == ["error"]
    assert "bad_response" in result.attempts[0].reason
    assert "input_tokens" in result.attempts[0].reason and result.answer is None


async def test_a_retry_after_of_nan_is_no_wait_at_all(caller, provider):
    """Before: asyncio.sleep(nan) never returned, and the request hung past its deadline."""
    result = await asyncio.wait_for(caller.call(envelope("nan-retry please"), TIER), 10)

    assert [a.outcome for a in result.attempts] == ["error", "error"]
    assert provider["nan-retry"] == LIMITS.provider_retries + 1


async def test_a_lone_surrogate_in_an_answer_is_replaced(caller):
    """Before: the answer's text failed every UTF-8 encode (bounded() raised)."""
    result = await caller.call(envelope("lone-surrogate please"), TIER)

    assert result.answer is not None and result.answer.text == "Paris \ufffd"
    hop = bounded(HopResult(attempts=result.attempts, answer=result.answer), MAX_ANSWER_BYTES)
    assert hop.model_dump_json()


async def _streamed(caller: TierCaller, nc, mode: str, tier: Tier = TIER,
                    left_before: bool = False) -> tuple[HopResult, list[str]]:
    """A streamed hop of `mode`'s stream: its result and the deltas the caller was sent.
    `left_before`: the caller's cancel was heard before the hop began."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = envelope(f"{mode} please", reply_to=inbox)
    cancels, marks = Cancels(ttl_s=LIMITS.request_timeout_s), []

    async def keep_release(mark: Released) -> None:
        marks.append(mark)

    if left_before:
        cancels.heard(inbox)
    with Relay(nc, request, tier, CONFIG.escalation, Scorer(CONFIG.escalation),
               MAX_ANSWER_BYTES, cancels, keep_release) as relay:
        call = await caller.call(request, tier, relay)
    await nc.flush()
    assert len(marks) == (relay.ttft_ms is not None)  # a release is kept
    deltas = []
    while True:
        try:
            deltas.append(json.loads((await sub.next_msg(timeout=0.5)).data)["delta"])
        except TimeoutError:
            break
    return HopResult(attempts=call.attempts, answer=call.answer), deltas


async def test_a_surrogate_pair_split_across_pieces_is_sent_whole(caller, nc):
    """Before: each half went as its own delta, which strict JSON parsers refuse, and the
    answer failed to encode."""
    hop, deltas = await _streamed(caller, nc, "split-emoji")

    assert hop.answer is not None
    assert hop.answer.text == OPENING + "\U0001f600 and \ufffd done."
    for delta in deltas:
        delta.encode()  # no lone surrogate
    assert "".join(deltas) == hop.answer.text


async def test_a_stream_is_sent_no_further_than_the_answers_bound(caller, nc):
    """The deltas stop where the whole answer is cut (limits.max_answer_bytes), so they are a
    prefix of the reply's `response`; before, the caller was sent all of it."""
    hop, deltas = await _streamed(caller, nc, "long")
    cut = bounded(hop, MAX_ANSWER_BYTES)

    assert cut.answer is not None and cut.answer.text != hop.answer.text  # it was cut
    assert "".join(deltas) == cut.answer.text
    assert payload.json_size("".join(deltas)) <= MAX_ANSWER_BYTES


async def test_a_stream_that_breaks_after_release_is_billed_for_what_it_sent(caller, nc):
    """Before: 0 tokens and $0, while the provider bills what it streamed."""
    hop, deltas = await _streamed(caller, nc, "broken")

    assert deltas and hop.answer is None
    (attempt,) = hop.attempts
    assert attempt.outcome == "error" and "usage estimated" in attempt.reason
    assert attempt.output_tokens == 2 and attempt.cost_usd > 0


async def test_a_model_never_called_is_billed_nothing_after_a_broken_one(caller, nc,
                                                                        monkeypatch):
    """The first model's stream breaks before its opening is released; the next cannot be
    called at all (no key). Before, the second was billed the first one's pieces."""
    monkeypatch.delenv("GROQ_API_KEY")
    tier = Tier(name="simple", models=(TIER.models[0],
                                       ModelRef(provider="groq", model="llama-3.1-8b-instant")))
    hop, _ = await _streamed(caller, nc, "broken-early", tier)

    broken = [a for a in hop.attempts if a.provider == "openai"]
    uncalled = [a for a in hop.attempts if a.provider == "groq"]
    assert broken and all(a.output_tokens == 2 and a.cost_usd > 0 for a in broken)
    assert uncalled and all("GROQ_API_KEY" in a.reason for a in uncalled)
    assert {(a.input_tokens, a.output_tokens, a.cost_usd) for a in uncalled} == {(0, 0, 0)}


async def test_a_caller_who_left_before_its_hop_began_is_not_called_nor_billed(caller, nc,
                                                                             provider):
    """Before: the cancel was heard only once the hop had begun, so one sent while the request
    waited was lost, and the provider called and paid for nobody."""
    hop, deltas = await _streamed(caller, nc, "long", left_before=True)

    assert provider == {} and deltas == []
    assert hop.attempts == [] and hop.answer is None
