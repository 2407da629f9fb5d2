"""The cost summary stays one NATS message and the dashboard's tenant table a page, whatever the
number of tenants: `by_tenant` names the tenants that spent most and sums the rest in one entry
marked `others`; a summary that would still not fit is answered with an error, not silence."""

from __future__ import annotations

import json

import psycopg
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from dashboard import callbacks, queries
from services.ledger import stats
from services.ledger.stats_responder import StatsResponder
from shared import subjects
from smart_router import render

NATS_MAX_PAYLOAD = 1_048_576  # nats-server's default

# Today, tenant-g paid g/10,000 dollars for one answered request (against a baseline of twice
# that) and each third tenant g/10,000,000 more for a failed one: tenant-N spent most.
TENANTS = """
INSERT INTO daily_usage
SELECT (now() AT TIME ZONE 'UTC')::date, 'tenant-' || g, 'gpt-4o', 'complex', status, false,
       1, 0, 10, 10, CASE status WHEN 'ok' THEN g / 1e4 ELSE g / 1e7 END,
       CASE status WHEN 'ok' THEN g / 5e3 ELSE 0 END, 0, 100
FROM generate_series(1, %(n)s) g,
     LATERAL (SELECT 'ok' AS status UNION ALL SELECT 'error' WHERE g %% 3 = 0) s
"""


async def tenants(conn: psycopg.AsyncConnection, n: int) -> None:
    await conn.execute(TENANTS, {"n": n})


async def test_by_tenant_names_the_top_spenders_and_sums_the_others(ledger):
    extra = 25
    n = stats.TOP_TENANTS + extra
    await tenants(ledger, n)

    summary = await stats.summary(ledger, days=1)

    *named, others = summary["by_tenant"]
    assert summary["tenants_total"] == n
    assert [row["tenant"] for row in named] == [f"tenant-{g}" for g in range(n, extra, -1)]
    assert not any(row.get("others") for row in named)
    assert (others["tenant"], others["others"], others["tenants"]) == (stats.OTHERS, True, extra)
    assert others["requests"] == extra + extra // 3
    # The entries still add up to the totals, the others' included.
    for figure in ("requests", "cost_usd", "baseline_cost_usd", "failed_cost_usd"):
        assert sum(row[figure] for row in summary["by_tenant"]) == pytest.approx(summary[figure])
    assert others["cost_usd"] == pytest.approx(sum(range(1, extra + 1)) / 1e4)
    assert others["failed_cost_usd"] == pytest.approx(sum(range(3, extra + 1, 3)) / 1e7)

    # `smart-router stats` and the dashboard show the same rows, the others as one.
    printed = render.stats(summary)
    assert f"by tenant (top of {n})" in printed and f"({extra} other tenants)" in printed
    page = callbacks.render(await queries.read_snapshot(ledger, days=1))
    rows = page["tenants"].children[1].children
    assert len(rows) == stats.TOP_TENANTS + 1
    assert rows[0].children[0].children == f"tenant-{n}"
    assert rows[-1].children[0].children == f"{extra} other tenants"


async def test_a_few_tenants_are_all_named(ledger):
    await tenants(ledger, 3)

    summary = await stats.summary(ledger, days=1)

    assert summary["tenants_total"] == 3
    assert [row["tenant"] for row in summary["by_tenant"]] == ["tenant-3", "tenant-2", "tenant-1"]
    assert "top of" not in render.stats(summary)


async def test_an_empty_window_has_no_tenant_and_no_percentile(ledger):
    summary = await stats.summary(ledger, days=1)

    assert (summary["by_tenant"], summary["tenants_total"]) == ([], 0)
    printed = render.stats(summary)
    assert "latency ms: p50 -  p95 -  p99 -" in printed
    assert "(0 streamed): p50 -  p95 -  p99 -" in printed
    assert "None" not in printed


async def test_twenty_thousand_tenants_fit_in_one_message(ledger):
    """Before, the reply grew by ~171 bytes a tenant and passed max_payload near 6,100."""
    await tenants(ledger, 20_000)

    summary = await stats.summary(ledger, days=1)

    assert len(json.dumps(summary).encode()) < 64 * 1024
    assert len(summary["by_tenant"]) == stats.TOP_TENANTS + 1
    assert summary["tenants_total"] == 20_000


async def test_a_summary_over_max_payload_is_answered_with_an_error(ledger, ledger_url):
    """Through the responder, on FastStream's in-memory broker: with a server whose max_payload
    the summary passes, the caller hears why instead of waiting for its timeout."""
    await tenants(ledger, 3)
    limits = iter([NATS_MAX_PAYLOAD, 2_000])
    responder = StatsResponder(ledger_url, lambda: next(limits))
    broker = NatsBroker()
    broker.subscriber(subjects.STATS)(responder.on_stats)
    await responder.open()
    try:
        async with TestNatsBroker(broker) as test_broker:
            fits = json.loads((await test_broker.request(b'{"days": 1}', subjects.STATS)).body)
            over = json.loads((await test_broker.request(b'{"days": 1}', subjects.STATS)).body)
    finally:
        await responder.close()

    assert fits["tenants_total"] == 3
    assert over["error"]["code"] == "internal_error"
    assert "max_payload of 2000 bytes" in over["error"]["message"]

