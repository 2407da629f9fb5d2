"""OpenAI chat completions, through the `openai` SDK or the `groq` SDK (same API shape)."""

from __future__ import annotations

from typing import Any

from ._base import Completion, ProviderError, mean
from ._stainless import extra_fields, map_error

_FINISH = {"stop": "stop", "length": "length", "content_filter": "refusal"}


class OpenAICompatible:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float | None,
        timeout: float,
        logprobs: bool,
        json_format: bool = False,
    ) -> Completion:
        options: dict[str, Any] = {"logprobs": True} if logprobs else {}
        if json_format:
            options["response_format"] = {"type": "json_object"}
        if temperature is not None:
            options["temperature"] = temperature
        try:
            response = await self._client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, timeout=timeout, **options
            )
        except Exception as exc:
            raise map_error(exc) from exc
        if not response.choices:
            raise ProviderError("bad_response", "the response has no choices")
        extra = extra_fields(response)
        if response.usage is None:
            raise ProviderError("bad_response", "the response has no token usage")
        choice = response.choices[0]
        return Completion(
            text=choice.message.content or "",
            finish_reason=_FINISH.get(choice.finish_reason or "", "other"),  # type: ignore[arg-type]
            input_tokens=response.usage.prompt_tokens,
            output_tokens=response.usage.completion_tokens,
            logprob_mean=_logprob_mean(choice),
            emulated=bool(extra.get("emulated")),
            extra=extra,
        )


def _logprob_mean(choice: Any) -> float | None:
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    return mean([token.logprob for token in content or ()])
