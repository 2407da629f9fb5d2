"""The one shape every provider adapter returns or raises, whatever its SDK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.messages import FinishReason

ErrorKind = Literal[
    "rate_limited", "server_error", "timeout", "connection", "bad_response", "rejected"
]
RETRYABLE: frozenset[ErrorKind] = frozenset(
    {"rate_limited", "server_error", "timeout", "connection"}
)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    logprob_mean: float | None = None
    emulated: bool = False
    # Fields of the provider's response outside its documented schema (Groq's x_groq, the
    # emulator's marks...); empty for Ollama, whose SDK drops them.
    extra: Mapping[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A failed call, classified so the dispatcher knows whether waiting could help."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def reason(self) -> str:
        """What the attempt records: the category the escalator acts on, then the detail."""
        return f"provider_error ({self.kind}): {self}"[:300]


# Called with each piece of a streamed answer as it arrives; raising from it stops the stream
# (and the provider call: the SDK closes the connection). Its exception leaves the adapter as
# it is, with `emulated` set to whether the provider emulator served the call.
OnText = Callable[[str], Awaitable[None]]
EMULATOR_HEADER = "x-emulator"  # the provider emulator marks every response it serves


class ProviderClient(Protocol):
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
    ) -> Completion: ...

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
        """The same call streamed: `on_text` gets each piece, the Completion the whole.
        `timeout` bounds each wait for the next piece, not the whole answer."""
        ...


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
