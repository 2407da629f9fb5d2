"""The dashboard in a real browser: `python -m dashboard` as its own process over a database of
the test's own, read by headless Chromium (Playwright). Every figure on the page must equal what
SQL computes straight from the raw rows, and the browser console must stay free of errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from dashboard import charts, seed
from services.ledger.writer import Batch, LedgerWriter
from shared.config import config
from shared.messages import RequestEvent
from smart_router import embedded
from tests import harness

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
WAIT_MS = 20_000
STORED_PROMPT = "What is the capital of France?"
LONG_PROMPT = "Summarise the attached quarterly report in three bullet points " * 4
# UPDATE_SCREENSHOT=1 makes the figures test save the page as the README shows it.
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
# The page's default window: the last 30 UTC days, today included.
SINCE = "((now() AT TIME ZONE 'UTC')::date - 29)::timestamp AT TIME ZONE 'UTC'"


@dataclass
class Console:
    """What the page logged as an error, uncaught exceptions included."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))


@pytest.fixture(scope="module")
def chromium() -> str:
    assert CHROMIUM.exists(), "the browser tests drive Debian's chromium: apt-get install chromium"
    return str(CHROMIUM)


@pytest.fixture(scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium,
                                                    args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[tuple[Page, Console]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = await context.new_page()
    console = Console()
    console.watch(opened)
    yield opened, console
    await context.close()


@pytest.fixture
async def ledger_database(ledger_url: str) -> tuple[str, RequestEvent]:
    """A week of seeded traffic (models, tiers, tenants, escalations, errors, emulated answers),
    then one request recorded by the ledger's own writer: the newest, with its prompt kept."""
    seed.seed(ledger_url, requests=400, days=7, cfg=config())
    newest = await record_request(ledger_url)
    return ledger_url, newest


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator:
    processes: list[harness.Processes] = []

    def start(database_url: str) -> str:
        port = embedded.free_port()
        running = harness.Processes({**os.environ, "DATABASE_URL": database_url}, tmp_path)
        running.start("dashboard", [sys.executable, "-m", "dashboard", "--port", str(port),
                                    "--refresh-s", "1"])
        processes.append(running)
        harness.wait_for_http(f"http://127.0.0.1:{port}/")
        return f"http://127.0.0.1:{port}/"

    yield start
    for running in processes:
        running.stop_all()


@pytest.fixture
async def first_day_database(ledger_url: str) -> str:
    await write_requests(ledger_url, first_day_requests())
    return ledger_url


def first_day_requests() -> list[RequestEvent]:
    """The ledger's first day: answered requests on every tier with the widest values a row holds
    (uuid ids, a 64-character tenant, the longest error code, a kept prompt longer than the
    preview), and failed requests, which have no model, and before classification no tier."""
    long_tenant = "t" * 64
    return [
        request_event(tier="simple", start_tier="simple", difficulty="simple",
                      model_used="claude-haiku-4-5", provider="anthropic", escalated=False,
                      attempts=1, cost_usd=0.0004, escalation_cost_usd=0.0),
        request_event(tier="medium", start_tier="medium", model_used="llama-3.3-70b-versatile",
                      provider="groq", escalated=False, attempts=1, tenant=long_tenant,
                      cost_usd=0.0009, escalation_cost_usd=0.0),
        request_event(prompt_text=LONG_PROMPT, prompt_chars=len(LONG_PROMPT), tenant=long_tenant),
        request_event(status="error", error_code="no_provider_available", tier="medium",
                      model_used=None, provider=None, escalated=False, cost_usd=0.0,
                      baseline_cost_usd=0.0, escalation_cost_usd=0.0, emulated=False,
                      tenant=long_tenant),
        request_event(status="error", error_code="invalid_request", difficulty=None,
                      start_tier=None, tier=None, model_used=None, provider=None,
                      escalated=False, attempts=0, input_tokens=0, output_tokens=0,
                      cost_usd=0.0, baseline_cost_usd=0.0, escalation_cost_usd=0.0,
                      emulated=False),
    ]


def request_event(**fields) -> RequestEvent:
    """A request answered just now, escalated from medium to complex, its prompt kept: any field
    can be replaced."""
    now = time.time()
    return RequestEvent(**{
        "request_id": uuid.uuid4().hex, "received_at": now - 1.2, "finished_at": now,
        "tenant": "browser-test", "source": "online", "status": "ok", "difficulty": "medium",
        "classifier_backend": "local", "classifier_confidence": 0.8, "start_tier": "medium",
        "tier": "complex", "model_used": "gpt-4o", "provider": "openai", "escalated": True,
        "attempts": 2, "input_tokens": 640, "output_tokens": 410, "cost_usd": 0.0031,
        "baseline_cost_usd": 0.0048, "escalation_cost_usd": 0.0004, "latency_ms": 1180.0,
        "provider_latency_ms": 1100.0, "emulated": True, "prompt_sha256": "0" * 64,
        "prompt_chars": len(STORED_PROMPT), "prompt_text": STORED_PROMPT, **fields,
    })


async def write_requests(database_url: str, events: list[RequestEvent]) -> None:
    """Through the ledger's own writer, so the roll-ups the page reads are the real ones."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await LedgerWriter(conn).write(Batch(requests=events))


async def record_request(database_url: str) -> RequestEvent:
    event = request_event(request_id=f"browser-{uuid.uuid4().hex[:8]}")
    await write_requests(database_url, [event])
    return event


async def expected_figures(database_url: str) -> dict:
    """The page's figures, computed from the raw requests rather than the roll-ups it reads."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        totals = await (await conn.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE status = 'ok'),
                   count(*) FILTER (WHERE emulated), count(*) FILTER (WHERE escalated),
                   sum(cost_usd) FILTER (WHERE status = 'ok'),
                   sum(baseline_cost_usd) FILTER (WHERE status = 'ok'),
                   sum(cost_usd) FILTER (WHERE status <> 'ok'), sum(escalation_cost_usd),
                   percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
                       FILTER (WHERE status = 'ok'),
                   (SELECT count(*) FROM dead_letters WHERE at >= {SINCE})
            FROM requests WHERE finished_at >= {SINCE}""")).fetchone()
        tenants = await (await conn.execute(f"""
            SELECT coalesce(nullif(tenant, ''), '(none)'),
                   coalesce(sum(cost_usd) FILTER (WHERE status = 'ok'), 0) FROM requests
            WHERE finished_at >= {SINCE} GROUP BY 1""")).fetchall()
    (requests, ok, emulated, escalated, cost, baseline, failed_cost, escalation_cost, latency,
     dead) = totals
    return {
        "requests": requests, "ok": ok, "emulated": emulated, "escalated": escalated,
        "cost": cost, "baseline": baseline, "saved": baseline - cost, "failed_cost": failed_cost,
        "savings_pct": (baseline - cost) / baseline * 100,
        "escalation_rate_pct": Decimal(escalated) / ok * 100,
        "escalation_cost": escalation_cost, "latency": latency, "dead_letters": dead,
        "tenants": dict(tenants),
        "saved_at_1m": (baseline - cost) / ok * 1_000_000,  # answered requests only
    }


def number(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", "").replace("%", "").replace("ms", ""))


def assert_shown(text: str, exact: Decimal, places: int) -> None:
    """The page rounds to `places`: what it shows is within half a unit of the exact figure."""
    assert abs(number(text) - exact) <= Decimal("0.5") / 10**places + Decimal("1e-9"), (text, exact)


async def texts(page: Page, selector: str) -> list[list[str]]:
    rows = page.locator(f"{selector} tbody tr")
    return [await rows.nth(i).locator("td").all_inner_texts() for i in range(await rows.count())]


async def test_the_page_shows_the_ledger_figures(ledger_database, start_dashboard, page):
    database_url, newest = ledger_database
    browser_page, console = page
    want = await expected_figures(database_url)
    assert want["escalated"] and want["emulated"] and want["ok"] < want["requests"]
    assert len(want["tenants"]) >= 4

    await browser_page.goto(start_dashboard(database_url))
    await expect(browser_page.locator("#content")).to_be_visible(timeout=WAIT_MS)
    shown = {name: await browser_page.locator(f"#{name}").inner_text() for name in (
        "total-requests", "total-cost", "failed-cost", "baseline-cost", "total-savings",
        "savings-pct", "escalation-rate", "escalation-cost", "latency-p50", "latency-p95",
        "latency-p99", "dead-letters")}

    assert shown["total-requests"] == f"{want['requests']:,}"
    assert shown["dead-letters"] == f"{want['dead_letters']:,}"
    assert_shown(shown["total-cost"], want["cost"], 4)
    assert_shown(shown["failed-cost"], want["failed_cost"], 4)
    assert_shown(shown["baseline-cost"], want["baseline"], 4)
    assert_shown(shown["total-savings"], want["saved"], 4)
    assert_shown(shown["escalation-cost"], want["escalation_cost"], 4)
    assert_shown(shown["savings-pct"], want["savings_pct"], 2)
    assert_shown(shown["escalation-rate"], want["escalation_rate_pct"], 2)
    # Percentiles come from a log histogram with buckets 5% wide: within 2.6% of the exact ones.
    for name, exact in zip(("latency-p50", "latency-p95", "latency-p99"), want["latency"],
                           strict=True):
        assert abs(float(number(shown[name])) / exact - 1) <= 0.026, (name, shown[name], exact)

    tenants = {row[0]: row[2] for row in await texts(browser_page, "#tenant-table")}
    assert tenants.keys() == want["tenants"].keys()
    for tenant, cost in want["tenants"].items():
        assert_shown(tenants[tenant], cost, 4)
    projection = await texts(browser_page, "#projection-table")
    assert [row[0] for row in projection] == ["10,000", "100,000", "1,000,000"]
    assert_shown(projection[-1][3], want["saved_at_1m"], 2)

    banner = browser_page.locator("#emulated-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text(f"{want['emulated']:,} of {want['requests']:,}")

    recent = await texts(browser_page, "#recent-table")
    assert len(recent) == 50
    first = recent[0]
    assert first[1] == newest.request_id
    assert first[2:6] == ["browser-test", "medium", "complex", "gpt-4o"]
    assert first[9:] == ["yes", "emulated", "ok", STORED_PROMPT]
    assert recent[1][-1] == ""  # the seeded rows kept no prompt text: none is shown

    # The page keeps refreshing (every second here) without a console error.
    updated = await browser_page.locator("#updated-at").inner_text()
    await expect(browser_page.locator("#updated-at")).not_to_have_text(updated, timeout=WAIT_MS)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        await save_screenshot(browser_page)
    assert console.errors == []


async def save_screenshot(browser_page: Page) -> None:
    """The README's picture: the seeded week in the 7-day window, down to the first rows of the
    recent requests (all 50 would make the file large and tell nothing more)."""
    since = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    await browser_page.get_by_label("7 days").check()
    await expect(browser_page.locator("#updated-at")).to_contain_text(f"since {since}")
    await expect(browser_page.locator("#cost-over-time .xtick")).to_have_count(7)  # redrawn
    width, recent_top = await browser_page.locator("#recent-table").evaluate(
        "el => [document.documentElement.clientWidth, el.getBoundingClientRect().top + scrollY]")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await browser_page.screenshot(path=SCREENSHOT, full_page=True, clip={
        "x": 0, "y": 0, "width": width, "height": recent_top + 240})


async def drawn_box(locator) -> dict:
    """The element's box once it is drawn: the page's periodic refresh may redraw it between
    two reads, and an element not on screen at that instant has none."""
    for _ in range(50):
        box = await locator.bounding_box()
        if box is not None:
            return box
        await asyncio.sleep(0.1)
    raise AssertionError(f"{locator} was never drawn")


async def test_the_first_day_is_drawn_and_the_table_fits(first_day_database, start_dashboard,
                                                         page):
    """One day of traffic: the cost chart draws that day, dated; failures are a figure of their
    own, not a model or a tier; at 1400 px the newest requests fit, Status column included."""
    browser_page, console = page
    await browser_page.set_viewport_size({"width": 1400, "height": 1000})
    await browser_page.goto(start_dashboard(first_day_database))
    await expect(browser_page.locator("#content")).to_be_visible(timeout=WAIT_MS)
    await expect(browser_page.locator("#failed-requests")).to_have_text("2")

    bars = browser_page.locator("#cost-over-time .barlayer .point path")
    await expect(bars).to_have_count(2)  # the day's baseline and its routed cost
    for i in range(2):
        box = await drawn_box(bars.nth(i))
        assert box and box["width"] >= 8 and box["height"] >= 1, box
    today = datetime.now(UTC).date()
    ticks = await browser_page.locator("#cost-over-time .xtick text").all_text_contents()
    assert f"{today:%b} {today.day}" in ticks
    assert all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", tick) for tick in ticks), ticks

    models = browser_page.locator("#model-share .ytick text")
    await expect(models).to_have_count(3)  # each chart is drawn on its own
    assert sorted(await models.all_text_contents()) == [
        "claude-haiku-4-5", "gpt-4o", "llama-3.3-70b-versatile"]
    await expect(browser_page.locator("#tier-share .legend .traces")).to_have_count(3)
    assert await slice_colours(browser_page) == {
        tier: rgb(colour) for tier, colour in charts.TIER_COLOURS.items()}
    for chart in ("#model-share", "#tier-share"):
        assert "(none)" not in await browser_page.locator(f"{chart} text").all_text_contents()

    table = browser_page.locator("#recent-table")
    width, visible_width = await table.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert width <= visible_width, (width, visible_width)
    headers = await table.locator("th").all_text_contents()
    status = table.locator(f"td:nth-child({headers.index('Status') + 1})")
    assert sorted(await status.all_text_contents()) == [
        "invalid_request", "no_provider_available", "ok", "ok", "ok"]
    table_box = await drawn_box(table)
    for i in range(await status.count()):
        cell = status.nth(i)
        box = await drawn_box(cell)
        assert box["x"] + box["width"] <= table_box["x"] + table_box["width"], (i, box)
        assert await cell.evaluate("el => el.scrollWidth <= el.clientWidth"), i  # not cut
    assert console.errors == []


async def slice_colours(browser_page: Page) -> dict[str, str]:
    """The tier donut's legend: each tier's name and the fill of its swatch."""
    return await browser_page.locator("#tier-share .legend .traces").evaluate_all(
        """items => Object.fromEntries(items.map(item => [
            item.querySelector('.legendtext').textContent,
            item.querySelector('.legendpoints path').style.fill]))""")


def rgb(colour: str) -> str:
    """#27ab83 as the browser reports a fill: rgb(39, 171, 131)."""
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


async def test_an_empty_ledger_shows_the_empty_state(ledger_url, start_dashboard, page):
    browser_page, console = page
    await browser_page.goto(start_dashboard(ledger_url))
    empty = browser_page.locator("#empty-state")
    await expect(empty).to_be_visible(timeout=WAIT_MS)
    await expect(empty).to_contain_text("No requests recorded yet")
    await expect(browser_page.locator("#content")).to_be_hidden()
    await expect(browser_page.locator("#ledger-status")).to_be_hidden()
    await expect(browser_page.locator("#emulated-banner")).to_be_hidden()
    assert console.errors == []


async def test_the_page_says_when_the_database_is_down_and_recovers(start_dashboard, page,
                                                                   tmp_path):
    postgres = harness.ControlledPostgres(tmp_path / "pg")
    server_url = postgres.start()
    try:
        database_url = harness.fresh_database(server_url)
        seed.seed(database_url, requests=50, days=2, cfg=config())
        browser_page, console = page
        await browser_page.goto(start_dashboard(database_url))
        await expect(browser_page.locator("#total-requests")).to_have_text("50", timeout=WAIT_MS)

        postgres.stop()
        status = browser_page.locator("#ledger-status")
        await expect(status).to_be_visible(timeout=WAIT_MS)
        await expect(status).to_contain_text("The ledger database does not answer")
        await expect(browser_page.locator("#total-requests")).to_have_text("50")  # last read

        postgres.start()
        await expect(status).to_be_hidden(timeout=60_000)
        await expect(browser_page.locator("#total-requests")).to_have_text("50")
        assert console.errors == []
    finally:
        with contextlib.suppress(OSError):  # already stopped, when the test failed while down
            postgres.stop()
