"""Synthetic ledger events, shaped like the pipeline's: a request and its attempts."""

from __future__ import annotations

import random
import time

from shared.config import Difficulty, Provider
from shared.messages import AttemptEvent, Outcome, RequestEvent

MODELS: tuple[tuple[Difficulty, Provider, str], ...] = (("simple", "anthropic", "claude-haiku-4-5"),
          ("medium", "groq", "llama-3.3-70b-versatile"),
          ("complex", "openai", "gpt-4o"))


def request_with_attempts(request_id: str, job_id: str,
                          rng: random.Random) -> list[RequestEvent | AttemptEvent]:
    """One request's events: one or two attempts (an escalation), then the request row."""
    now = time.time()
    start = rng.randrange(3)
    tiers = MODELS[start:start + rng.choice((1, 1, 1, 2))]
    attempts = [
        AttemptEvent(
            trace_id=request_id, request_id=request_id, n=n, hop=n, model=model,
            provider=provider, tier=tier,
            outcome=Outcome.OK if n == len(tiers) else Outcome.WEAK, reason="" if n == len(tiers)
            else "hedging", input_tokens=rng.randint(10, 800), output_tokens=rng.randint(5, 600),
            cost_usd=rng.uniform(1e-5, 5e-3), latency_ms=rng.uniform(50, 2000), emulated=True,
            tenant=rng.choice(("acme", "globex", None)), at=now,
        )
        for n, (tier, provider, model) in enumerate(tiers, start=1)
    ]
    served = attempts[-1]
    cost = sum(a.cost_usd for a in attempts)
    request = RequestEvent(
        trace_id=request_id, request_id=request_id, received_at=now - 1, finished_at=now,
        tenant=served.tenant,
        source="batch", job_id=job_id, status="ok", difficulty=MODELS[start][0],
        classifier_backend="local", classifier_confidence=0.9, start_tier=MODELS[start][0],
        tier=served.tier, model_used=served.model, provider=served.provider,
        escalated=len(attempts) > 1, attempts=len(attempts),
        input_tokens=sum(a.input_tokens for a in attempts),
        output_tokens=sum(a.output_tokens for a in attempts), cost_usd=cost,
        baseline_cost_usd=cost * rng.uniform(1, 8), escalation_cost_usd=cost - served.cost_usd,
        latency_ms=rng.uniform(100, 3000), provider_latency_ms=sum(a.latency_ms for a in attempts),
        emulated=True, prompt_sha256="0" * 64, prompt_chars=rng.randint(10, 4000),
    )
    return [*attempts, request]
