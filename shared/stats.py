"""The cost summary: what router.v1.stats answers, `smart-router stats` prints and the dashboard
shows. One function reads the daily roll-ups, so all three show the same figures."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

PROJECTION_SCALES = (10_000, 100_000, 1_000_000)
PERCENTILES = (50, 95, 99)


async def summary(conn: psycopg.AsyncConnection, days: int = 30) -> dict:
    """Totals and breakdowns over the last `days` UTC days, today included."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_BREAKDOWN, {"since": since})
        rows = await cur.fetchall()
        await cur.execute(_LATENCY, {"since": since})
        histogram = [(r["bucket"], r["count"]) for r in await cur.fetchall()]
        await cur.execute("SELECT count(*) AS n FROM dead_letters WHERE at >= %(since)s",
                          {"since": since})
        dead_letters = (await cur.fetchone())["n"]
    totals = _totals(rows)
    return {
        "window_days": days,
        "since": since.isoformat(),
        **totals,
        "dead_letters": dead_letters,
        "latency_ms": _percentiles(histogram),
        "by_model": _group(rows, "model_used"),
        "by_tier": _group(rows, "tier"),
        "by_tenant": _group(rows, "tenant"),
        "projection": _projection(totals),
    }


_BREAKDOWN = """
SELECT tenant, model_used, tier, status, emulated,
       sum(requests)::bigint AS requests, sum(escalated)::bigint AS escalated,
       sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
       sum(escalation_cost_usd) AS escalation_cost_usd, sum(latency_ms_sum) AS latency_ms_sum
FROM daily_usage WHERE day >= %(since)s
GROUP BY tenant, model_used, tier, status, emulated
"""

_LATENCY = """
SELECT bucket, sum(count)::bigint AS count FROM daily_latency WHERE day >= %(since)s
GROUP BY bucket ORDER BY bucket
"""


def _totals(rows: list[dict]) -> dict:
    requests = sum(r["requests"] for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    ok_requests = sum(r["requests"] for r in ok)
    cost = sum((r["cost_usd"] for r in rows), Decimal(0))
    baseline = sum((r["baseline_cost_usd"] for r in rows), Decimal(0))
    escalated = sum(r["escalated"] for r in rows)
    saved = baseline - cost
    return {
        "requests": requests,
        "ok": ok_requests,
        "errors": requests - ok_requests,
        "emulated_requests": sum(r["requests"] for r in rows if r["emulated"]),
        "cost_usd": float(cost),
        "baseline_cost_usd": float(baseline),
        "saved_usd": float(saved),
        "savings_pct": _pct(saved, baseline),
        "escalated": escalated,
        "escalation_rate": escalated / ok_requests if ok_requests else 0.0,
        "escalation_cost_usd": float(sum((r["escalation_cost_usd"] for r in rows), Decimal(0))),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "mean_latency_ms": (
            sum(r["latency_ms_sum"] for r in ok) / ok_requests if ok_requests else None
        ),
    }


def _group(rows: list[dict], key: str) -> list[dict]:
    groups: dict[str, dict] = {}
    for r in rows:
        name = r[key] or "(none)"
        g = groups.setdefault(name, {key: name, "requests": 0, "escalated": 0,
                                     "cost_usd": Decimal(0), "baseline_cost_usd": Decimal(0)})
        g["requests"] += r["requests"]
        g["escalated"] += r["escalated"]
        g["cost_usd"] += r["cost_usd"]
        g["baseline_cost_usd"] += r["baseline_cost_usd"]
    out = []
    for g in sorted(groups.values(), key=lambda g: -g["requests"]):
        saved = g["baseline_cost_usd"] - g["cost_usd"]
        out.append(g | {"cost_usd": float(g["cost_usd"]),
                        "baseline_cost_usd": float(g["baseline_cost_usd"]),
                        "saved_usd": float(saved),
                        "savings_pct": _pct(saved, g["baseline_cost_usd"])})
    return out


def _projection(totals: dict) -> list[dict]:
    """The original README's table: a month at each scale with the observed mix and tokens,
    against sending every request to the baseline (top-tier) model."""
    if not totals["ok"]:
        return []
    cost_each = Decimal(totals["cost_usd"]) / totals["requests"]
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
