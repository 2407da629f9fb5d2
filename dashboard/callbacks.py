"""The refresh: on every interval tick and every change of window, read the ledger once and
redraw the page. One callback reads one snapshot, so every figure shown is from the same instant."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from dash import Dash, Input, Output, no_update

from . import charts, notices, tables
from .cards import cards
from .layout import DEFAULT_WINDOW_DAYS, WINDOWS_DAYS
from .ledger import Ledger, LedgerUnavailable
from .queries import Snapshot

OUTPUTS = {
    "status": Output("ledger-status", "children"),
    "status_hidden": Output("ledger-status", "hidden"),
    "banner": Output("emulated-banner", "children"),
    "banner_hidden": Output("emulated-banner", "hidden"),
    "empty_hidden": Output("empty-state", "hidden"),
    "content_hidden": Output("content", "hidden"),
    "updated": Output("updated-at", "children"),
    "cards": Output("cards", "children"),
    "cost_over_time": Output("cost-over-time", "figure"),
    "model_share": Output("model-share", "figure"),
    "tier_share": Output("tier-share", "figure"),
    "tenants": Output("tenant-table", "children"),
    "projection": Output("projection-table", "children"),
    "recent": Output("recent-table", "children"),
}
INPUTS = {"days": Input("window", "value"), "tick": Input("refresh", "n_intervals")}


def register(app: Dash, ledger: Ledger, refresh_s: float) -> None:
    @app.callback(output=OUTPUTS, inputs=INPUTS)
    def refresh_page(days: int, tick: int | None) -> dict[str, Any]:
        return refresh(ledger, days, refresh_s)


def refresh(ledger: Ledger, days: int, refresh_s: float) -> dict[str, Any]:
    """The whole page for a window; when the ledger does not answer, the last figures stay and
    a notice says why, until a later tick reads again."""
    if days not in WINDOWS_DAYS:
        days = DEFAULT_WINDOW_DAYS
    try:
        snapshot = ledger.snapshot(days)
    except LedgerUnavailable as exc:
        return {name: no_update for name in OUTPUTS} | {
            "status": notices.ledger_unavailable(str(exc), refresh_s), "status_hidden": False}
    return render(snapshot)


def render(snapshot: Snapshot) -> dict[str, Any]:
    summary = snapshot.summary
    banner = notices.emulated_banner(summary)
    empty = summary["requests"] == 0
    return {
        "status": None,
        "status_hidden": True,
        "banner": banner,
        "banner_hidden": banner is None,
        "empty_hidden": not empty,
        "content_hidden": empty,
        "updated": f"since {summary['since']}, updated {datetime.now(UTC):%H:%M:%S} UTC",
        "cards": cards(summary),
        "cost_over_time": charts.cost_over_time(
            snapshot.daily, date.fromisoformat(summary["since"]), summary["window_days"]),
        "model_share": charts.model_share(snapshot.by_model),
        "tier_share": charts.tier_share(snapshot.by_tier),
        "tenants": tables.tenant_table(summary["by_tenant"]),
        "projection": tables.projection_table(summary["projection"]),
        "recent": tables.recent_table(snapshot.recent),
    }
