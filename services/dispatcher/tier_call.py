"""One hop of the dispatcher: ask one tier for an answer.

The tier's models are tried in order, so a 429 or a 5xx on the first answers from the second at
once; only when every model failed for a reason that waiting can fix does the tier go round
again, after the longest Retry-After it was given (capped by the config and the deadline).
Every call, failed or not, is an attempt the ledger will store.

With a Relay (streaming.py) the calls are streamed: a weak opening ends the hop with that
opening as its answer (the escalator escalates it), a caller who left ends it with no answer
(with no call at all if it left before the hop began), and once the stream was released no
other model may take over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from shared.config import Limits, ModelRef, Tier
from shared.messages import Answer, Attempt, Envelope, Outcome
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import Completion, ProviderError, Providers

from .streaming import Relay, StreamStopped, WeakOpening, completion_of

# A whole answer's bound past the call's own timeout. The SDKs' timeouts bound each read, and
# their aiohttp transport none of a request body's writes: a provider that stops reading or
# trickles its answer would otherwise hold the call (and its message, kept alive) for ever.
CALL_BOUND_SLACK_S = 1.0


ESTIMATED = ("usage estimated (input at its bound, a token a piece): providers report it only "
             "at the end")


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

    async def call(self, envelope: Envelope, tier: Tier,
                   relay: Relay | None = None) -> TierResult:
        attempts: list[Attempt] = []
        request = envelope.request
        max_tokens = request.max_tokens or self._limits.default_max_tokens
        messages = [m.model_dump() for m in request.chat]
        input_bound = worst_case_input_tokens(m["content"] for m in messages)
        models = [r for r in tier.models if request.model is None or r.named(request.model)]
        for round_no in range(self._limits.provider_retries + 1):
            waits: list[float] = []
            for ref in models:
                n = len(envelope.attempts) + len(attempts) + 1
                remaining = envelope.seconds_left()
                if remaining <= 0 or (relay is not None and relay.cancelled):
                    return TierResult(attempts, None)  # past the deadline, or the caller left
                spent = envelope.cost_usd + sum(a.cost_usd for a in attempts)
                if self._over_budget(ref, request.max_cost_usd, spent, input_bound,
                                     max_tokens):
                    attempts.append(self._attempt(n, envelope.hop, ref, tier, Outcome.SKIPPED,
                                                  "budget: the call could exceed max_cost_usd"))
                    continue
                started = time.perf_counter()
                timeout = min(self._limits.provider_timeout_s, remaining)
                reason = ""
                try:
                    completion = await self._ask(ref, n, messages, max_tokens,
                                                 request.temperature, timeout, relay)
                except StreamStopped as stopped:
                    completion = completion_of(stopped, input_bound)
                    reason = f"stream stopped: {stopped.why}; {ESTIMATED}"
                    if not isinstance(stopped, WeakOpening):  # the caller left, or time ran out
                        attempts.append(self._attempt(
                            n, envelope.hop, ref, tier, Outcome.ERROR, reason, started=started,
                            **self._usage(ref, completion)))
                        return TierResult(attempts, None)
                except Exception as exc:
                    error = ProviderError.of(exc, ref.provider, ref.model)
                    attempts.append(self._failed(n, envelope.hop, ref, tier, error, started,
                                                 relay, input_bound))
                    if relay is not None and relay.released:
                        return TierResult(attempts, None)  # a released stream is not replaced
                    if error.retryable:
                        waits.append(error.retry_after or 2.0**round_no)
                    continue
                attempt = self._attempt(
                    n, envelope.hop, ref, tier, Outcome.OK, reason, started=started,
                    **self._usage(ref, completion),
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

    async def _ask(self, ref: ModelRef, n: int, messages: list[dict[str, str]], max_tokens: int,
                   temperature: float | None, timeout: float,
                   relay: Relay | None) -> Completion:
        if relay is not None:
            relay.begin(ref, n)  # before anything can fail: a failure bills this call's pieces only
        provider = self._providers.get(ref.provider)
        if relay is None:
            try:
                async with asyncio.timeout(timeout + CALL_BOUND_SLACK_S):
                    return await provider.complete(ref.model, messages, max_tokens=max_tokens,
                                                   temperature=temperature, timeout=timeout,
                                                   logprobs=self._want_logprobs)
            except TimeoutError as exc:
                raise ProviderError("timeout", "the provider did not answer in time") from exc
        return await relay.run(provider.stream(
            ref.model, messages, max_tokens=max_tokens, temperature=temperature,
            timeout=timeout, on_text=relay.on_text))

    def _failed(self, n: int, hop: int, ref: ModelRef, tier: Tier, error: ProviderError,
                started: float, relay: Relay | None, input_bound: int) -> Attempt:
        """A failed call's attempt: a stream that broke after some pieces is billed like a
        stopped one (the provider charges for what it sent), other failures at nothing."""
        received = relay.received() if relay is not None else None
        if received is None or not received.pieces:
            return self._attempt(n, hop, ref, tier, Outcome.ERROR, error.reason,
                                 started=started)
        return self._attempt(n, hop, ref, tier, Outcome.ERROR, f"{error.reason}; {ESTIMATED}",
                             started=started,
                             **self._usage(ref, completion_of(received, input_bound)))

    def _usage(self, ref: ModelRef, completion: Completion) -> dict:
        return {"input_tokens": completion.input_tokens,
                "output_tokens": completion.output_tokens,
                "cost_usd": self._pricer.cost(ref, completion.input_tokens,
                                              completion.output_tokens),
                "emulated": completion.emulated}

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
    def _attempt(n: int, hop: int, ref: ModelRef, tier: Tier, outcome: Outcome, reason: str, *,
                 started: float | None = None, **usage) -> Attempt:
        latency = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        return Attempt(n=n, hop=hop, model=ref.model, provider=ref.provider, tier=tier.name,
                       outcome=outcome, reason=reason, latency_ms=latency, **usage)
