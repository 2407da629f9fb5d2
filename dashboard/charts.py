"""The charts, as plain Plotly figure dicts: Dash sends them as they are, with no validation
pass to pay for on every refresh."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from typing import Any

BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 56, "r": 16, "t": 8, "b": 40},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "legend": {"orientation": "h", "y": -0.2},
    "font": {"family": "system-ui, sans-serif", "size": 12},
}
MONEY_HOVER = "%{x}<br>$%{y:,.4f}<extra>%{fullData.name}</extra>"
DAY_MS = 86_400_000
MAX_DATE_TICKS = 10
# One colour per tier, cheapest first, none of them red (red says "error" on this page).
TIER_COLOURS = {"simple": "#27ab83", "medium": "#f0a429", "complex": "#7b5fc9"}
OTHER_TIER_COLOURS = ("#2f6fde", "#9aa5b1", "#0e7c86", "#b98a00", "#5a4a9c")


def cost_over_time(daily: list[dict], since: date, days: int) -> dict:
    """Routed cost beside the baseline, one pair of bars per UTC day of the window: the gap is
    the saving. Bars, not lines, so a window with one day of traffic still shows it; explicit
    widths, since Plotly sizes a lone bar on a date axis to one millisecond."""
    x = [row["day"].isoformat() for row in daily]  # a day's bars centre on its midnight tick
    first = datetime.combine(since, time())
    last = first + timedelta(days=days - 1)
    half_day = timedelta(hours=12)
    return {
        "data": [
            day_bars("Baseline (always the top tier)", x, _floats(daily, "baseline_cost_usd"),
                     "#c3cad3", offset=-0.4),
            day_bars("Routed cost", x, _floats(daily, "cost_usd"), "#2f6fde", offset=0.0),
        ],
        "layout": {
            **BASE_LAYOUT, "yaxis": {"tickprefix": "$", "rangemode": "tozero"},
            # the whole window, whole days only: one tick per day up to ten, dated, never a time
            "xaxis": {"type": "date", "tickformat": "%b %-d", "hoverformat": "%a %b %-d, %Y",
                      "range": [(first - half_day).isoformat(), (last + half_day).isoformat()],
                      "tick0": last.date().isoformat(),
                      "dtick": DAY_MS * math.ceil(days / MAX_DATE_TICKS)},
        },
    }


def day_bars(name: str, x: list[str], y: list[float], colour: str, *, offset: float) -> dict:
    """One bar per day, 0.4 of a day wide, starting `offset` days from the day's tick."""
    return {"type": "bar", "name": name, "x": x, "y": y, "hovertemplate": MONEY_HOVER,
            "width": 0.4 * DAY_MS, "offset": offset * DAY_MS, "marker": {"color": colour}}


def model_share(by_model: list[dict]) -> dict:
    """Answered requests per model, with what each model cost (failures have a card of their
    own: they have no model)."""
    rows = list(reversed(by_model))  # largest at the top of a horizontal bar chart
    return {
        "data": [{
            "type": "bar", "orientation": "h", "name": "Requests",
            "y": [row["model_used"] for row in rows], "x": [row["requests"] for row in rows],
            "customdata": [row["cost_usd"] for row in rows],
            "hovertemplate": "%{y}<br>%{x:,} requests<br>$%{customdata:,.4f}<extra></extra>",
            "marker": {"color": "#2f6fde"}, "texttemplate": "%{x:,}", "textposition": "auto",
        }],
        # each bar says its count, so no axis of fractional requests on a quiet day
        "layout": {**BASE_LAYOUT, "margin": {**BASE_LAYOUT["margin"], "l": 170},
                   "xaxis": {"showticklabels": False, "showgrid": False, "zeroline": False}},
    }


def tier_share(by_tier: list[dict]) -> dict:
    """Answered requests per tier, cheapest first, each tier in its own colour whatever its
    share."""
    rows = sorted(by_tier, key=lambda row: tier_rank(row["tier"]))
    tiers = [row["tier"] for row in rows]
    return {
        "data": [{
            "type": "pie", "hole": 0.5, "sort": False, "labels": tiers,
            "values": [row["requests"] for row in rows],
            "marker": {"colors": tier_colours(tiers)},
            "hovertemplate": "%{label}<br>%{value:,} requests (%{percent})<extra></extra>",
        }],
        "layout": BASE_LAYOUT,
    }


def tier_rank(tier: str) -> tuple[int, str]:
    """The default tiers in their order, then any other by name."""
    known = list(TIER_COLOURS)
    return (known.index(tier), "") if tier in TIER_COLOURS else (len(known), tier)


def tier_colours(tiers: list[str]) -> list[str]:
    """The default tiers' own colours; any other tier name one of the rest, by name, so a tier
    keeps its colour from one refresh to the next."""
    others = sorted(set(tiers) - TIER_COLOURS.keys())
    colours = TIER_COLOURS | {tier: OTHER_TIER_COLOURS[i % len(OTHER_TIER_COLOURS)]
                              for i, tier in enumerate(others)}
    return [colours[tier] for tier in tiers]




def _floats(rows: list[dict], key: str) -> list[float]:
    return [float(row[key]) for row in rows]
