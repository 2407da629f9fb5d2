"""Provider adapters behind one small interface: messages in; text, finish reason, token usage
and optional logprobs out. Each wraps its provider's official SDK, configured from the SDK's own
environment variables (API keys, OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GROQ_BASE_URL, OLLAMA_HOST).

`Providers` is the seam: the dispatcher asks it for a client by provider name, so a test can hand
it any object with a `complete` method.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping

from ._base import Completion, ProviderClient, ProviderError

__all__ = ["Completion", "ProviderClient", "ProviderError", "Providers"]

_KEY_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "groq": "GROQ_API_KEY"}


def _anthropic() -> ProviderClient:
    import anthropic

    from ._anthropic import Anthropic

    return Anthropic(anthropic.AsyncAnthropic(max_retries=0))


def _openai() -> ProviderClient:
    import openai

    from ._openai_compatible import OpenAICompatible

    return OpenAICompatible(openai.AsyncOpenAI(max_retries=0))


def _groq() -> ProviderClient:
    import groq

    from ._openai_compatible import OpenAICompatible

    return OpenAICompatible(groq.AsyncGroq(max_retries=0))


def _ollama() -> ProviderClient:
    from ._ollama import Ollama, client

    return Ollama(client())


_FACTORIES: dict[str, Callable[[], ProviderClient]] = {
    "anthropic": _anthropic,
    "openai": _openai,
    "groq": _groq,
    "ollama": _ollama,
}


class Providers:
    """One client per provider, made on first use: a missing key fails that provider's calls
    (and the tier falls back), not the whole service."""

    def __init__(self, clients: Mapping[str, ProviderClient] | None = None) -> None:
        self._clients: dict[str, ProviderClient] = dict(clients or {})

    def prepare(self, providers: set[str]) -> None:
        """Make the clients now, at start-up, so the first request does not pay for the SDK
        import; a provider without its key is left to fail (and fall back) at call time."""
        for provider in providers:
            with contextlib.suppress(ProviderError):
                self.get(provider)

    def get(self, provider: str) -> ProviderClient:
        client = self._clients.get(provider)
        if client is None:
            key_var = _KEY_VARS.get(provider)
            if key_var and not os.environ.get(key_var):
                raise ProviderError("rejected", f"{key_var} is not set")
            client = self._clients[provider] = _FACTORIES[provider]()
        return client
