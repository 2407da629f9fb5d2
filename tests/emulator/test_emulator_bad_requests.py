"""Malformed requests get each provider's 400, never a crash or a bare aiohttp error page."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from emulator_harness import Emulator

ROUTES = {
    "openai": ("/v1/chat/completions", "gpt-4o"),
    "anthropic": ("/v1/messages", "claude-haiku-4-5"),
    "groq": ("/openai/v1/chat/completions", "llama-3.1-8b-instant"),
    "ollama": ("/api/chat", "llama3.2"),
}
HELLO = [{"role": "user", "content": "hello"}]


def bad_bodies(model: str) -> list[Any]:
    return [
        "not json at all",
        [],
        {"model": 5, "messages": HELLO, "max_tokens": 10},
        {"model": model, "messages": "hello", "max_tokens": 10},
        {"model": model, "messages": [1], "max_tokens": 10},
        {"model": model, "messages": [{"role": "user", "content": 5}], "max_tokens": 10},
        {"model": model, "messages": HELLO, "max_tokens": "ten"},
        {"model": model, "messages": HELLO, "max_tokens": 10, "options": "fast"},
        {"model": model, "messages": HELLO, "max_tokens": 10, "stream_options": []},
        {"model": model, "messages": HELLO, "max_tokens": 10, "top_logprobs": 99},
    ]


def error_message(provider: str, body: dict[str, Any]) -> str:
    if provider == "ollama":
        return body["error"]
    if provider == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


@pytest.mark.parametrize("provider", list(ROUTES))
async def test_bad_bodies_are_400s_in_the_providers_shape(
    emulator: Emulator, provider: str
) -> None:
    path, model = ROUTES[provider]
    headers = {"x-api-key": "k", "content-type": "application/json"}
    rejected = 0
    async with aiohttp.ClientSession(headers=headers) as http:
        for body in bad_bodies(model):
            data = body if isinstance(body, str) else json.dumps(body)
            async with http.post(emulator.url + path, data=data) as response:
                if response.status == 200:  # a field this provider does not read
                    continue
                assert response.status == 400, (body, await response.text())
                assert error_message(provider, await response.json())
                rejected += 1

    assert rejected >= 7
