"""What one refresh reads: the cost summary that router.v1.stats and `smart-router stats` also
return and its cost per day (the ledger's stats), plus the dashboard's own two queries. Each
reads the daily roll-ups or walks an index (at most 50 rows of `requests`; the window's dead
letters, to count them), so a refresh costs the same with a thousand or a billion requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import psycopg
from psycopg.rows import dict_row

from services.ledger import stats

RECENT_LIMIT = 50
STATEMENT_TIMEOUT_MS = 4_000  # the Ledger passes its own bound on a whole read
PROMPT_PREVIEW_CHARS = 120

# The mix of answered requests, by model and by tier, from the same roll-up. A failed request
# has no model (and sometimes no tier): it is counted on its own card, not as a model called "".
ANSWERED_MIX = """
SELECT model_used, tier, GROUPING(tier) = 1 AS by_model, sum(requests)::bigint AS requests,
       sum(cost_usd) AS cost_usd
FROM daily_usage WHERE day >= %(since)s AND status = 'ok'
GROUP BY GROUPING SETS ((model_used), (tier)) ORDER BY requests DESC
"""

# The newest requests: a walk down requests_by_time that stops after LIMIT rows. Prompt text is
# only there when the operator asked the ledger to keep it; even then, only its start is shown.
RECENT_REQUESTS = """
SELECT finished_at, request_id, tenant, difficulty, tier, model_used, cost_usd, saved_usd,
       latency_ms, escalated, emulated, status, error_code,
       left(prompt_text, %(preview)s) AS prompt_preview
FROM requests WHERE finished_at >= %(since)s
ORDER BY finished_at DESC LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Snapshot:
    summary: dict  # services.ledger.stats.summary(): totals, breakdowns, latency, projection
    daily: list[dict]  # services.ledger.stats.daily(): per day, requests and the summary's figures
    by_model: list[dict]  # answered requests per model, most first: requests, cost_usd
    by_tier: list[dict]  # answered requests per tier, most first: requests, cost_usd
    recent: list[dict]  # the newest requests of the window, newest first


async def read_snapshot(conn: psycopg.AsyncConnection, days: int,
                        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Snapshot:
    """Every query in one read-only snapshot (stats.snapshot), so the cards, the charts and the
    tables show the ledger as of one instant."""
    async with stats.snapshot(conn, statement_timeout_ms):
        summary = await stats.summary(conn, days)
        since = date.fromisoformat(summary["since"])  # the summary's window, to the day
        daily = await stats.daily(conn, since)  # cost per day by the summary's savings rule
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(ANSWERED_MIX, {"since": since})
            mix = await cur.fetchall()
            await cur.execute(RECENT_REQUESTS, {
                "since": datetime.combine(since, time(), UTC), "limit": RECENT_LIMIT,
                "preview": PROMPT_PREVIEW_CHARS,
            })
            recent = await cur.fetchall()
    return Snapshot(summary, daily, by_model=[row for row in mix if row["by_model"]],
                    by_tier=[row for row in mix if not row["by_model"]], recent=recent)
