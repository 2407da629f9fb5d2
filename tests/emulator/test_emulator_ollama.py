"""The official ollama client against the emulator; its pydantic models drop unknown fields."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest
from emulator_harness import Emulator

SIMPLE = [{"role": "user", "content": "What is the boiling point of water?"}]
COMPLEX = [{"role": "user", "content": "Derive the time complexity of a concurrent skip list."}]


async def test_chat_has_counts_and_done_reason(ollama_client: ollama.AsyncClient) -> None:
    response = await ollama_client.chat(model="llama3.2", messages=SIMPLE, stream=False)

    assert response.model == "llama3.2"
    assert response.done is True and response.done_reason == "stop"
    assert "water" in (response.message.content or "")
    assert response.eval_count == len((response.message.content or "").split())
    assert response.prompt_eval_count is not None and response.prompt_eval_count > 0
    assert response.total_duration is not None and response.total_duration > 0


async def test_the_marker_is_dropped_by_the_client_but_the_header_is_not(
    emulator: Emulator,
) -> None:
    headers: list[httpx.Headers] = []

    async def keep_headers(response: httpx.Response) -> None:
        headers.append(response.headers)

    client = ollama.AsyncClient(host=emulator.url, event_hooks={"response": [keep_headers]})
    response = await client.chat(model="llama3.2", messages=SIMPLE, stream=False)
    await client.close()

    assert "emulated" not in response  # the SubscriptableBaseModel ignores extra fields
    assert response.model_extra is None
    assert headers[0]["x-emulator"] == "smart-router"


async def test_stream_ends_with_a_done_object(ollama_client: ollama.AsyncClient) -> None:
    whole = await ollama_client.chat(model="phi3:mini", messages=SIMPLE, stream=False)
    stream = await ollama_client.chat(model="phi3:mini", messages=SIMPLE, stream=True)
    parts = [part async for part in stream]

    *tokens, final = parts
    assert "".join(part.message.content or "" for part in tokens) == whole.message.content
    assert all(part.done is False for part in tokens)
    assert final.done is True and final.done_reason == "stop"
    assert final.eval_count == whole.eval_count == len(tokens)
    assert final.prompt_eval_count == whole.prompt_eval_count


async def test_num_predict_cuts_with_done_reason_length(
    ollama_client: ollama.AsyncClient,
) -> None:
    response = await ollama_client.chat(
        model="llama3.2", messages=SIMPLE, stream=False, options={"num_predict": 4}
    )

    assert response.done_reason == "length"
    assert response.eval_count == 4


async def test_small_model_hedges_on_a_complex_prompt(ollama_client: ollama.AsyncClient) -> None:
    response = await ollama_client.chat(
        model="phi3:mini", messages=COMPLEX, stream=False, logprobs=True
    )

    assert response.eval_count is not None and response.eval_count < 80
    assert response.logprobs is not None and len(response.logprobs) == response.eval_count


@pytest.mark.parametrize(
    ("prompt", "label"),
    [
        ("What is 2 + 2?", "simple"),
        ("Summarize the plot of Hamlet in one paragraph.", "medium"),
        ("Prove that there are infinitely many primes.", "complex"),
    ],
)
@pytest.mark.parametrize("json_format", ["json", {"type": "object"}], ids=["json", "schema"])
async def test_classification_request_gets_json(
    ollama_client: ollama.AsyncClient, prompt: str, label: str, json_format: object
) -> None:
    response = await ollama_client.chat(
        model="phi3:mini",
        messages=[
            {"role": "system", "content": "Rate the difficulty: simple, medium or complex."},
            {"role": "user", "content": f"Prompt: {prompt}"},
        ],
        format=json_format,  # type: ignore[arg-type]
        stream=False,
    )

    verdict = json.loads(response.message.content or "")
    assert verdict["difficulty"] == label
    assert 0.0 < verdict["confidence"] <= 1.0


async def test_catalogue_lists_only_ollama_models(ollama_client: ollama.AsyncClient) -> None:
    listed = await ollama_client.list()
    shown = await ollama_client.show("llama3.2:latest")

    assert sorted(model.model or "" for model in listed.models) == [
        "llama3.2:latest",
        "phi3:mini",
    ]
    assert shown.capabilities == ["completion"]


async def test_version(emulator: Emulator) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{emulator.url}/api/version")

    assert response.json()["version"]


async def test_unknown_model_is_a_404(ollama_client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await ollama_client.chat(model="mistral", messages=SIMPLE, stream=False)

    assert caught.value.status_code == 404
    assert "not found" in caught.value.error


async def test_the_http_api_streams_unless_told_not_to(emulator: Emulator) -> None:
    body = {"model": "llama3.2", "messages": SIMPLE}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{emulator.url}/api/chat", json=body)

    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) > 2
    assert lines[-1]["done"] is True and lines[-1]["emulated"] is True
    assert all(line["emulated"] is True for line in lines)
