"""Anthropic messages: content blocks, and named SSE events from message_start to message_stop."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..completion import ChatRequest, Completion
from ..scenario import Provider
from ..tokens import estimate_prompt_tokens
from .base import (
    BadRequest,
    ErrorKind,
    Frames,
    conversation,
    dump,
    json_response,
    message_text,
    positive_int,
    random_id,
)

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}

_ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", "{detail}"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error", "invalid x-api-key: {detail}"),
    ErrorKind.NOT_FOUND: (404, "not_found_error", "model: {detail}"),
    ErrorKind.RATE_LIMIT: (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for {detail} (emulated).",
    ),
    ErrorKind.SERVER_ERROR: (500, "api_error", "Internal server error (emulated)"),
    ErrorKind.OVERLOADED: (529, "overloaded_error", "Overloaded (emulated)"),
}


class AnthropicWire:
    provider: Provider = "anthropic"
    requires_key = True
    stream_content_type = "text/event-stream"
    malformed_frame = b'event: content_block_delta\ndata: {"type":"content_block_delta",\n\n'

    def parse(self, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        max_tokens = positive_int(body.get("max_tokens"), "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        prompt, texts = conversation(body.get("messages"))
        texts.append(message_text(body.get("system")))
        return ChatRequest(
            model=model,
            prompt=prompt,
            prompt_tokens=estimate_prompt_tokens(texts),
            max_tokens=max_tokens,
            stream=bool(body.get("stream")),
        )

    def respond(self, request: ChatRequest, completion: Completion) -> web.Response:
        payload = {
            **_message(request.model),
            "content": [{"type": "text", "text": completion.text}] if completion.text else [],
            "stop_reason": _STOP_REASONS[completion.finish],
            **completion.markers,
        }
        if completion.report_usage:
            payload["usage"] = self._usage(completion, completion.completion_tokens)
        return json_response(payload)

    def stream(self, request: ChatRequest, completion: Completion) -> Frames:
        markers = completion.markers
        message = {
            **_message(request.model),
            "content": [],
            "stop_reason": None,
            **markers,
        }
        delta: dict[str, Any] = {
            "delta": {"stop_reason": _STOP_REASONS[completion.finish], "stop_sequence": None}
        }
        if completion.report_usage:
            message["usage"] = self._usage(completion, 1)
            delta["usage"] = {"output_tokens": completion.completion_tokens}

        frames = Frames(head=[_event("message_start", {"message": message}, markers)])
        if completion.tokens:
            block = {"index": 0, "content_block": {"type": "text", "text": ""}}
            frames.head.append(_event("content_block_start", block, markers))
        frames.head.append(_event("ping", {}, markers))
        for token in completion.tokens:
            text_delta = {"index": 0, "delta": {"type": "text_delta", "text": token}}
            frames.tokens.append(_event("content_block_delta", text_delta, markers))
        if completion.tokens:
            frames.tail.append(_event("content_block_stop", {"index": 0}, markers))
        frames.tail.append(_event("message_delta", delta, markers))
        frames.tail.append(_event("message_stop", {}, markers))
        return frames

    def error(self, kind: ErrorKind, detail: str) -> web.Response:
        status, error_type, message = _ERRORS[kind]
        payload = {
            "type": "error",
            "error": {"type": error_type, "message": message.format(detail=detail)},
            "request_id": "req_01" + random_id(22),
        }
        return json_response(payload, status)

    def _usage(self, completion: Completion, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        }


def _message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_01" + random_id(22),
        "type": "message",
        "role": "assistant",
        "model": model,
        "stop_sequence": None,
    }


def _event(name: str, payload: dict[str, Any], markers: dict[str, Any]) -> bytes:
    data = dump({"type": name, **payload, **markers})
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
