"""The optional judge: a cheap model asked whether an answer addresses the prompt. It catches
what phrase lists cannot (a fluent answer to another question), at the price of one more call,
which is recorded as an attempt (outcome "judge") so its cost shows in the ledger."""

from __future__ import annotations

import functools
import time

from shared.config import JudgeConfig, ModelRef
from shared.messages import Attempt, Outcome
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import ProviderError, Providers

from .calls import json_verdict, tagged

EXCERPT_CHARS = 2000
VERDICT_TOKENS = 20
INSTRUCTIONS = (
    "You check an AI assistant's answer. Reply with JSON only: "
    '{"addresses": true} if the answer actually answers the question, or '
    '{"addresses": false} if it dodges it, hedges instead of answering, refuses, or answers '
    "something else."
)


class Judge:
    def __init__(self, config: JudgeConfig, providers: Providers, pricer: Pricer) -> None:
        self._config = config
        self._ref = ModelRef(provider=config.provider, model=config.model)
        self._providers = providers
        self._pricer = pricer

    async def addresses(self, prompt: str, answer: str, *, n: int, hop: int, tier: str,
                        seconds_left: float) -> tuple[bool | None, Attempt]:
        """Whether the answer addresses the prompt (None: the judge could not say), and the
        attempt that records the call, made within the request's `seconds_left`."""
        messages = _messages(prompt, answer)
        attempt = functools.partial(Attempt, n=n, hop=hop, model=self._config.model,
                                    provider=self._config.provider, tier=tier,
                                    outcome=Outcome.JUDGE)
        started = time.perf_counter()
        try:
            completion = await self._providers.get(self._config.provider).complete(
                self._config.model, messages, max_tokens=VERDICT_TOKENS, temperature=0.0,
                timeout=min(self._config.timeout_s, seconds_left), logprobs=False,
                json_format=True,
            )
        except Exception as exc:
            error = ProviderError.of(exc, self._config.provider, self._config.model)
            return None, attempt(reason=error.reason, latency_ms=_ms(started))
        verdict = json_verdict(completion.text, "addresses")
        return verdict, attempt(
            reason={True: "addresses the prompt", False: "does not address the prompt",
                    None: "unreadable verdict"}[verdict],
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
            cost_usd=self._pricer.cost(self._ref, completion.input_tokens,
                                       completion.output_tokens),
            latency_ms=_ms(started), emulated=completion.emulated,
        )


    def worst_cost(self, prompt: str, answer: str) -> float:
        """What the call could cost at most: its whole input, and every verdict token."""
        contents = (m["content"] for m in _messages(prompt, answer))
        return self._pricer.cost(self._ref, worst_case_input_tokens(contents), VERDICT_TOKENS)


def _messages(prompt: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": tagged(question=prompt[:EXCERPT_CHARS],
                                           answer=answer[:EXCERPT_CHARS])},
    ]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
