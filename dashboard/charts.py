"""The charts, as plain Plotly figure dicts: Dash sends them as they are, with no validation
pass to pay for on every refresh."""

from __future__ import annotations

BASE_LAYOUT = {
    "margin": {"l": 56, "r": 16, "t": 8, "b": 40},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "legend": {"orientation": "h", "y": -0.2},
    "font": {"family": "system-ui, sans-serif", "size": 12},
}
MONEY_HOVER = "%{x}<br>$%{y:,.4f}<extra>%{fullData.name}</extra>"


def cost_over_time(daily: list[dict]) -> dict:
    """Routed cost against the baseline, per UTC day: the gap is the saving."""
    days = [row["day"].isoformat() for row in daily]
    return {
        "data": [
            {"type": "scatter", "mode": "lines", "name": "Baseline (always the top tier)",
             "x": days, "y": _floats(daily, "baseline_cost_usd"), "hovertemplate": MONEY_HOVER,
             "line": {"color": "#9aa5b1", "dash": "dot"}},
            {"type": "scatter", "mode": "lines", "name": "Routed cost", "x": days,
             "y": _floats(daily, "cost_usd"), "fill": "tonexty", "hovertemplate": MONEY_HOVER,
             "line": {"color": "#2f6fde"}, "fillcolor": "rgba(47,111,222,0.12)"},
        ],
        "layout": {**BASE_LAYOUT, "yaxis": {"tickprefix": "$", "rangemode": "tozero"},
                   "xaxis": {"type": "date"}},
    }


def model_share(by_model: list[dict]) -> dict:
    """Requests per model that answered (errors have none), with what each model cost."""
    rows = list(reversed(by_model))  # largest at the top of a horizontal bar chart
    return {
        "data": [{
            "type": "bar", "orientation": "h", "name": "Requests",
            "y": [row["model_used"] for row in rows], "x": [row["requests"] for row in rows],
            "customdata": [row["cost_usd"] for row in rows],
            "hovertemplate": "%{y}<br>%{x:,} requests<br>$%{customdata:,.4f}<extra></extra>",
            "marker": {"color": "#2f6fde"},
        }],
        "layout": {**BASE_LAYOUT, "margin": {**BASE_LAYOUT["margin"], "l": 170}},
    }


def tier_share(by_tier: list[dict]) -> dict:
    return {
        "data": [{
            "type": "pie", "hole": 0.5, "sort": False,
            "labels": [row["tier"] for row in by_tier],
            "values": [row["requests"] for row in by_tier],
            "hovertemplate": "%{label}<br>%{value:,} requests (%{percent})<extra></extra>",
        }],
        "layout": BASE_LAYOUT,
    }


def _floats(rows: list[dict], key: str) -> list[float]:
    return [float(row[key]) for row in rows]
