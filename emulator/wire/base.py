"""What every wire format provides, and small helpers they share."""

from __future__ import annotations

import enum
import json
import random
import string
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ..completion import ChatRequest, Completion
from ..scenario import Provider

_ALPHABET = string.ascii_letters + string.digits
_ids = random.Random()


class ErrorKind(enum.Enum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"


class BadRequest(ValueError):
    """The request body is not what the provider accepts; answered with a 400."""


@dataclass(slots=True)
class Frames:
    """A streamed response: frames before the tokens, one frame per token, frames after."""

    head: list[bytes] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)


class Wire(Protocol):
    """Translates between one provider's JSON and the emulator's neutral request and result."""

    provider: Provider
    requires_key: bool
    stream_content_type: str
    malformed_frame: bytes

    def parse(self, body: Any) -> ChatRequest: ...

    def respond(self, request: ChatRequest, completion: Completion) -> web.Response: ...

    def stream(self, request: ChatRequest, completion: Completion) -> Frames: ...

    def error(self, kind: ErrorKind, detail: str) -> web.Response:
        """The provider's own error body; `detail` is the model, or what is wrong with a request."""
        ...


def random_id(length: int) -> str:
    return "".join(_ids.choices(_ALPHABET, k=length))


def dump(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=dump(payload), status=status, content_type="application/json")


def message_text(content: Any) -> str:
    """A message's text, whether `content` is a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    if content is None:
        return ""
    raise BadRequest("message content must be a string or a list of content parts")


def conversation(messages: Any) -> tuple[str, list[str]]:
    """The last user message, and the text of every message for counting prompt tokens."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array")
    prompt, texts = "", []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        text = message_text(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            prompt = text
    return prompt, texts


def mapping(value: Any, name: str) -> dict[str, Any]:
    """An optional JSON object parameter; absent is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    return value


def positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{name} must be a positive integer")
    return value
