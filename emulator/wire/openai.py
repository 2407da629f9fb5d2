"""OpenAI chat completions: JSON bodies, SSE chunks ending in `data: [DONE]`."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..completion import ChatRequest, Completion
from ..scenario import Provider
from ..tokens import TokenLogprob, estimate_prompt_tokens
from .base import (
    BadRequest,
    ErrorKind,
    Frames,
    conversation,
    dump,
    json_response,
    mapping,
    positive_int,
    random_id,
)

_MAX_TOP_LOGPROBS = 20

# status, error type, error code, message
_ERRORS: dict[ErrorKind, tuple[int, str, str | None, str]] = {
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", None, "{detail}"),
    ErrorKind.UNAUTHORIZED: (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. {detail}",
    ),
    ErrorKind.NOT_FOUND: (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{detail}` does not exist or you do not have access to it.",
    ),
    ErrorKind.RATE_LIMIT: (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {detail} (emulated). Please try again later.",
    ),
    ErrorKind.SERVER_ERROR: (
        500,
        "server_error",
        None,
        "The server had an error while processing your request (emulated).",
    ),
    ErrorKind.OVERLOADED: (
        503,
        "server_error",
        "overloaded",
        "The engine is currently overloaded, please try again later (emulated).",
    ),
}


class OpenAIWire:
    provider: Provider = "openai"
    requires_key = True
    stream_content_type = "text/event-stream"
    malformed_frame = b'data: {"object":"chat.completion.chunk","choices":[{"delta":\n\n'
    fingerprint = "fp_emu0penai"

    def parse(self, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter")
        prompt, texts = conversation(body.get("messages"))
        top_logprobs = body.get("top_logprobs") or 0
        if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= _MAX_TOP_LOGPROBS:
            raise BadRequest("top_logprobs must be an integer between 0 and 20")
        response_format = mapping(body.get("response_format"), "response_format")
        stream_options = mapping(body.get("stream_options"), "stream_options")
        return ChatRequest(
            model=model,
            prompt=prompt,
            prompt_tokens=estimate_prompt_tokens(texts),
            max_tokens=positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
            or positive_int(body.get("max_tokens"), "max_tokens"),
            stream=bool(body.get("stream")),
            include_usage=bool(stream_options.get("include_usage")),
            logprobs=bool(body.get("logprobs")),
            top_logprobs=top_logprobs,
            wants_json=response_format.get("type") in ("json_object", "json_schema"),
        )

    def respond(self, request: ChatRequest, completion: Completion) -> web.Response:
        payload: dict[str, Any] = {
            "id": self.completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "logprobs": self.logprobs(completion.logprobs),
                    "finish_reason": completion.finish,
                }
            ],
            "system_fingerprint": self.fingerprint,
            **self.extra(),
            **completion.markers,
        }
        if completion.report_usage:
            payload["usage"] = self.usage(completion)
        return json_response(payload)

    def stream(self, request: ChatRequest, completion: Completion) -> Frames:
        envelope = {
            "id": self.completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": self.fingerprint,
            **self.extra(),
            **completion.markers,
        }
        if request.include_usage:
            envelope["usage"] = None

        def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            closing = self.closing_fields(envelope, completion) if finish else {}
            return _sse({**envelope, "choices": [choice], **closing})

        frames = Frames(head=[chunk({"role": "assistant", "content": ""})])
        entries = completion.logprobs or ()
        for index, token in enumerate(completion.tokens):
            logprobs = {"content": [_logprob(entries[index])]} if entries else None
            frames.tokens.append(chunk({"content": token}, logprobs))
        frames.tail.append(chunk({}, finish=completion.finish))
        if request.include_usage and completion.report_usage:
            frames.tail.append(_sse({**envelope, "choices": [], "usage": self.usage(completion)}))
        frames.tail.append(b"data: [DONE]\n\n")
        return frames

    def error(self, kind: ErrorKind, detail: str) -> web.Response:
        status, error_type, code, message = _ERRORS[kind]
        error = {"message": message.format(detail=detail), "type": error_type, "param": None}
        return json_response({"error": {**error, "code": code}}, status)

    def extra(self) -> dict[str, Any]:
        """Provider-specific top-level fields; OpenAI has none."""
        return {}

    def closing_fields(self, envelope: dict[str, Any], completion: Completion) -> dict[str, Any]:
        """Fields only the chunk with the finish reason carries; OpenAI has none."""
        return {}

    def completion_id(self) -> str:
        return "chatcmpl-" + random_id(29)

    def usage(self, completion: Completion) -> dict[str, Any]:
        return {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def logprobs(self, entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
        if entries is None:
            return None
        return {"content": [_logprob(entry) for entry in entries], "refusal": None}


def _logprob(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token.encode()),
        "top_logprobs": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode())}
            for token, logprob in entry.top
        ],
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + dump(payload) + b"\n\n"
