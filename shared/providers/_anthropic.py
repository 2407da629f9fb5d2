"""Anthropic messages, through the `anthropic` SDK."""

from __future__ import annotations

from typing import Any

from ._base import EMULATOR_HEADER, Completion, OnText, ProviderError
from ._stainless import SdkErrors, extra_fields

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
           "refusal": "refusal"}


class Anthropic:
    def __init__(self, client: Any, errors: SdkErrors) -> None:
        self._client = client
        self._errors = errors

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float | None,  # the Messages API of anthropic 2.x takes no sampling options
        timeout: float,
        logprobs: bool,  # Anthropic returns none; the escalator scores on other signals
        json_format: bool = False,  # no JSON mode: the instructions must ask for JSON
    ) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        options: dict[str, Any] = {"system": system} if system else {}
        try:
            response = await self._client.messages.create(
                model=model,
                messages=[m for m in messages if m["role"] != "system"],
                max_tokens=max_tokens,
                timeout=timeout,
                **options,
            )
        except self._errors.failed as exc:
            raise self._errors.map(exc) from exc
        extra = extra_fields(response)
        if response.usage is None:
            raise ProviderError("bad_response", "the response has no token usage")
        text = "".join(block.text for block in response.content if block.type == "text")
        return Completion(
            text=text,
            finish_reason=_FINISH.get(response.stop_reason or "", "other"),  # type: ignore[arg-type]
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
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
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        options: dict[str, Any] = {"system": system} if system else {}
        try:
            async with self._client.messages.stream(
                model=model, messages=[m for m in messages if m["role"] != "system"],
                max_tokens=max_tokens, timeout=timeout, **options,
            ) as stream:
                try:
                    async for text in stream.text_stream:
                        if text:
                            await on_text(text)
                except Exception as exc:
                    if not isinstance(exc, self._errors.failed):  # on_text's own, or a bug
                        exc.emulated = EMULATOR_HEADER in stream.response.headers  # type: ignore[attr-defined]
                    raise
                message = await stream.get_final_message()
                emulated = EMULATOR_HEADER in stream.response.headers
        except self._errors.failed as exc:
            raise self._errors.map(exc) from exc
        if message.usage is None:
            raise ProviderError("bad_response", "the stream has no token usage")
        return Completion(
            text="".join(block.text for block in message.content if block.type == "text"),
            finish_reason=_FINISH.get(message.stop_reason or "", "other"),  # type: ignore[arg-type]
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            emulated=emulated,
        )
