"""The cost summary: what router.v1.stats answers, `smart-router stats` prints and the dashboard
shows. One function reads the daily roll-ups, so all three show the same figures.

Savings have one definition, used for the totals, every breakdown, every day and the projection:
the routed cost and the baseline cost of the same answered requests (status ok). A failed
request has no answer to price at the baseline, so its cost is not set against one; it is shown
on its own, as what was spent on failed requests, and `spent_usd` is the whole bill.

`by_tenant` names at most TOP_TENANTS tenants, those that spent most in the window, and folds the
rest into one entry marked `"others": true` (`tenants` says how many): the reply must fit in one
NATS message and the dashboard's table in a page, whatever the number of tenants. The entries
still add up to the totals; `tenants_total` counts every tenant of the window.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from shared import db

PROJECTION_SCALES = (10_000, 100_000, 1_000_000)
PERCENTILES = (50, 95, 99)
TOP_TENANTS = 50  # by_tenant's named tenants, those that spent most; the rest are one entry
OTHERS = "(others)"  # that entry's `tenant`, beside `"others": true` and its `tenants`


@asynccontextmanager
async def snapshot(conn: psycopg.AsyncConnection, statement_timeout_ms: int) -> AsyncIterator[None]:
    """One read-only REPEATABLE READ transaction on `conn` (an autocommit connection): every
    query in it sees the ledger as of its first one, so a batch committed meanwhile shows in all
    the figures or in none. Each query is cut off after `statement_timeout_ms`."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        yield


async def summary(conn: psycopg.AsyncConnection, days: int = 30) -> dict:
    """Totals and breakdowns over the last `days` UTC days, today included. Run it in a
    snapshot(), or its figures may be of different moments."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    # Dead letters (raw rows) from the same UTC midnight: a date compared with a timestamptz
    # would be midnight in the session's time zone.
    since_at = datetime.combine(since, time(), UTC)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_BREAKDOWN, {"since": since})
        rows = await cur.fetchall()
        await cur.execute(_BY_TENANT, {"since": since, "top": TOP_TENANTS})
        tenant_rows = await cur.fetchall()
        await cur.execute(_LATENCY, {"since": since})
        histogram = [(r["bucket"], r["count"]) for r in await cur.fetchall()]
        await cur.execute(_TTFT, {"since": since})
        ttft = [(r["bucket"], r["count"]) for r in await cur.fetchall()]
        await cur.execute("SELECT count(*) AS n FROM dead_letters WHERE at >= %(since)s",
                          {"since": since_at})
        dead_letters = (await db.one_row(cur))["n"]
        await cur.execute(_CHECKS, {"since": since})
        checks = await db.one_row(cur)
    totals = _totals(rows)
    tenants_total = tenant_rows[0]["tenants_total"] if tenant_rows else 0
    return {
        "window_days": days,
        "since": since.isoformat(),
        **totals,
        "dead_letters": dead_letters,
        # Paid checks of answers (verifier, judge): already in cost_usd, shown apart here.
        "verification_cost_usd": float(checks["verification"]),
        # Judge sampling's comparisons (the top tier's answer, the judge's verdict): paid apart
        # from the requests, so in none of their figures; the whole bill counts them.
        "sampling_cost_usd": float(checks["sampling"]),
        "spent_usd": totals["spent_usd"] + float(checks["sampling"]),
        "latency_ms": _percentiles(histogram),
        "ttft_ms": _ttft(ttft),
        "by_model": _group(rows, "model_used"),
        "by_tier": _group(rows, "tier"),
        "by_tenant": _tenants(tenant_rows, tenants_total),
        "tenants_total": tenants_total,
        "projection": _projection(totals),
    }


_BREAKDOWN = """
SELECT model_used, tier, status, emulated,
       sum(requests)::bigint AS requests, sum(escalated)::bigint AS escalated,
       sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
       sum(escalation_cost_usd) AS escalation_cost_usd, sum(latency_ms_sum) AS latency_ms_sum
FROM daily_usage WHERE day >= %(since)s
GROUP BY model_used, tier, status, emulated
"""

# Per tenant among the TOP_TENANTS that spent most (failed requests' cost included), in that
# order (`rank`), and the other tenants' figures under a NULL rank; `tenants_total` counts every
# tenant (count(*) OVER () is taken before the LIMIT). One statement, so one snapshot.
_BY_TENANT = """
WITH per AS (  -- one pass over the window's rows: per tenant and status
    SELECT tenant, status, sum(requests)::bigint AS requests, sum(escalated)::bigint AS escalated,
           sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd
    FROM daily_usage WHERE day >= %(since)s GROUP BY tenant, status
), ranked AS (
    SELECT tenant, count(*) OVER () AS tenants_total,
           row_number() OVER (ORDER BY sum(cost_usd) DESC, sum(requests) DESC, tenant) AS rank
    FROM per GROUP BY tenant
)
SELECT CASE WHEN r.rank <= %(top)s THEN r.rank END AS rank,
       CASE WHEN r.rank <= %(top)s THEN p.tenant END AS tenant,
       max(r.tenants_total) AS tenants_total, p.status,
       sum(p.requests)::bigint AS requests, sum(p.escalated)::bigint AS escalated,
       sum(p.cost_usd) AS cost_usd, sum(p.baseline_cost_usd) AS baseline_cost_usd
