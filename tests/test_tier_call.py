"""One dispatcher hop: a tier's models tried in order, retry rounds after Retry-After, the
timeout and budget paths; through the real SDKs, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services.dispatcher.tier_call import CALL_BOUND_SLACK_S, TierCaller
from shared.config import Limits, ModelRef, PricingConfig, Tier
from shared.messages import ChatRequest, Classification, Envelope, Origin
from shared.pricing import Pricer
from shared.providers import Providers
from tests import harness

TIER = Tier(name="simple", models=(ModelRef(provider="anthropic", model="claude-haiku-4-5"),
                                    ModelRef(provider="openai", model="gpt-4o-mini")))
LIMITS = Limits(max_request_bytes=262_144, max_messages=1_000, max_answer_bytes=131_072,
                request_timeout_s=30, batch_timeout_s=30,
                provider_timeout_s=1.0,
                default_max_tokens=256, provider_retries=1, retry_max_wait_s=5.0)
PRICER = Pricer(PricingConfig())


@pytest.fixture
async def caller(emulator, monkeypatch):
    for name, value in harness.emulator_env(emulator.base).items():
        monkeypatch.setenv(name, value)
    providers = Providers()
    providers.prepare({"anthropic", "openai"})  # the SDKs' import is not a call's latency
    yield TierCaller(providers, PRICER, LIMITS, want_logprobs=True)
    await providers.aclose()


def envelope(prompt: str = "What is the capital of France?", **request) -> Envelope:
    now = time.time()
    return Envelope(
        request_id="r1", trace_id="t1", request=ChatRequest(prompt=prompt, **request),
        origin=Origin(kind="online"), received_at=now, deadline=now + 30,
        classification=Classification(difficulty="simple", confidence=1, backend="test",
                                      latency_ms=0),
        start_tier="simple", tier_index=0, max_tier_index=2,
    )


async def test_the_first_model_answers_when_it_can(caller):
    result = await caller.call(envelope(), TIER)

    assert [a.model for a in result.attempts] == ["claude-haiku-4-5"]
    assert result.answer is not None and result.answer.attempt == 1
    attempt = result.attempts[0]
    assert attempt.outcome == "ok" and attempt.emulated
    assert attempt.cost_usd == pytest.approx(
        PRICER.cost(TIER.models[0], attempt.input_tokens, attempt.output_tokens))


async def test_a_429_on_the_first_model_answers_from_the_next_at_once(caller, emulator):
    emulator.faults({"model": "claude-haiku-4-5", "action": "rate_limit", "retry_after_s": 30})

    started = time.monotonic()
    result = await caller.call(envelope(), TIER)

    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("claude-haiku-4-5", "error"), ("gpt-4o-mini", "ok")]
    assert "rate_limited" in result.attempts[0].reason
    assert result.answer is not None and result.answer.attempt == 2
    assert time.monotonic() - started < 2.0  # no waiting while another model can answer


async def test_when_every_model_fails_the_tier_goes_round_again_after_retry_after(caller,
                                                                                  emulator):
    emulator.faults({"action": "rate_limit", "retry_after_s": 1, "times": 2})

    started = time.monotonic()
    result = await caller.call(envelope(), TIER)

    assert [a.outcome for a in result.attempts] == ["error", "error", "ok"]
    assert result.attempts[2].model == "claude-haiku-4-5"
    assert 1.0 <= time.monotonic() - started < 3.0


async def test_a_hanging_model_times_out_and_the_next_answers(caller, emulator):
    emulator.faults({"model": "claude-haiku-4-5", "action": "hang"})

    result = await caller.call(envelope(), TIER)

    assert result.attempts[0].outcome == "error" and "timeout" in result.attempts[0].reason
    assert 900 < result.attempts[0].latency_ms < 2000
    assert result.answer is not None and result.attempts[1].model == "gpt-4o-mini"


async def test_an_answer_trickled_past_the_call_timeout_is_cut_at_the_calls_bound(
        emulator, monkeypatch):
    """A byte every 0.2 s never trips the SDK's timeout, which bounds each read: the call's
    own bound does, and the next model answers."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 100000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    for name, value in harness.emulator_env(emulator.base).items():
        monkeypatch.setenv(name, value)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    providers = Providers()
    providers.prepare({"anthropic", "openai"})
    try:
        async with server:
            result = await TierCaller(providers, PRICER, LIMITS, want_logprobs=True).call(
                envelope(), TIER)
    finally:
        await providers.aclose()

    first = result.attempts[0]
    assert first.outcome == "error" and "timeout" in first.reason
    bound_ms = 1000 * (LIMITS.provider_timeout_s + CALL_BOUND_SLACK_S)
    assert bound_ms - 100 < first.latency_ms < bound_ms + 500
    assert result.answer is not None and result.attempts[1].model == "gpt-4o-mini"


async def test_a_tier_with_no_working_model_returns_every_failed_attempt(caller, emulator):
    emulator.faults({"action": "server_error"})

    result = await caller.call(envelope(), TIER)

    assert result.answer is None
    assert len(result.attempts) == len(TIER.models) * (LIMITS.provider_retries + 1)
    assert all(a.outcome == "error" and "server_error" in a.reason for a in result.attempts)


async def test_malformed_and_usage_less_answers_are_errors_not_crashes(caller, emulator):
    emulator.faults({"model": "claude-haiku-4-5", "action": "malformed"},
                    {"model": "gpt-4o-mini", "action": "no_usage"})

    result = await caller.call(envelope(), TIER)

    assert result.answer is None
    assert all(a.outcome == "error" and "bad_response" in a.reason for a in result.attempts)


async def test_a_call_that_could_break_the_budget_is_not_made(caller, emulator):
    before = emulator.control("GET", "stats")

    result = await caller.call(envelope(max_cost_usd=0.000001), TIER)

    assert result.answer is None
    assert [a.outcome for a in result.attempts] == ["skipped", "skipped"]
    assert emulator.control("GET", "stats") == before  # no call reached a provider
