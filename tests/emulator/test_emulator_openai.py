"""The official OpenAI SDK against the emulator, unmodified but for its base URL."""

from __future__ import annotations

import statistics

import aiohttp
import openai
import pytest
from emulator_harness import Emulator

SIMPLE = "What is the capital of France?"
COMPLEX = "Design a distributed consensus system and explain the trade-offs."


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": prompt}]


async def test_completion_has_text_usage_and_marker(openai_client: openai.AsyncOpenAI) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask(SIMPLE)
    )
    completion = raw.parse()

    assert raw.headers["x-emulator"] == "smart-router"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert "France" in choice.message.content
    usage = completion.usage
    assert usage is not None
    assert 20 <= usage.completion_tokens <= 60  # a simple prompt gets a short answer
    assert usage.completion_tokens == len(choice.message.content.split())
    assert usage.prompt_tokens >= (len("You are terse.") + len(SIMPLE)) // 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # extra top-level fields survive as pydantic extras, readable both ways
    assert completion.emulated is True
    assert completion.model_extra == {
        "emulated": True,
        "emulator_verdict": "good",
        "emulator_difficulty": 1,
    }


async def test_max_completion_tokens_cuts_the_answer(openai_client: openai.AsyncOpenAI) -> None:
    full = await openai_client.chat.completions.create(model="gpt-4o", messages=ask(COMPLEX))
    cut = await openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(COMPLEX), max_completion_tokens=7
    )

    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 7
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)
    assert cut.model_extra is not None and cut.model_extra["emulator_verdict"] == "truncated"


async def test_logprobs_are_high_for_a_strong_model_and_low_for_a_weak_one(
    openai_client: openai.AsyncOpenAI,
) -> None:
    async def logprobs(
        model: str,
    ) -> tuple[int, list[openai.types.chat.ChatCompletionTokenLogprob]]:
        completion = await openai_client.chat.completions.create(
            model=model, messages=ask(COMPLEX), logprobs=True, top_logprobs=3
        )
        assert completion.usage is not None and completion.choices[0].logprobs is not None
        return completion.usage.completion_tokens, completion.choices[0].logprobs.content or []

    strong_count, strong = await logprobs("gpt-4o")
    weak_count, weak = await logprobs("gpt-4o-mini")

    assert len(strong) == strong_count and len(weak) == weak_count
    assert -0.4 < statistics.mean(entry.logprob for entry in strong) < -0.05
    assert -3.0 < statistics.mean(entry.logprob for entry in weak) < -1.2
    first = strong[0]
    assert len(first.top_logprobs) == 3
    assert first.token in [alternative.token for alternative in first.top_logprobs]
    assert first.bytes == list(first.token.encode())
    ranked = [alternative.logprob for alternative in first.top_logprobs]
    assert ranked == sorted(ranked, reverse=True)


async def test_stream_repeats_the_answer_and_ends_with_usage(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(model="gpt-4o", messages=ask(COMPLEX))
    stream = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=ask(COMPLEX),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(chunk.model_extra and chunk.model_extra["emulated"] for chunk in chunks)


async def test_stream_without_include_usage_has_no_usage_chunk(
    openai_client: openai.AsyncOpenAI,
) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=ask(SIMPLE), stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_stream_logprobs_come_one_per_token(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(SIMPLE), stream=True, logprobs=True, top_logprobs=1
    )
    tokens = [c async for c in stream if c.choices and c.choices[0].delta.content]

    for chunk in tokens:
        assert chunk.choices[0].logprobs is not None
        [entry] = chunk.choices[0].logprobs.content or []
        assert entry.token == chunk.choices[0].delta.content


async def test_unknown_model_is_a_404(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await openai_client.chat.completions.create(model="gpt-9", messages=ask(SIMPLE))

    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.response.headers["x-emulator"] == "smart-router"


async def test_a_model_of_another_provider_is_unknown(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(model="claude-sonnet-4-5", messages=ask(SIMPLE))


async def test_json_response_format_returns_a_classification(
    openai_client: openai.AsyncOpenAI,
) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=ask('Rate this prompt: """Prove that sqrt(2) is irrational."""'),
        response_format={"type": "json_object"},
    )

    assert completion.choices[0].message.content is not None
    assert '"difficulty": "complex"' in completion.choices[0].message.content


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "any"}, {"Authorization": "Bearer any"}],
    ids=["x-api-key", "bearer"],
)
async def test_either_key_header_is_accepted(emulator: Emulator, headers: dict[str, str]) -> None:
    body = {"model": "gpt-4o", "messages": ask(SIMPLE)}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{emulator.url}/v1/chat/completions", json=body) as response:
            assert response.status == 200


async def test_a_missing_key_is_a_401_in_openai_shape(emulator: Emulator) -> None:
    body = {"model": "gpt-4o", "messages": ask(SIMPLE)}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emulator.url}/v1/chat/completions", json=body) as response:
            assert response.status == 401
            error = (await response.json())["error"]
    assert error["code"] == "invalid_api_key"


async def test_a_bad_request_is_a_400(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        await openai_client.chat.completions.create(model="gpt-4o", messages=[])
