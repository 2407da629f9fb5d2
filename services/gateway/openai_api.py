"""OpenAI's chat-completions schema, translated to and from the router's own messages.

The translation is the whole of the gateway's judgement: what a field means for the router, and
which fields are refused because ignoring them would change the answer a caller expects (tools,
several choices, a JSON schema). Fields that only tune sampling (top_p, seed, penalties...) are
accepted and ignored: every provider behind a tier would treat them differently anyway.
Everything the router validates itself (sizes, ranges, metadata) is left to the classifier, so
the HTTP and NATS doors refuse the same requests with the same messages.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config import RouterConfig
from shared.errors import ErrorCode, RouterError
from shared.messages import describe_validation_error

# What routes instead of pinning: the OpenAI SDK needs some model name.
ROUTING_MODELS = ("auto", "smart-router")
# Router request fields an OpenAI caller may add through the SDK's extra_body.
ROUTER_FIELDS = ("tenant", "tier", "max_tier", "max_cost_usd", "request_id")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, refusal, annotations...

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are kept (extra="allow") so the router's own
    fields can come through extra_body; the rest are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Refused unless harmless: each would change what the caller gets back.
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    audio: dict[str, Any] | None = None


def parse_completion_request(body: bytes) -> CompletionRequest:
    try:
        request = CompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RouterError(ErrorCode.INVALID_REQUEST, _openai_wording(exc)) from None
    unsupported = _unsupported(request)
    if unsupported:
        raise RouterError(ErrorCode.INVALID_REQUEST, unsupported)
    return request


def _openai_wording(exc: ValidationError) -> str:
    """Pydantic's union errors name every branch; a caller wants the field and the reason."""
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if len(loc) >= 3 and loc[0] == "messages" and loc[2] == "role":
            return (f"'messages.{loc[1]}.role': the router takes system, developer, user and "
                    "assistant messages (no tool or function messages)")
        if len(loc) >= 3 and loc[0] == "messages" and loc[2] == "content":
            return (f"'messages.{loc[1]}.content': give a string or a list of text parts "
                    "(the router takes text only)")
    return describe_validation_error(exc)


def _unsupported(request: CompletionRequest) -> str | None:
    if request.n not in (None, 1):
        return "'n': the router returns one choice"
    if request.tools or request.functions:
        return "'tools': the router does not call tools"
    if request.response_format and request.response_format.get("type") != "text":
        return "'response_format': the router returns text only"
    if request.stop:
        return "'stop': the router does not support stop sequences"
    if request.audio:
        return "'audio': the router returns text only"
    return None


def to_router_request(request: CompletionRequest, cfg: RouterConfig) -> dict[str, Any]:
    """The body for router.v1.chat: the messages, the pin the model names, the limits."""
    body: dict[str, Any] = {
        "messages": [{"role": "system" if m.role == "developer" else m.role,
                      "content": m.text()} for m in request.messages],
        **model_pin(request.model, cfg),
    }
    max_tokens = (request.max_tokens if request.max_completion_tokens is None
                  else request.max_completion_tokens)  # a 0 is refused, not passed over
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    metadata = dict(request.metadata or {})
    if request.user is not None:
        metadata["user"] = request.user
    if metadata:
        body["metadata"] = metadata
    extra = request.model_extra or {}
    body.update({name: extra[name] for name in ROUTER_FIELDS if name in extra})
    return body


def model_pin(model: str, cfg: RouterConfig) -> dict[str, str]:
    """`auto` routes; a tier name starts there (escalation may climb); a configured model id
    pins that model, on its tier, with no escalation."""
    if model in ROUTING_MODELS:
        return {}
    tiers = [t.name for t in cfg.tiers]
    if model in tiers:
        return {"tier": model}
    if any(ref.named(model) for tier in cfg.tiers for ref in tier.models):
        return {"model": model}
    raise RouterError(
        ErrorCode.INVALID_REQUEST,
        f"'model': unknown model '{model}'; use 'auto', a tier ({', '.join(tiers)}) or a model "
        "listed by GET /v1/models")


def model_list(cfg: RouterConfig) -> dict[str, Any]:
    entries = [(name, "smart-router") for name in ROUTING_MODELS]
    entries += [(tier.name, "smart-router") for tier in cfg.tiers]
    seen: set[str] = set()
    for tier in cfg.tiers:
        for ref in tier.models:
            if ref.model not in seen:
                seen.add(ref.model)
                entries.append((ref.model, ref.provider))
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": owner}
                     for name, owner in entries]}


def finish_reason(reply: dict[str, Any]) -> str:
    """`length` when the answer served was cut by max_tokens (the escalator's truncation
    signal on its attempt), else `stop`."""
    served = [a for a in reply["attempts"]
              if a["model"] == reply["model_used"] and a["outcome"] in ("ok", "weak")]
    return "length" if served and "truncation" in served[-1]["reason"] else "stop"


def usage(reply: dict[str, Any]) -> dict[str, int]:
    """Every token the request paid for, escalations included: what the cost figures count."""
    return {"prompt_tokens": reply["input_tokens"], "completion_tokens": reply["output_tokens"],
            "total_tokens": reply["input_tokens"] + reply["output_tokens"]}


def completion(reply: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": completion_id(reply),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply["model_used"],
        "choices": [{"index": 0, "finish_reason": finish_reason(reply), "logprobs": None,
                     "message": {"role": "assistant", "content": reply["response"],
                                 "refusal": None}}],
        "usage": usage(reply),
        "system_fingerprint": None,
    }


def completion_id(reply: dict[str, Any]) -> str:
    return f"chatcmpl-{reply['request_id']}"


class Chunks:
    """One streamed completion's chunks, in OpenAI's format."""

    def __init__(self, request_id: str, model: str) -> None:
        self._head = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": model, "system_fingerprint": None}

    def delta(self, delta: dict[str, Any], finish: str | None = None,
              **extra: Any) -> dict[str, Any]:
        return {**self._head, **extra, "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def usage(self, reply: dict[str, Any]) -> dict[str, Any]:
        return {**self._head, "choices": [], "usage": usage(reply)}


def router_facts(reply: dict[str, Any]) -> dict[str, Any]:
    """What the x-router-* headers say, for a stream whose headers left before it was known."""
    return {name: reply[name] for name in ("request_id", "tier", "difficulty_tag", "cost_usd",
                                           "saved_usd", "escalated", "emulated")}


def stream_headers(first: dict[str, Any]) -> dict[str, str]:
    """The router's facts known when a stream's first piece is released; cost and savings come
    at its end, in the last chunk's `x_router`."""
    return {"x-request-id": first["request_id"], "x-router-tier": first["tier"],
            "x-router-difficulty": first["difficulty_tag"],
            "x-router-escalated": "true" if first["escalated"] else "false"}


def router_headers(reply: dict[str, Any]) -> dict[str, str]:
    """The router's facts about an answer, beside the OpenAI body that has no room for them."""
    return {
        "x-request-id": reply["request_id"],
        "x-router-tier": reply["tier"],
        "x-router-difficulty": reply["difficulty_tag"],
        "x-router-cost-usd": f"{reply['cost_usd']:.10f}",
        "x-router-saved-usd": f"{reply['saved_usd']:.10f}",
        "x-router-escalated": "true" if reply["escalated"] else "false",
        "x-router-emulated": "true" if reply["emulated"] else "false",
    }
