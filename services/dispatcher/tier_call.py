"""One hop of the dispatcher: ask one tier for an answer.

The tier's models are tried in order, so a 429 or a 5xx on the first answers from the second at
once; only when every model failed for a reason that waiting can fix does the tier go round
again, after the longest Retry-After it was given (capped by the config and the deadline).
Every call, failed or not, is an attempt the ledger will store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from shared.config import Limits, ModelRef, Tier
from shared.messages import Answer, Attempt, Envelope
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import ProviderError, Providers


@dataclass
class TierResult:
    attempts: list[Attempt]
    answer: Answer | None


class TierCaller:
    def __init__(self, providers: Providers, pricer: Pricer, limits: Limits,
                 want_logprobs: bool) -> None:
        self._providers = providers
        self._pricer = pricer
        self._limits = limits
        self._want_logprobs = want_logprobs

    async def call(self, envelope: Envelope, tier: Tier) -> TierResult:
        attempts: list[Attempt] = []
        request = envelope.request
        max_tokens = request.max_tokens or self._limits.default_max_tokens
        messages = [m.model_dump() for m in request.chat]
        input_bound = worst_case_input_tokens(m["content"] for m in messages)
        for round_no in range(self._limits.provider_retries + 1):
            waits: list[float] = []
            for ref in tier.models:
                n = len(envelope.attempts) + len(attempts) + 1
                remaining = envelope.seconds_left()
                if remaining <= 0:
                    return TierResult(attempts, None)
                spent = envelope.cost_usd + sum(a.cost_usd for a in attempts)
                if self._over_budget(ref, request.max_cost_usd, spent, input_bound,
                                     max_tokens):
                    attempts.append(self._attempt(n, envelope.hop, ref, tier, "skipped",
                                                  "budget: the call could exceed max_cost_usd"))
                    continue
                started = time.perf_counter()
                try:
                    completion = await self._providers.get(ref.provider).complete(
                        ref.model,
                        messages,
                        max_tokens=max_tokens,
                        temperature=request.temperature,
                        timeout=min(self._limits.provider_timeout_s, remaining),
                        logprobs=self._want_logprobs,
                    )
                except ProviderError as error:
                    attempts.append(self._attempt(n, envelope.hop, ref, tier, "error",
                                                  error.reason, started=started))
                    if error.retryable:
                        waits.append(error.retry_after or 2.0**round_no)
                    continue
                attempt = self._attempt(
                    n, envelope.hop, ref, tier, "ok", "", started=started,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                    cost_usd=self._pricer.cost(ref, completion.input_tokens,
                                               completion.output_tokens),
                    emulated=completion.emulated,
                )
                attempts.append(attempt)
                answer = Answer(
                    text=completion.text,
                    attempt=n,
                    tier_index=envelope.tier_index,
                    finish_reason=completion.finish_reason,
                    logprob_mean=completion.logprob_mean,
                )
                return TierResult(attempts, answer)
            if not waits or round_no == self._limits.provider_retries:
                break
            pause = min(max(waits), self._limits.retry_max_wait_s, envelope.seconds_left())
            await asyncio.sleep(max(pause, 0))
        return TierResult(attempts, None)

    def _over_budget(self, ref: ModelRef, max_cost: float | None, spent: float,
                     input_bound: int, max_tokens: int) -> bool:
        """Whether this call could take the request past max_cost_usd: its worst case (every
        input token the bound allows, every output token max_tokens allows) on top of what the
        request already spent. Costs recorded afterwards use the real usage."""
        if max_cost is None:
            return False
        worst = self._pricer.cost(ref, input_bound, max_tokens)
        return spent + worst > max_cost

    @staticmethod
    def _attempt(n: int, hop: int, ref: ModelRef, tier: Tier, outcome: str, reason: str, *,
                 started: float | None = None, **usage) -> Attempt:
        latency = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        return Attempt(n=n, hop=hop, model=ref.model, provider=ref.provider, tier=tier.name,
                       outcome=outcome, reason=reason, latency_ms=latency, **usage)
