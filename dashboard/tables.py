"""The tables: spend by tenant, the monthly projection, and the newest requests."""

from __future__ import annotations

from dash import html

from . import format as fmt

# Free-text columns are cut to a width, with an ellipsis; the whole text is the cell's tooltip
# and is still what a copy takes. The prompt takes whatever width the other columns leave.
CLIPPED = {"Request": "clip", "Tenant": "clip", "Model": "clip clip-wide", "Prompt": "fill"}


def tenant_table(by_tenant: list[dict]) -> html.Table:
    """summary()'s by_tenant: the tenants that spent most (stats.TOP_TENANTS at most), then one
    row for all the others, if any."""
    return table(
        ["Tenant", "Requests", "Cost", "Baseline", "Saved", "Savings"],
        [[f"{fmt.count(row['tenants'])} other tenants" if row.get("others") else row["tenant"],
          fmt.count(row["requests"]), fmt.money(row["cost_usd"]),
          fmt.money(row["baseline_cost_usd"]), fmt.money(row["saved_usd"]),
          fmt.percent(row["savings_pct"])] for row in by_tenant],
    )


def projection_table(projection: list[dict]) -> html.Table:
    """summary()'s projection: a month at each scale with this window's mix and token counts."""
    return table(
        ["Requests a month", "Routed cost", "Baseline cost", "Saved"],
        [[fmt.count(row["requests_per_month"]), fmt.money(row["cost_usd"], 2),
          fmt.money(row["baseline_cost_usd"], 2), fmt.money(row["saved_usd"], 2)]
         for row in projection],
    )


def recent_table(recent: list[dict]) -> html.Table:
    """One row per request, newest first. The prompt column appears only when the ledger kept
    prompt text (ledger.store_prompt_text); by default it keeps a hash and a length."""
    with_prompts = any(row["prompt_preview"] is not None for row in recent)
    columns = ["Finished (UTC)", "Request", "Tenant", "Difficulty", "Tier", "Model", "Cost",
               "Saved", "Latency", "Escalated", "Emulated", "Status"]
    rows = []
    for row in recent:
        cells = [
            fmt.timestamp(row["finished_at"]), row["request_id"], row["tenant"] or "",
            row["difficulty"] or "", row["tier"] or "", row["model_used"] or "",
            fmt.money(row["cost_usd"]), fmt.money(row["saved_usd"]),
            fmt.milliseconds(row["latency_ms"]), "yes" if row["escalated"] else "",
            "emulated" if row["emulated"] else "",
            row["status"] if row["status"] == "ok" else row["error_code"] or row["status"],
        ]
        if with_prompts:
            cells.append(row["prompt_preview"] or "")
        rows.append(cells)
    return table([*columns, "Prompt"] if with_prompts else columns, rows)


def table(columns: list[str], rows: list[list[str]]) -> html.Table:
    classes = [CLIPPED.get(name) for name in columns]
    return html.Table(className="table", children=[
        html.Thead(html.Tr([html.Th(name) for name in columns])),
        html.Tbody([html.Tr([cell_of(text, css) for text, css in zip(cells, classes, strict=True)])
                    for cells in rows]),
    ])


def cell_of(text: str, css: str | None) -> html.Td:
    return html.Td(text, className=css, title=text) if css else html.Td(text)
