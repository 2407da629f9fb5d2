"""One definition of savings: cost and baseline over the same answered requests. `stats`, the
dashboard and the monthly projection must agree on a ledger where failed requests cost money
(escalations that failed), and that money must still be shown, as its own figure."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest

from dashboard import callbacks, queries
from services.ledger import stats
from services.ledger.writer import Batch, LedgerWriter
from shared import db
from shared.messages import RequestEvent
from smart_router import render
from tests import harness

# (status, cost, baseline): what the ledger's writer is given, request by request.
ANSWERED = [("ok", "0.0010", "0.0100"), ("ok", "0.0020", "0.0100"), ("ok", "0.0150", "0.0120"),
            ("ok", "0.0005", "0.0050")]
FAILED = [("error", "0.0200", "0"), ("error", "0.0090", "0"), ("error", "0", "0")]


def event(i: int, status: str, cost: str, baseline: str) -> RequestEvent:
    now = time.time()
    answered = status == "ok"
    return RequestEvent(
        request_id=f"savings-{i}", received_at=now - 1, finished_at=now, tenant="acme",
        source="online", status=status,  # type: ignore[arg-type]
        error_code=None if answered else "no_provider_available", difficulty="simple",
        start_tier="simple", tier="complex" if answered else None,
        model_used="gpt-4o" if answered else None, provider="openai" if answered else None,
        escalated=True, attempts=2, input_tokens=100, output_tokens=50,
        cost_usd=float(cost), baseline_cost_usd=float(baseline), latency_ms=900.0,
    )


@pytest.fixture
async def ledger(servers) -> AsyncIterator[psycopg.AsyncConnection]:
    url = harness.fresh_database(servers.postgres_url)
    db.migrate(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = [event(i, *row) for i, row in enumerate(ANSWERED + FAILED)]
        await LedgerWriter(conn).write(Batch(requests=rows))
        yield conn
    with contextlib.suppress(psycopg.Error):
        harness.drop_database(servers.postgres_url, url)


def total(rows: list[tuple[str, str, str]], column: int) -> Decimal:
    return sum((Decimal(row[column]) for row in rows), Decimal(0))


def shown(component) -> dict[str, str]:
    """Every element with an id in a Dash component tree, with its text."""
    found = {}
    children = getattr(component, "children", None)
    if getattr(component, "id", None) and isinstance(children, str):
        found[component.id] = children
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found |= shown(child)
    return found


def cells(table) -> list[list[str]]:
    body = table.children[1]
    return [[cell.children for cell in row.children] for row in body.children]


def money(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", "").replace("%", ""))


async def test_stats_the_dashboard_and_the_projection_agree(ledger):
    cost, baseline = total(ANSWERED, 1), total(ANSWERED, 2)
    failed_cost = total(FAILED, 1)
    savings_pct = float((baseline - cost) / baseline * 100)

    summary = await stats.summary(ledger, days=1)

    assert (summary["requests"], summary["ok"], summary["errors"]) == (7, 4, 3)
    assert summary["cost_usd"] == pytest.approx(float(cost))
    assert summary["baseline_cost_usd"] == pytest.approx(float(baseline))
    assert summary["saved_usd"] == pytest.approx(float(baseline - cost))
    assert summary["savings_pct"] == pytest.approx(savings_pct, abs=0.005)
    assert summary["failed_cost_usd"] == pytest.approx(float(failed_cost))  # shown, not hidden
    assert summary["spent_usd"] == pytest.approx(float(cost + failed_cost))
    # The breakdowns follow the same rule: the one tenant's figures are the totals.
    [tenant] = summary["by_tenant"]
    assert tenant["savings_pct"] == summary["savings_pct"]
    assert tenant["failed_cost_usd"] == pytest.approx(summary["failed_cost_usd"])

    # The projection: a month of answered requests at the answered mix saves the same share.
    for row in summary["projection"]:
        scale = row["requests_per_month"]
        assert row["cost_usd"] == pytest.approx(float(cost / 4 * scale), abs=0.005)
        assert row["baseline_cost_usd"] == pytest.approx(float(baseline / 4 * scale), abs=0.005)
        assert row["saved_usd"] / row["baseline_cost_usd"] * 100 == pytest.approx(
            savings_pct, abs=0.01)

    # The dashboard: what one refresh reads and what its cards and tables show.
    snapshot = await queries.read_snapshot(ledger, days=1)
    assert snapshot.summary == summary
    [today] = snapshot.daily
    assert today["cost_usd"] == pytest.approx(summary["cost_usd"])
    assert today["baseline_cost_usd"] == pytest.approx(summary["baseline_cost_usd"])
    assert today["failed_cost_usd"] == pytest.approx(summary["failed_cost_usd"])
    page = callbacks.render(snapshot)
    cards = {name: text for card in page["cards"] for name, text in shown(card).items()}
    assert money(cards["total-cost"]) == round(cost, 4)
    assert money(cards["baseline-cost"]) == round(baseline, 4)
    assert money(cards["total-savings"]) == round(baseline - cost, 4)
    assert money(cards["savings-pct"]) == pytest.approx(Decimal(savings_pct), abs=Decimal("0.01"))
    assert money(cards["failed-cost"]) == round(failed_cost, 4)
    projection = cells(page["projection"])
    assert [money(row[3]) for row in projection] == [
        money(f"{p['saved_usd']:.2f}") for p in summary["projection"]]

    # `smart-router stats` prints the same figures.
    printed = render.stats(summary)
    assert f"saved ${summary['saved_usd']:.4f} ({summary['savings_pct']:.1f}%)" in printed
    assert f"spent on failed requests ${float(failed_cost):.4f}" in printed
