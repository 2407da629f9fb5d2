"""The summary's window is whole UTC days whatever the session's time zone: the raw rows it
counts (time to first token, dead letters) are compared with the window's UTC midnight, as the
daily roll-ups are by UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest

from services.ledger import stats
from services.ledger.writer import Batch, LedgerWriter
from shared.messages import DeadLetterEvent, RequestEvent


def streamed(request_id: str, at: datetime) -> RequestEvent:
    return RequestEvent(
        request_id=request_id, received_at=at.timestamp(), finished_at=at.timestamp(),
        tenant="acme", source="online", status="ok", difficulty="simple", start_tier="simple",
        tier="simple", model_used="gpt-4o-mini", provider="openai", escalated=False,
        attempts=1, input_tokens=10, output_tokens=10, cost_usd=0.001,
        baseline_cost_usd=0.01, latency_ms=500.0, ttft_ms=120.0)


def dead_letter(seq: int, at: datetime) -> DeadLetterEvent:
    return DeadLetterEvent(subject="router.v1.jobs", stream_seq=seq, deliveries=5,
                           reason="test", body_bytes=10, at=at.timestamp())


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo"])
async def test_a_one_day_window_is_today_in_utc_in_any_session_time_zone(ledger_url, zone):
    midnight = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    today, yesterday = midnight + timedelta(minutes=30), midnight - timedelta(hours=4)
    async with await psycopg.AsyncConnection.connect(ledger_url, autocommit=True) as conn:
        await LedgerWriter(conn).write(Batch(
            requests=[streamed("r-today", today), streamed("r-yesterday", yesterday)],
            dead_letters=[dead_letter(1, today), dead_letter(2, yesterday)]))
        await conn.execute(f"SET TIME ZONE '{zone}'")

        summary = await stats.summary(conn, days=1)

    assert summary["requests"] == 1  # the roll-up, by UTC day
    assert summary["dead_letters"] == 1
    assert summary["ttft_ms"]["streamed"] == 1
