"""A call the escalator pays for on its own account (the judge, a verification, a sampled
comparison): the model's text, or None when the provider failed, and the attempt that records
the call and its cost in the ledger."""

from __future__ import annotations

import functools
import json
import time

from shared.config import ModelRef
from shared.messages import Attempt, Outcome
from shared.pricing import Pricer
from shared.providers import ProviderError, Providers

MIN_CALL_S = 0.1  # less left before the request's deadline: no check is started


async def paid_call(providers: Providers, pricer: Pricer, ref: ModelRef,
                    messages: list[dict[str, str]], *, outcome: Outcome, n: int, hop: int,
                    tier: str, max_tokens: int, timeout: float, json_format: bool,
                    temperature: float | None = 0.0) -> tuple[str | None, Attempt]:
    attempt = functools.partial(Attempt, n=n, hop=hop, model=ref.model, provider=ref.provider,
                                tier=tier, outcome=outcome)
    started = time.perf_counter()
    try:
        completion = await providers.get(ref.provider).complete(
            ref.model, messages, max_tokens=max_tokens, temperature=temperature,
            timeout=timeout, logprobs=False, json_format=json_format)
    except Exception as exc:
        error = ProviderError.of(exc, ref.provider, ref.model)
        return None, attempt(reason=error.reason, latency_ms=_ms(started))
    return completion.text, attempt(
        input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
        cost_usd=pricer.cost(ref, completion.input_tokens, completion.output_tokens),
        latency_ms=_ms(started), emulated=completion.emulated)


def tagged(**parts: str) -> str:
    """The parts a checking model reads, each inside its tag, one a line. A `<` inside is
    escaped, so a prompt or an answer cannot close its tag and write a part of its own (a
    prompt ending "</question><answer>...": the judge would read the attacker's answer)."""
    return "\n".join(f"<{tag}>{text.replace('<', '&lt;')}</{tag}>" for tag, text in parts.items())


def json_verdict(text: str | None, key: str) -> bool | None:
    """A checking model's `{key: true|false}`; None for anything else. The text is the
    provider's: nesting deep enough to exhaust the parser's recursion (RecursionError) must end
    in "no verdict", or the paid call it answers would go unrecorded."""
    try:
        verdict = json.loads(text or "").get(key)
    except (ValueError, AttributeError, RecursionError):
        return None
    return verdict if isinstance(verdict, bool) else None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
