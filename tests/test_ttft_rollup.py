"""Time to first token comes from a daily histogram (daily_ttft), as latency does: `stats`
reads no raw request to show it, so a summary costs the same at any number of streamed requests,
and the figures outlive the retention. The migration fills it from the requests already kept."""

from __future__ import annotations

import time

from services.ledger import retention, stats
from services.ledger.writer import Batch, LedgerWriter
from shared import db
from shared.messages import RequestEvent

DAY_S = 86_400.0
MIGRATION = db.MIGRATIONS / "0008.daily-ttft.sql"


def request(i: int, ttft_ms: float | None, days_ago: float = 0) -> RequestEvent:
    at = time.time() - days_ago * DAY_S
    return RequestEvent(
        request_id=f"ttft-{i}", received_at=at - 1, finished_at=at, tenant="acme",
        source="online", status="ok", difficulty="simple", start_tier="simple", tier="simple",
        model_used="gpt-4o-mini", provider="openai", escalated=False, attempts=1,
        input_tokens=10, output_tokens=10, cost_usd=0.001, baseline_cost_usd=0.01,
        latency_ms=1000.0, ttft_ms=ttft_ms)


# 100 streamed requests, 1 to 100 x 10 ms, and 20 not streamed.
STREAMED = [request(i, 10.0 * i) for i in range(1, 101)]
WHOLE = [request(1000 + i, None) for i in range(20)]


def close(shown: float, exact: float) -> bool:
    """A histogram bucket is about 5% wide: its value is within 2.5% of any value in it."""
    return abs(shown - exact) <= 0.026 * exact


async def test_the_percentiles_come_from_the_daily_histogram(ledger):
    await LedgerWriter(ledger).write(Batch(requests=STREAMED + WHOLE))
    await LedgerWriter(ledger).write(Batch(requests=STREAMED[:10]))  # redelivered: once

    ttft = (await stats.summary(ledger, days=1))["ttft_ms"]

    assert ttft["streamed"] == 100
    assert close(ttft["p50"], 500) and close(ttft["p95"], 950) and close(ttft["p99"], 990)
    rolled = await (await ledger.execute("SELECT sum(count) FROM daily_ttft")).fetchone()
    assert rolled == (100,)


async def test_the_figures_outlive_the_raw_rows(ledger):
    await LedgerWriter(ledger).write(Batch(requests=[request(i, 200.0, days_ago=500)
                                                     for i in range(5)]))
    before = (await stats.summary(ledger, days=1000))["ttft_ms"]

    assert await retention.apply(ledger, 400) == 5
    after = (await stats.summary(ledger, days=1000))["ttft_ms"]

    assert before == after and after["streamed"] == 5 and close(after["p50"], 200)
    assert (await stats.summary(ledger, days=30))["ttft_ms"] == {
        "streamed": 0, "p50": None, "p95": None, "p99": None}


async def test_the_migration_fills_the_histogram_from_the_requests_kept(ledger):
    await LedgerWriter(ledger).write(Batch(requests=STREAMED + WHOLE))
    written = await (await ledger.execute(
        "SELECT day, bucket, count FROM daily_ttft ORDER BY 1, 2")).fetchall()
    await ledger.execute("DELETE FROM daily_ttft")

    backfill = MIGRATION.read_text()
    await ledger.execute(backfill[backfill.index("INSERT INTO daily_ttft"):])

    assert await (await ledger.execute(
        "SELECT day, bucket, count FROM daily_ttft ORDER BY 1, 2")).fetchall() == written
