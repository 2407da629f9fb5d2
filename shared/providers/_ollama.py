"""Local models on Ollama, through the `ollama` SDK. Its errors are its own, not Stainless'."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx
import ollama

from ._base import EMULATOR_HEADER, Completion, OnText, ProviderError, mean

T = TypeVar("T")
_FINISH = {"stop": "stop", "length": "length"}

# The ollama client drops unknown body fields, so the emulator's mark is read from the response
# header by an httpx hook; the hook runs in the calling task, which then reads this variable.
_emulated: ContextVar[bool] = ContextVar("ollama_emulated", default=False)


async def _note_emulator(response: httpx.Response) -> None:
    _emulated.set(EMULATOR_HEADER in response.headers)


def client(host: str | None = None) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=host, event_hooks={"response": [_note_emulator]})


class Ollama:
    def __init__(self, client: ollama.AsyncClient) -> None:
        self._client = client

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
        options: dict[str, Any] = {"num_predict": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        response = await _ask(self._client.chat(
            model=model,
            messages=messages,
            options=options,
            logprobs=logprobs or None,
            format="json" if json_format else None,
        ), timeout)
        if response.prompt_eval_count is None or response.eval_count is None:
            raise ProviderError("bad_response", "the response has no token counts")
        return Completion(
            text=response.message.content or "",
            finish_reason=_FINISH.get(response.done_reason or "", "other"),  # type: ignore[arg-type]
            input_tokens=response.prompt_eval_count,
            output_tokens=response.eval_count,
            logprob_mean=mean([lp.logprob for lp in response.logprobs or ()]),
            emulated=_emulated.get(),
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
        options: dict[str, Any] = {"num_predict": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        pieces: list[str] = []
        last: ollama.ChatResponse | None = None
        parts = await _ask(self._client.chat(model=model, messages=messages, options=options,
                                             stream=True), timeout)
        # Each wait in this task (not wait_for's own), where the emulator hook marks it.
        while (part := await _ask(anext(parts, None), timeout)) is not None:
            last = part
            text = part.message.content
            if text:
                pieces.append(text)
                try:
                    await on_text(text)
                except Exception as exc:  # on_text's own reason to stop: as it is, marked
                    exc.emulated = _emulated.get()  # type: ignore[attr-defined]
                    raise
        if last is None or last.prompt_eval_count is None or last.eval_count is None:
            raise ProviderError("bad_response", "the stream has no token counts")
        return Completion(
            text="".join(pieces),
            finish_reason=_FINISH.get(last.done_reason or "", "other"),  # type: ignore[arg-type]
            input_tokens=last.prompt_eval_count,
            output_tokens=last.eval_count,
            emulated=_emulated.get(),
        )


async def _ask(call: Awaitable[T], timeout: float) -> T:
    """One wait on Ollama, bounded by `timeout`; what fails there is Ollama's or the network's
    failure, mapped by type (anything else is not, and passes as it is)."""
    try:
        async with asyncio.timeout(timeout):
            return await call
    except (TimeoutError, httpx.TimeoutException):
        raise ProviderError("timeout", "Ollama did not answer in time") from None
    except (ConnectionError, httpx.TransportError):  # the SDK turns ConnectError into this
        raise ProviderError("connection", "cannot reach Ollama") from None
    except ollama.ResponseError as exc:
        raise _map_status(exc) from exc
    except json.JSONDecodeError as exc:  # a body that is not JSON
        raise ProviderError("bad_response", f"{type(exc).__name__}: {exc}"[:200]) from exc


def _map_status(exc: ollama.ResponseError) -> ProviderError:
    if exc.status_code == 429:
        return ProviderError("rate_limited", "Ollama is busy (429)")
    if exc.status_code >= 500:
        return ProviderError("server_error", f"Ollama error ({exc.status_code})")
    return ProviderError("rejected", f"Ollama refused the call ({exc.status_code}): {exc.error}")
