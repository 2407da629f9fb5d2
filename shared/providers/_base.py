"""The one shape every provider adapter returns or raises, whatever its SDK."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from shared.messages import FinishReason

log = structlog.get_logger(__name__)

ErrorKind = Literal[
    "rate_limited", "server_error", "timeout", "connection", "bad_response", "rejected"
]
RETRYABLE: frozenset[ErrorKind] = frozenset(
    {"rate_limited", "server_error", "timeout", "connection"}
)
MAX_TOKENS_REPORTED = 2**31 - 1  # the ledger's integer columns


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's answer, checked where every adapter makes it: its text well-formed (a
    lone surrogate, from a pair split across two pieces of a stream or a provider's bad escape,
    fails every UTF-8 encode after it) and its token counts whole numbers the ledger can hold
    (the pricing refuses a negative one); ProviderError("bad_response") otherwise."""

    text: str
    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    logprob_mean: float | None = None
    emulated: bool = False
    # Fields of the provider's response outside its documented schema (Groq's x_groq, the
    # emulator's marks...); empty for Ollama, whose SDK drops them.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens"):
            count = getattr(self, name)
            if type(count) is not int or not 0 <= count <= MAX_TOKENS_REPORTED:
                raise ProviderError("bad_response", f"the provider reported {name} = "
                                    f"{str(count)[:40]}, not a token count")
        if self.logprob_mean is not None and not math.isfinite(self.logprob_mean):
            object.__setattr__(self, "logprob_mean", None)
        object.__setattr__(self, "text", well_formed(self.text))


def well_formed(text: str) -> str:
    """`text` with each surrogate pair joined into its character and each lone surrogate
    replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class ProviderError(Exception):
    """A failed call, classified so the dispatcher knows whether waiting could help."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        # A provider's Retry-After as given, if it is a wait at all (`nan` slept for ever).
        valid = retry_after is not None and math.isfinite(retry_after) and retry_after >= 0
        self.retry_after = retry_after if valid else None

    @classmethod
    def of(cls, exc: Exception, provider: str, model: str) -> ProviderError:
        """A call's failure as the ledger records it: a ProviderError as raised, anything else
        (an SDK's own failure on a malformed stream, a bug) as a bad response, logged. The call
        may have been paid for: raised on, it would fail the hop, whose redelivery pays again."""
        if isinstance(exc, ProviderError):
            return exc
        log.error("provider.unexpected_error", provider=provider, model=model,
                  error=type(exc).__name__)
        return cls("bad_response", f"unexpected {type(exc).__name__}: {str(exc)[:150]}")

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
