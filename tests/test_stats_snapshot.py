"""The dashboard's figures and the stats reply are each of one instant: their queries run in one
read-only REPEATABLE READ transaction, with a statement timeout, so a batch the ledger commits
between two of them shows in every figure or in none."""

from __future__ import annotations

import psycopg
import pytest

from dashboard import queries
from services.ledger import stats
from services.ledger.stats_responder import STATEMENT_TIMEOUT_MS
from shared import subjects
from tests.stage_helpers import stats_responder

TODAY = "(now() AT TIME ZONE 'UTC')::date"


@pytest.fixture
def ledger_url(ledger_url: str) -> str:
    """The test's database (conftest's), with a day of usage in it."""
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO daily_usage VALUES ({TODAY}, 'a', 'm', 'simple', 'ok', false, "
                     "10, 0, 1, 1, 1, 2, 0, 10)")
    return ledger_url


SETTINGS = ("SELECT current_setting('transaction_isolation'), "
            "current_setting('transaction_read_only'), current_setting('statement_timeout')")


async def test_a_refresh_reads_one_snapshot(ledger, ledger_url, monkeypatch):
    """The ledger's writer commits 5 more requests after the summary is read, before the cost
    per day is: the chart must not show them while the cards do not."""
    read_daily, seen = stats.daily, []

    async def daily_after_a_commit(conn, since):
        async with await psycopg.AsyncConnection.connect(ledger_url, autocommit=True) as writer:
            await writer.execute("UPDATE daily_usage SET requests = requests + 5, "
                                 "cost_usd = cost_usd + 1")
        seen.append(await (await conn.execute(SETTINGS)).fetchone())
        return await read_daily(conn, since)

    monkeypatch.setattr(stats, "daily", daily_after_a_commit)
    snapshot = await queries.read_snapshot(ledger, days=7, statement_timeout_ms=1_500)

    assert snapshot.summary["requests"] == sum(day["requests"] for day in snapshot.daily) == 10
    assert snapshot.summary["cost_usd"] == sum(day["cost_usd"] for day in snapshot.daily) == 1
    assert sum(row["requests"] for row in snapshot.by_model) == 10
    assert seen == [("repeatable read", "on", "1500ms")]
    # The transaction is over: the connection is back to autocommit, with no timeout.
    assert ledger.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert (await (await ledger.execute("SHOW statement_timeout")).fetchone()) == ("0",)

    monkeypatch.undo()
    after = await queries.read_snapshot(ledger, days=7)  # the next refresh shows the batch
    assert after.summary["requests"] == sum(day["requests"] for day in after.daily) == 15


async def test_the_stats_reply_reads_one_snapshot(ledger_url, monkeypatch):
    summary, seen = stats.summary, []

    async def summary_and_settings(conn, days):
        seen.append(await (await conn.execute(SETTINGS)).fetchone())
        return await summary(conn, days)

    monkeypatch.setattr(stats, "summary", summary_and_settings)
    async with stats_responder(ledger_url) as (_, client):
        await client.request(b'{"days": 1}', subjects.STATS)

    assert seen == [("repeatable read", "on", f"{STATEMENT_TIMEOUT_MS // 1000}s")]
