"""Injected faults reach each SDK as the exception a real provider's failure would raise."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import groq
import httpx
import ollama
import openai
import pytest
from emulator_harness import Emulator

PROVIDERS = ("openai", "anthropic", "groq", "ollama")
MODELS = {
    "openai": "gpt-4o",
    "anthropic": "claude-haiku-4-5",
    "groq": "llama-3.1-8b-instant",
    "ollama": "llama3.2",
}
SIMPLE = "What is the capital of France?"

Clients = dict[str, Any]


@pytest.fixture
def clients(
    openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.AsyncAnthropic,
    groq_client: groq.AsyncGroq,
    ollama_client: ollama.AsyncClient,
) -> Clients:
    return {
        "openai": openai_client,
        "anthropic": anthropic_client,
        "groq": groq_client,
        "ollama": ollama_client,
    }


async def chat(provider: str, client: Any, prompt: str = SIMPLE, stream: bool = False) -> str:
    """One call through the provider's SDK; the answer's text, read to the end."""
    model = MODELS[provider]
    messages = [{"role": "user", "content": prompt}]
    if provider == "anthropic":
        response = await client.messages.create(
            model=model, max_tokens=1024, messages=messages, stream=stream
        )
        if not stream:
            return "".join(block.text for block in response.content)
        return "".join([e.delta.text async for e in response if e.type == "content_block_delta"])
    if provider == "ollama":
        response = await client.chat(model=model, messages=messages, stream=stream)
        if not stream:
            return response.message.content or ""
        return "".join([part.message.content or "" async for part in response])
    response = await client.chat.completions.create(model=model, messages=messages, stream=stream)
    if not stream:
        return response.choices[0].message.content or ""
    return "".join([c.choices[0].delta.content or "" async for c in response if c.choices])


STATUS_ERRORS: dict[str, dict[str, tuple[type[Exception], int]]] = {
    "rate_limit": {
        "openai": (openai.RateLimitError, 429),
        "anthropic": (anthropic.RateLimitError, 429),
        "groq": (groq.RateLimitError, 429),
        "ollama": (ollama.ResponseError, 429),
    },
    "server_error": {
        "openai": (openai.InternalServerError, 500),
        "anthropic": (anthropic.InternalServerError, 500),
        "groq": (groq.InternalServerError, 500),
        "ollama": (ollama.ResponseError, 500),
    },
    "overloaded": {
        "openai": (openai.InternalServerError, 503),
        "anthropic": (anthropic.OverloadedError, 529),
        "groq": (groq.InternalServerError, 503),
        "ollama": (ollama.ResponseError, 503),
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("action", list(STATUS_ERRORS))
async def test_status_faults_raise_the_sdks_own_exception(
    emulator: Emulator, clients: Clients, action: str, provider: str, stream: bool
) -> None:
    await emulator.faults({"action": action, "provider": provider, "retry_after_s": 7})
    exception, status = STATUS_ERRORS[action][provider]

    with pytest.raises(exception) as caught:
        await chat(provider, clients[provider], stream=stream)

    assert caught.value.status_code == status  # type: ignore[attr-defined]
    if provider != "ollama":  # ResponseError keeps no headers
        headers = caught.value.response.headers  # type: ignore[attr-defined]
        assert headers["x-emulator"] == "smart-router"
        assert headers.get("retry-after") == ("7" if action == "rate_limit" else None)
    stats = await emulator.stats()
    assert stats["counts"][provider][MODELS[provider]] == {action: 1}


async def test_the_sdk_waits_retry_after_and_retries(emulator: Emulator) -> None:
    await emulator.faults({"action": "rate_limit", "times": 1, "retry_after_s": 1})
    client = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="k", max_retries=1)
    started = time.monotonic()

    text = await chat("openai", client)

    assert text and time.monotonic() - started >= 0.95
    stats = await emulator.stats()
    assert stats["counts"]["openai"]["gpt-4o"] == {"rate_limit": 1, "good": 1}
    await client.close()


TIMEOUT_ERRORS: dict[str, type[Exception]] = {
    "openai": openai.APITimeoutError,
    "anthropic": anthropic.APITimeoutError,
    "groq": groq.APITimeoutError,
    "ollama": httpx.ReadTimeout,  # the ollama client lets httpx's own errors through
}


@pytest.fixture
async def impatient(emulator: Emulator) -> AsyncIterator[Clients]:
    """Clients that give up after 0.3 s."""
    clients = {
        "openai": openai.AsyncOpenAI(
            base_url=f"{emulator.url}/v1", api_key="k", max_retries=0, timeout=0.3
        ),
        "anthropic": anthropic.AsyncAnthropic(
            base_url=emulator.url, api_key="k", max_retries=0, timeout=0.3
        ),
        "groq": groq.AsyncGroq(base_url=emulator.url, api_key="k", max_retries=0, timeout=0.3),
        "ollama": ollama.AsyncClient(host=emulator.url, timeout=0.3),
    }
    yield clients
    for client in clients.values():
        await client.close()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_hang_times_the_client_out_and_frees_the_handler(
    emulator: Emulator, impatient: Clients, provider: str
) -> None:
    await emulator.faults({"action": "hang"})

    with pytest.raises(TIMEOUT_ERRORS[provider]):
        await chat(provider, impatient[provider])

    for _ in range(50):  # aiohttp cancels the handler once it sees the client leave
        if (await emulator.stats())["in_flight"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await emulator.stats())["in_flight"] == 0


DISCONNECT_ERRORS: dict[str, type[Exception]] = {
    "openai": openai.APIConnectionError,
    "anthropic": anthropic.APIConnectionError,
    "groq": groq.APIConnectionError,
    "ollama": httpx.RemoteProtocolError,
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_timed_hang_drops_the_connection(
    emulator: Emulator, clients: Clients, provider: str
) -> None:
    await emulator.faults({"action": "hang", "hang_s": 0.1})

    with pytest.raises(DISCONNECT_ERRORS[provider]) as caught:
        await chat(provider, clients[provider])

    assert "Timeout" not in type(caught.value).__name__


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_bodies_fail_to_parse(
    emulator: Emulator, clients: Clients, provider: str, stream: bool
) -> None:
    """No SDK wraps a broken body in its own exception: adapters must catch ValueError."""
    await emulator.faults({"action": "malformed"})

    with pytest.raises(ValueError, match="line 1 column"):
        await chat(provider, clients[provider], stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_truncate_cuts_the_answer_in_half(
    emulator: Emulator, openai_client: openai.AsyncOpenAI, stream: bool
) -> None:
    whole = await chat("openai", openai_client)
    await emulator.faults({"action": "truncate"})

    cut = await chat("openai", openai_client, stream=stream)

    assert whole.startswith(cut)
    assert len(cut.split()) == len(whole.split()) // 2
    assert (await emulator.stats())["counts"]["openai"]["gpt-4o"]["truncate"] == 1


async def test_truncate_reports_length(
    emulator: Emulator, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    await emulator.faults({"action": "truncate"})

    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": SIMPLE}]
    )

    assert message.stop_reason == "max_tokens"
    assert message.model_extra is not None
    assert message.model_extra["emulator_verdict"] == "truncated"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("hedge", "not entirely sure|might|may be mistaken|verify|can't say|unclear"),
        ("refuse", "can't help|not able|don't have enough"),
        ("empty", "^$"),
    ],
)
async def test_content_faults_make_a_strong_model_weak(
    emulator: Emulator, openai_client: openai.AsyncOpenAI, action: str, expected: str
) -> None:
    await emulator.faults({"action": action})

    completion = await openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": SIMPLE}]
    )

    assert completion.model_extra is not None
    assert completion.model_extra["emulator_verdict"] == "weak"
    assert re.search(expected, completion.choices[0].message.content or "")


async def test_no_usage_leaves_usage_out(emulator: Emulator, clients: Clients) -> None:
    await emulator.faults({"action": "no_usage"})
    messages = [{"role": "user", "content": SIMPLE}]

    completion = await clients["openai"].chat.completions.create(model="gpt-4o", messages=messages)
    raw = await clients["anthropic"].messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=messages
    )
    local = await clients["ollama"].chat(model="llama3.2", messages=messages)

    assert completion.usage is None
    assert "usage" not in raw.http_response.json()
    assert local.eval_count is None and local.prompt_eval_count is None
    assert completion.choices[0].message.content  # the answer itself is still there


async def test_ok_rule_shields_calls_from_later_rules(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    await emulator.faults(
        {"action": "ok", "prompt_regex": "(?i)health check"},
        {"action": "server_error"},
    )

    assert await chat("openai", openai_client, prompt="Health check: are you there?")
    with pytest.raises(openai.InternalServerError):
        await chat("openai", openai_client)


async def test_times_limits_a_rule_to_the_first_calls(
    emulator: Emulator, groq_client: groq.AsyncGroq
) -> None:
    await emulator.faults({"action": "server_error", "times": 2})

    for _ in range(2):
        with pytest.raises(groq.InternalServerError):
            await chat("groq", groq_client)
    assert await chat("groq", groq_client)
    assert await chat("groq", groq_client)

    stats = await emulator.stats()
    assert stats["counts"]["groq"]["llama-3.1-8b-instant"] == {"server_error": 2, "good": 2}


async def test_probability_is_seeded_and_repeatable(
    emulator: Emulator, openai_client: openai.AsyncOpenAI
) -> None:
    async def pattern() -> list[bool]:
        await emulator.put_scenario(seed=42, faults=[{"action": "rate_limit", "probability": 0.3}])
        outcomes = []
        for _ in range(60):
            try:
                await chat("openai", openai_client)
                outcomes.append(False)
            except openai.RateLimitError:
                outcomes.append(True)
        return outcomes

    first = await pattern()
    second = await pattern()

    assert first == second
    assert 8 <= sum(first) <= 30


async def test_rules_match_on_model_glob_provider_and_prompt(
    emulator: Emulator, openai_client: openai.AsyncOpenAI, groq_client: groq.AsyncGroq
) -> None:
    await emulator.faults(
        {"action": "rate_limit", "model": "gpt-4o*", "provider": "openai", "prompt_regex": "urgent"}
    )
    urgent = [{"role": "user", "content": "This is urgent: what is 2 + 2?"}]

    with pytest.raises(openai.RateLimitError):
        await openai_client.chat.completions.create(model="gpt-4o", messages=urgent)
    with pytest.raises(openai.RateLimitError):
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=urgent)
    assert await chat("openai", openai_client, prompt="Not pressing: what is 2 + 2?")
    assert await groq_client.chat.completions.create(model="llama-3.1-8b-instant", messages=urgent)
