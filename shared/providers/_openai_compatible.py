"""OpenAI chat completions, through the `openai` SDK or the `groq` SDK (same API shape)."""

from __future__ import annotations

from typing import Any

from ._base import EMULATOR_HEADER, Completion, OnText, ProviderError, mean
from ._stainless import SdkErrors, extra_fields

_FINISH = {"stop": "stop", "length": "length", "content_filter": "refusal"}


class OpenAICompatible:
    def __init__(self, client: Any, errors: SdkErrors, *, usage_in_x_groq: bool = False) -> None:
        self._client = client
        self._errors = errors
        # The Groq SDK takes no stream_options: a stream's usage rides on its last chunk's
        # x_groq instead.
        self._usage_in_x_groq = usage_in_x_groq

    async def aclose(self) -> None:
        await self._client.close()

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
        except self._errors.failed as exc:
            raise self._errors.map(exc) from exc
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

    async def stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float | None,
        timeout: float,
        on_text: OnText,
    ) -> Completion:
        options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        if not self._usage_in_x_groq:
            options["stream_options"] = {"include_usage": True}
        pieces: list[str] = []
        finish, usage, stream = None, None, None
        try:
            stream = await self._client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, timeout=timeout,
                stream=True, **options)
            async with stream:
                async for chunk in stream:
                    usage = chunk.usage or _x_groq_usage(chunk) or usage
                    if not chunk.choices:
                        continue
                    finish = chunk.choices[0].finish_reason or finish
                    text = chunk.choices[0].delta.content
                    if text:
                        pieces.append(text)
                        await on_text(text)
        except self._errors.failed as exc:
            raise self._errors.map(exc) from exc
        except Exception as exc:  # on_text's own reason to stop (or a bug): as it is, marked
            if stream is not None:
                exc.emulated = EMULATOR_HEADER in stream.response.headers  # type: ignore[attr-defined]
            raise
        if usage is None:
            raise ProviderError("bad_response", "the stream has no token usage")
        return Completion(
            text="".join(pieces),
            finish_reason=_FINISH.get(finish or "", "other"),  # type: ignore[arg-type]
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            emulated=EMULATOR_HEADER in stream.response.headers,
        )


def _x_groq_usage(chunk: Any) -> Any:
    x_groq = getattr(chunk, "x_groq", None)
    return getattr(x_groq, "usage", None) if x_groq is not None else None


def _logprob_mean(choice: Any) -> float | None:
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    return mean([token.logprob for token in content or ()])