FROM per p JOIN ranked r USING (tenant)
GROUP BY 1, 2, p.status
"""

_CHECKS = """
SELECT coalesce(sum(verification_cost_usd), 0) AS verification,
       coalesce(sum(sampling_cost_usd), 0) AS sampling
FROM daily_checks WHERE day >= %(since)s
"""

# Time to first token of streamed requests, from its daily histogram (as latency's).
_TTFT = """
SELECT bucket, sum(count)::bigint AS count FROM daily_ttft WHERE day >= %(since)s
GROUP BY bucket ORDER BY bucket
"""


def _ttft(histogram: list[tuple[int, int]]) -> dict:
    return {"streamed": sum(count for _, count in histogram), **_percentiles(histogram)}


_LATENCY = """
SELECT bucket, sum(count)::bigint AS count FROM daily_latency WHERE day >= %(since)s
GROUP BY bucket ORDER BY bucket
"""


def _totals(rows: list[dict]) -> dict:
    requests = sum(r["requests"] for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    ok_requests = sum(r["requests"] for r in ok)
    escalated = sum(r["escalated"] for r in rows)
    return {
        "requests": requests,
        "ok": ok_requests,
        "errors": requests - ok_requests,
        "emulated_requests": sum(r["requests"] for r in rows if r["emulated"]),
        **_savings(rows),
        "escalated": escalated,
        "escalation_rate": escalated / ok_requests if ok_requests else 0.0,
        "escalation_cost_usd": float(sum((r["escalation_cost_usd"] for r in rows), Decimal(0))),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "mean_latency_ms": (
            sum(r["latency_ms_sum"] for r in ok) / ok_requests if ok_requests else None
        ),
    }


def _savings(rows: list[dict]) -> dict:
    """The one definition of savings (see the module's docstring), for any set of roll-up rows."""
    cost = baseline = failed_cost = Decimal(0)
    for r in rows:
        if r["status"] == "ok":
            cost += r["cost_usd"]
            baseline += r["baseline_cost_usd"]
        else:
            failed_cost += r["cost_usd"]
    saved = baseline - cost
    return {
        "cost_usd": float(cost),
        "baseline_cost_usd": float(baseline),
        "saved_usd": float(saved),
        "savings_pct": _pct(saved, baseline),
        "failed_cost_usd": float(failed_cost),
        "spent_usd": float(cost + failed_cost),
    }


def _group(rows: list[dict], key: str) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key] or "(none)", []).append(r)
    out = [_entry(key, name, members) for name, members in groups.items()]
    return sorted(out, key=lambda g: -g["requests"])


def _entry(key: str, name: str, members: list[dict]) -> dict:
    return {key: name, "requests": sum(r["requests"] for r in members),
            "escalated": sum(r["escalated"] for r in members), **_savings(members)}


def _tenants(rows: list[dict], total: int) -> list[dict]:
    """The top tenants, most spent first, then the others' entry if there are others."""
    members: dict[int | None, list[dict]] = {}
    for r in rows:
        members.setdefault(r["rank"], []).append(r)
    named = sorted(rank for rank in members if rank is not None)
    out = [_entry("tenant", members[rank][0]["tenant"] or "(none)", members[rank])
           for rank in named]
    if None in members:
        out.append({"tenant": OTHERS, "others": True, "tenants": total - len(named),
                    **_entry("tenant", OTHERS, members[None])})
    return out


def _projection(totals: dict) -> list[dict]:
    """The original README's table: a month of answered requests at each scale with the observed
    mix and tokens, against sending every one of them to the baseline (top-tier) model."""
    if not totals["ok"]:
        return []
    cost_each = Decimal(totals["cost_usd"]) / totals["ok"]
    baseline_each = Decimal(totals["baseline_cost_usd"]) / totals["ok"]
    return [
        {
            "requests_per_month": scale,
            "cost_usd": round(float(cost_each * scale), 2),
            "baseline_cost_usd": round(float(baseline_each * scale), 2),
            "saved_usd": round(float((baseline_each - cost_each) * scale), 2),
        }
        for scale in PROJECTION_SCALES
    ]


async def daily(conn: psycopg.AsyncConnection, since: date) -> list[dict]:
    """Requests and savings per UTC day since `since`, by the same definition as the totals."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DAILY, {"since": since})
        rows = await cur.fetchall()
    days: dict[date, list[dict]] = {}
    for r in rows:
        days.setdefault(r["day"], []).append(r)
    return [{"day": day, "requests": sum(r["requests"] for r in members), **_savings(members)}
            for day, members in days.items()]


_DAILY = """
SELECT day, status, sum(requests)::bigint AS requests, sum(cost_usd) AS cost_usd,
       sum(baseline_cost_usd) AS baseline_cost_usd
FROM daily_usage WHERE day >= %(since)s
GROUP BY day, status ORDER BY day
"""


def _percentiles(histogram: list[tuple[int, int]]) -> dict:
    total = sum(count for _, count in histogram)
    result: dict[str, float | None] = {}
    for p in PERCENTILES:
        if not total:
            result[f"p{p}"] = None
            continue
        target, seen = total * p / 100, 0
        for bucket, count in histogram:
            seen += count
            if seen >= target:
                result[f"p{p}"] = round(math.exp(bucket / 20), 1)
                break
    return result


def _pct(part: Decimal, whole: Decimal) -> float:
    return round(float(part / whole * 100), 2) if whole else 0.0
