"""Ollama's /api/chat: one JSON object, or NDJSON lines ending in a `done` object with counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..completion import ChatRequest, Completion
from ..scenario import Provider
from ..tokens import TokenLogprob, estimate_prompt_tokens
from .base import BadRequest, ErrorKind, Frames, conversation, dump, json_response, mapping

LATEST_TAG = ":latest"
_LOAD_NS = 5_000_000
_PROMPT_NS_PER_TOKEN = 200_000  # prompt evaluation on a small CPU model
_EVAL_NS_PER_TOKEN = 20_000_000  # 50 tokens/s generation

_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.BAD_REQUEST: (400, "{detail}"),
    ErrorKind.UNAUTHORIZED: (401, "unauthorized"),
    ErrorKind.NOT_FOUND: (404, 'model "{detail}" not found, try pulling it first'),
    ErrorKind.RATE_LIMIT: (429, "too many requests for {detail} (emulated)"),
    ErrorKind.SERVER_ERROR: (500, "llama runner process has terminated (emulated)"),
    ErrorKind.OVERLOADED: (503, "server busy, please try again (emulated)"),
}


class OllamaWire:
    provider: Provider = "ollama"
    requires_key = False
    stream_content_type = "application/x-ndjson"
    malformed_frame = b'{"model":"emulated","message":{"role":"assistant","content":\n'

    def parse(self, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        prompt, texts = conversation(body.get("messages"))
        num_predict = mapping(body.get("options"), "options").get("num_predict")
        top_logprobs = body.get("top_logprobs") or 0
        if not isinstance(top_logprobs, int) or top_logprobs < 0:
            raise BadRequest("top_logprobs must be a non-negative integer")
        return ChatRequest(
            model=model.removesuffix(LATEST_TAG),
            prompt=prompt,
            prompt_tokens=estimate_prompt_tokens(texts),
            # -1 and -2 mean "no limit" and "fill the context"
            max_tokens=num_predict if isinstance(num_predict, int) and num_predict > 0 else None,
            stream=body.get("stream", True) is not False,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=top_logprobs,
            wants_json=body.get("format") == "json" or isinstance(body.get("format"), dict),
        )

    def respond(self, request: ChatRequest, completion: Completion) -> web.Response:
        payload = self._final(request, completion, completion.text)
        if completion.logprobs is not None:
            payload["logprobs"] = [_logprob(entry) for entry in completion.logprobs]
        return json_response(payload)

    def stream(self, request: ChatRequest, completion: Completion) -> Frames:
        frames = Frames()
        entries = completion.logprobs or ()
        for index, token in enumerate(completion.tokens):
            part = {
                "model": request.model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": token},
                "done": False,
                **completion.markers,
            }
            if entries:
                part["logprobs"] = [_logprob(entries[index])]
            frames.tokens.append(dump(part) + b"\n")
        frames.tail.append(dump(self._final(request, completion, "")) + b"\n")
        return frames

    def error(self, kind: ErrorKind, detail: str) -> web.Response:
        status, message = _ERRORS[kind]
        return json_response({"error": message.format(detail=detail)}, status)

    def _final(self, request: ChatRequest, completion: Completion, content: str) -> dict[str, Any]:
        prompt_ns = completion.prompt_tokens * _PROMPT_NS_PER_TOKEN
        eval_ns = completion.completion_tokens * _EVAL_NS_PER_TOKEN
        payload: dict[str, Any] = {
            "model": request.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done": True,
            "done_reason": completion.finish,
            "total_duration": _LOAD_NS + prompt_ns + eval_ns,
            "load_duration": _LOAD_NS,
            "prompt_eval_duration": prompt_ns,
            "eval_duration": eval_ns,
            **completion.markers,
        }
        if completion.report_usage:
            payload["prompt_eval_count"] = completion.prompt_tokens
            payload["eval_count"] = completion.completion_tokens
        return payload


def _logprob(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "top_logprobs": [{"token": token, "logprob": logprob} for token, logprob in entry.top],
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
