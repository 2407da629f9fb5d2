"""The provider adapters, each through its official SDK, against the emulator's wire formats."""

from __future__ import annotations

import time

import pytest

from shared.config import ModelRef, PricingConfig
from shared.pricing import Pricer
from shared.providers import ProviderError, Providers
from tests import harness

MODELS = [
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-4o"),
    ("groq", "llama-3.3-70b-versatile"),
    ("ollama", "llama3.2"),
]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def providers(providers, emulator, monkeypatch):
    for name, value in {**harness.emulator_env(emulator.base),
                        "OLLAMA_HOST": emulator.base}.items():
        monkeypatch.setenv(name, value)
    return providers


async def test_closed_providers_make_no_new_client(providers):
    """A client made after the stop would never be closed: the call fails as a provider's."""
    providers.get("openai")
    await providers.aclose()

    with pytest.raises(ProviderError, match="stopping"):
        providers.get("anthropic")


async def complete(providers: Providers, provider: str, model: str, **overrides):
    options = {"max_tokens": 200, "temperature": 0.2, "timeout": 10.0, "logprobs": True}
    return await providers.get(provider).complete(model, QUESTION, **(options | overrides))


async def stream(providers: Providers, provider: str, model: str, on_text, **overrides):
    options = {"max_tokens": 200, "temperature": 0.2, "timeout": 10.0}
    return await providers.get(provider).stream(model, QUESTION, on_text=on_text,
                                                **(options | overrides))


class Enough(Exception):
    """The caller's own reason to stop a stream."""


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_each_sdk_streams_pieces_then_the_whole_with_usage(providers, provider, model):
    pieces: list[str] = []

    async def collect(text: str) -> None:
        pieces.append(text)

    completion = await stream(providers, provider, model, collect)

    assert len(pieces) > 1 and "".join(pieces) == completion.text
    assert completion.finish_reason == "stop" and completion.emulated is True
    assert completion.input_tokens > 0 and completion.output_tokens > 0


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_stream_stopped_by_its_caller_raises_the_callers_error(providers, provider,
                                                                        model):
    async def stop(_text: str) -> None:
        raise Enough

    with pytest.raises(Enough) as caught:
        await stream(providers, provider, model, stop)

    assert caught.value.emulated is True  # marked by the adapter: the emulator served it


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_each_sdk_returns_text_usage_and_the_emulated_mark(providers, provider, model):
    completion = await complete(providers, provider, model)

    assert "France" in completion.text or "capital" in completion.text
    assert completion.finish_reason == "stop"
    assert completion.input_tokens > 0 and completion.output_tokens > 0
    assert completion.emulated is True
    if provider == "anthropic":  # Anthropic returns no logprobs
        assert completion.logprob_mean is None
    else:
        assert completion.logprob_mean is not None and completion.logprob_mean < 0


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_cut_answer_is_reported_as_length(providers, provider, model):
    completion = await complete(providers, provider, model, max_tokens=4)

    assert completion.finish_reason == "length"
    assert completion.output_tokens == 4


@pytest.mark.parametrize(("provider", "model"), MODELS)
@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("rate_limit", "rate_limited"),
        ("server_error", "server_error"),
        ("overloaded", "server_error"),
        ("malformed", "bad_response"),
        ("no_usage", "bad_response"),
    ],
)
async def test_provider_faults_become_classified_errors(providers, emulator, provider, model,
                                                        action, kind):
    emulator.faults({"action": action, "provider": provider, "retry_after_s": 3})

    with pytest.raises(ProviderError) as caught:
        await complete(providers, provider, model)

    assert caught.value.kind == kind
    if action == "rate_limit" and provider != "ollama":  # Ollama sends no Retry-After
        assert caught.value.retry_after == 3


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_malformed_stream_is_a_bad_response(providers, emulator, provider, model):
    emulator.faults({"action": "malformed", "provider": provider})

    with pytest.raises(ProviderError) as caught:
        await stream(providers, provider, model, _ignore)

    assert caught.value.kind == "bad_response"


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_stream_that_stalls_mid_answer_times_out(providers, emulator, provider, model):
    emulator.faults(latency_per_output_token_ms=1500)  # three times the wait allowed below

    with pytest.raises(ProviderError) as caught:
        await stream(providers, provider, model, _ignore, timeout=0.5)

    assert caught.value.kind == "timeout"


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_bug_of_ours_is_not_taken_for_a_provider_error(providers, provider, model):
    """A request the SDK cannot even encode is our mistake: it surfaces as itself, not as the
    provider's bad_response (which the dispatcher would record and route around)."""
    unencodable = [{"role": "user", "content": object()}]

    with pytest.raises((TypeError, ValueError)):  # not a ProviderError
        await providers.get(provider).complete(model, unencodable, max_tokens=50,
                                               temperature=None, timeout=10.0, logprobs=False)


async def _ignore(_text: str) -> None:
    pass


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_a_hanging_provider_times_out_within_the_call_budget(providers, emulator,
                                                                   provider, model):
    emulator.faults({"action": "hang", "provider": provider})

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await complete(providers, provider, model, timeout=0.5)

    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_an_unknown_model_is_a_refused_call(providers, provider, model):
    with pytest.raises(ProviderError) as caught:
        await complete(providers, provider, "no-such-model")

    assert caught.value.kind == "rejected"
    assert not caught.value.retryable


@pytest.mark.parametrize(("provider", "model"), MODELS)
async def test_an_unreachable_provider_is_a_connection_error(monkeypatch, provider, model,
                                                             providers):
    closed = "http://127.0.0.1:9"
    for name, value in {**harness.emulator_env(closed), "OLLAMA_HOST": closed}.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ProviderError) as caught:
        await complete(providers, provider, model)

    assert caught.value.kind == "connection" and caught.value.retryable


def test_a_missing_key_fails_that_provider_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")

    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set"):
        Providers().get("openai")
    assert Providers().get("ollama") is not None  # local models need no key


def test_costs_come_from_the_price_table_unless_overridden():
    pricer = Pricer(PricingConfig())
    overridden = Pricer(PricingConfig.model_validate(
        {"overrides": {"openai:gpt-4o": {"input": 1.0, "output": 2.0}}}))
    gpt4o = ModelRef(provider="openai", model="gpt-4o")

    assert pricer.cost(gpt4o, 1_000_000, 1_000_000) == pytest.approx(2.50 + 10.00)
    assert pricer.cost(ModelRef(provider="anthropic", model="claude-haiku-4-5"), 1000, 1000) \
        == pytest.approx(0.001 + 0.005)
    assert overridden.cost(gpt4o, 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert pricer.cost(ModelRef(provider="ollama", model="llama3.2"), 10**6, 10**6) == 0.0


@pytest.mark.parametrize(("provider", "model"), MODELS[:3])
async def test_a_response_that_is_not_http_is_a_provider_error(monkeypatch, provider, model):
    """A peer that answers garbage (a broken proxy, a header past aiohttp's 8190 bytes) is the
    provider's failure, so the tier falls back, not an exception the dispatcher redelivers."""
    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT-HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    import asyncio
    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name, value in harness.emulator_env(base).items():
        monkeypatch.setenv(name, value)
    providers = Providers()
    try:
        with pytest.raises(ProviderError) as caught:
            await complete(providers, provider, model, timeout=2.0)
        assert caught.value.kind == "connection"
    finally:
        await providers.aclose()
        server.close()
