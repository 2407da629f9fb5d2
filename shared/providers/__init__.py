"""Provider adapters behind one small interface: messages in; text, finish reason, token usage
and optional logprobs out. Each wraps its provider's official SDK, configured from the SDK's own
environment variables (API keys, OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GROQ_BASE_URL, OLLAMA_HOST).

`Providers` is the seam: the dispatcher asks it for a client by provider name, so a test can hand
it any object with a `complete` method.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ._base import Completion, ProviderClient, ProviderError, well_formed

__all__ = ["Completion", "ProviderClient", "ProviderError", "Providers", "well_formed"]

_KEY_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "groq": "GROQ_API_KEY"}


def _pooled(sdk: Any, connections: int) -> Any:
    """The SDK's own aiohttp-backed client (groq's through its `aiohttp` extra): a call costs
    0.4-0.5 ms less CPU than on the default httpx transport (docs/benchmarks.md). Up to
    `connections` per client, each kept alive 30 s."""
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=30
    )
    return sdk.DefaultAioHttpClient(limits=limits)


def _anthropic(connections: int) -> _SdkAdapter:
    import anthropic

    from ._anthropic import Anthropic
    from ._stainless import SdkErrors

    return Anthropic(anthropic.AsyncAnthropic(
        max_retries=0, http_client=_pooled(anthropic, connections)), SdkErrors.of(anthropic))


def _openai(connections: int) -> _SdkAdapter:
    import openai

    from ._openai_compatible import OpenAICompatible
    from ._stainless import SdkErrors

    return OpenAICompatible(openai.AsyncOpenAI(
        max_retries=0, http_client=_pooled(openai, connections)), SdkErrors.of(openai))


def _groq(connections: int) -> _SdkAdapter:
    import groq

    from ._openai_compatible import OpenAICompatible
    from ._stainless import SdkErrors

    return OpenAICompatible(groq.AsyncGroq(max_retries=0, http_client=_pooled(groq, connections)),
                            SdkErrors.of(groq), usage_in_x_groq=True)


def _ollama(connections: int) -> _SdkAdapter:
    from ._ollama import Ollama, client

    return Ollama(client())


class _SdkAdapter(ProviderClient, Protocol):
    """An adapter made here, around an SDK client it owns."""

    async def aclose(self) -> None: ...


_FACTORIES: dict[str, Callable[[int], _SdkAdapter]] = {
    "anthropic": _anthropic,
    "openai": _openai,
    "groq": _groq,
    "ollama": _ollama,
}


CONNECTIONS_PER_CLIENT = 64


class Providers:
    """Clients per provider, made on first use: a missing key fails that provider's calls (and
    the tier falls back), not the whole service.

    For many calls in flight a provider gets several SDK clients, used in turn, each with at
    most CONNECTIONS_PER_CLIENT connections. That was measured on httpx, whose pool scans all
    its connections for every request (one client with hundreds of connections spent more CPU
    on its pool than on the calls); aiohttp's pool does not scan, and the sharding is kept
    there as it was, not measured again."""

    def __init__(self, clients: Mapping[str, ProviderClient] | None = None,
                 connections: int = CONNECTIONS_PER_CLIENT) -> None:
        self._clients: dict[str, ProviderClient] = dict(clients or {})
        self._shards = max(1, -(-connections // CONNECTIONS_PER_CLIENT))
        self._pools: dict[str, itertools.cycle] = {}
        self._made: list[_SdkAdapter] = []
        self._closed = False

    def prepare(self, providers: set[str]) -> None:
        """Make the clients now, at start-up, so the first request does not pay for the SDK
        import; a provider without its key is left to fail (and fall back) at call time."""
        for provider in providers:
            with contextlib.suppress(ProviderError):
                self.get(provider)

    def get(self, provider: str) -> ProviderClient:
        client = self._clients.get(provider)
        if client is not None:
            return client
        pool = self._pools.get(provider)
        if pool is None:
            if self._closed:  # a client made now would never be closed
                raise ProviderError("rejected", "the service is stopping")
            key_var = _KEY_VARS.get(provider)
            if key_var and not os.environ.get(key_var):
                raise ProviderError("rejected", f"{key_var} is not set")
            shards = [_FACTORIES[provider](CONNECTIONS_PER_CLIENT) for _ in range(self._shards)]
            self._made += shards
            pool = self._pools[provider] = itertools.cycle(shards)
        return next(pool)

    async def aclose(self) -> None:
        """Close the SDK clients made here (their connection pools), at the service's stop:
        an aiohttp session left open is reported as a leak when the process ends."""
        self._closed = True
        made, self._made, self._pools = self._made, [], {}
        failures = []
        for client in made:
            try:
                await client.aclose()
            except Exception as exc:  # the others are closed all the same
                failures.append(exc)
        if failures:
            raise failures[0]
