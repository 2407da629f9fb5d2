"""The official Groq SDK against the emulator: OpenAI's format under /openai/v1, plus x_groq."""

from __future__ import annotations

import statistics

import groq
import pytest

SIMPLE = "Name the largest planet in the solar system."
MEDIUM = "Explain how a hash map handles collisions."
COMPLEX = "Design a distributed cache and discuss the consistency trade-offs."


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def test_completion_has_usage_timings_and_marker(groq_client: groq.AsyncGroq) -> None:
    completion = await groq_client.chat.completions.create(
        model="llama-3.3-70b-versatile", messages=ask(MEDIUM)
    )

    assert completion.model == "llama-3.3-70b-versatile"
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content or ""
    assert "hash map" in content
    usage = completion.usage
    assert usage is not None
    assert 80 <= usage.completion_tokens <= 200  # a medium prompt gets a medium answer
    assert usage.completion_tokens == len(content.split())
    assert usage.completion_time is not None and usage.completion_time > 0
    assert completion.x_groq is not None and completion.x_groq.id.startswith("req_")
    assert completion.emulated is True  # type: ignore[attr-defined]
    assert completion.model_extra == {
        "emulated": True,
        "emulator_verdict": "good",
        "emulator_difficulty": 2,
    }


async def test_small_model_is_weak_on_a_medium_prompt(groq_client: groq.AsyncGroq) -> None:
    completion = await groq_client.chat.completions.create(
        model="llama-3.1-8b-instant", messages=ask(MEDIUM), logprobs=True
    )

    assert completion.model_extra is not None
    assert completion.model_extra["emulator_verdict"] == "weak"
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    if logprobs.content:  # an empty answer has none
        assert statistics.mean(entry.logprob for entry in logprobs.content) < -1.2


async def test_stream_carries_usage_in_the_last_x_groq(groq_client: groq.AsyncGroq) -> None:
    whole = await groq_client.chat.completions.create(
        model="llama-3.1-8b-instant", messages=ask(SIMPLE)
    )
    stream = await groq_client.chat.completions.create(
        model="llama-3.1-8b-instant", messages=ask(SIMPLE), stream=True
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.x_groq is not None and last.x_groq.usage is not None and whole.usage is not None
    assert last.x_groq.usage.completion_tokens == whole.usage.completion_tokens
    assert all(chunk.x_groq and chunk.x_groq.id == last.x_groq.id for chunk in chunks)
    assert all(chunk.model_extra and chunk.model_extra["emulated"] for chunk in chunks)


async def test_max_tokens_cuts(groq_client: groq.AsyncGroq) -> None:
    completion = await groq_client.chat.completions.create(
        model="llama-3.3-70b-versatile", messages=ask(MEDIUM), max_tokens=3
    )

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_unknown_model_is_a_404(groq_client: groq.AsyncGroq) -> None:
    with pytest.raises(groq.NotFoundError) as caught:
        await groq_client.chat.completions.create(model="gpt-4o", messages=ask(SIMPLE))

    assert caught.value.status_code == 404
