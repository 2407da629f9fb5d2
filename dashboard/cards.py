"""The headline figures, one card each. Every value has a stable id the browser test reads."""

from __future__ import annotations

from dash import html

from . import format as fmt


def cards(summary: dict) -> list[html.Div]:
    latency = summary["latency_ms"]
    return [
        card("total-requests", "Requests", fmt.count(summary["requests"]),
             f"{fmt.count(summary['ok'])} answered"),
        card("failed-requests", "Failed", fmt.count(summary["errors"]),
             "no answer: not in the model and tier charts"),
        card("total-cost", "Cost", fmt.money(summary["cost_usd"]), "of the answered requests"),
        card("failed-cost", "Spent on failed", fmt.money(summary["failed_cost_usd"]),
             "paid for requests that got no answer"),
        card("baseline-cost", "Baseline cost", fmt.money(summary["baseline_cost_usd"]),
             "always the top tier"),
        card("total-savings", "Saved", fmt.money(summary["saved_usd"]), "baseline minus cost"),
        card("savings-pct", "Savings", fmt.percent(summary["savings_pct"]), "of the baseline"),
        card("escalation-rate", "Escalated", fmt.percent(100 * summary["escalation_rate"]),
             f"{fmt.count(summary['escalated'])} answered requests went a tier up"),
        card("escalation-cost", "Escalation cost", fmt.money(summary["escalation_cost_usd"]),
             "paid for answers judged too weak"),
        card("latency-p50", "Latency p50", fmt.milliseconds(latency["p50"]), "answered requests"),
        card("latency-p95", "Latency p95", fmt.milliseconds(latency["p95"])),
        card("latency-p99", "Latency p99", fmt.milliseconds(latency["p99"])),
        card("dead-letters", "Dead letters", fmt.count(summary["dead_letters"]),
             "messages no retry could settle"),
    ]


def card(value_id: str, label: str, value: str, note: str = "") -> html.Div:
    return html.Div(className="card", children=[
        html.Span(label, className="card-label"),
        html.Strong(value, id=value_id, className="card-value"),
        html.Span(note, className="card-note"),
    ])
