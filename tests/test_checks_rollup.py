"""The paid checks' and judge samples' costs stay in `stats` once the retention has deleted
their attempts: they are summed by day as the attempts are written (as the requests' costs
are), each call once however often its event comes."""

from __future__ import annotations

import time

from services.ledger import retention, stats
from services.ledger.writer import Batch, LedgerWriter
from shared.messages import AttemptEvent

DAY_S = 86_400.0


def attempt(call: str, outcome: str, cost: float, days_ago: float) -> AttemptEvent:
    return AttemptEvent(call_id=call, trace_id="t-checks", request_id="r-checks", n=1, hop=1,
                        model="gpt-4o", provider="openai", tier="complex",
                        outcome=outcome, cost_usd=cost,  # type: ignore[arg-type]
                        at=time.time() - days_ago * DAY_S)


async def test_checks_and_samples_outlive_their_attempts(ledger):
    old = [attempt("sample-1", "sample", 3.0, 500), attempt("verify-1", "verify", 0.5, 500),
           attempt("judge-1", "judge", 0.25, 500), attempt("answer-1", "ok", 9.0, 500)]
    await LedgerWriter(ledger).write(Batch(attempts=old))
    await LedgerWriter(ledger).write(Batch(attempts=old[:2]))  # delivered again: counted once
    before = await stats.summary(ledger, days=1000)

    assert await retention.apply(ledger, 400) == len(old)
    after = await stats.summary(ledger, days=1000)

    assert (before["sampling_cost_usd"], before["verification_cost_usd"]) == (3.0, 0.75)
    assert (after["sampling_cost_usd"], after["verification_cost_usd"]) == (3.0, 0.75)
    assert after["spent_usd"] == before["spent_usd"] == 3.0
    recent = await stats.summary(ledger, days=30)
    assert (recent["sampling_cost_usd"], recent["verification_cost_usd"]) == (0.0, 0.0)
