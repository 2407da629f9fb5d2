"""The page's skeleton. The refresh callback fills it; every id here is one of its outputs."""

from __future__ import annotations

from dash import dcc, html

WINDOWS_DAYS = (1, 7, 30, 90)
DEFAULT_WINDOW_DAYS = 30  # as `smart-router stats`


def layout(refresh_s: float) -> html.Div:
    return html.Div(className="page", children=[
        html.Header(className="header", children=[
            html.H1("Smart Router: cost and savings"),
            dcc.RadioItems(
                id="window", value=DEFAULT_WINDOW_DAYS, inline=True, className="window",
                options=[{"label": f"{days} day{'s' if days > 1 else ''}", "value": days}
                         for days in WINDOWS_DAYS],
            ),
            html.Span(id="updated-at", className="updated"),
        ]),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
        html.Div(id="ledger-status", className="notice notice-error", role="alert", hidden=True),
        html.Div(id="emulated-banner", className="notice notice-warning", role="status",
                 hidden=True),
        html.Section(id="empty-state", className="empty", hidden=True, children=[
            html.H2("No requests recorded yet"),
            html.P(["The ledger has no requests in this window. They appear here within one "
                    "refresh of being answered: try ", html.Code('smart-router ask "Hello"'),
                    ", or fill a demo database with ", html.Code("python -m dashboard.seed"),
                    "."]),
        ]),
        html.Main(id="content", hidden=True, children=[
            html.Section(id="cards", className="cards"),
            html.Div(className="grid", children=[
                panel("Cost per day", graph("cost-over-time"), wide=True),
                panel("Answered requests by model", graph("model-share")),
                panel("Answered requests by tier", graph("tier-share")),
                panel("Spend by tenant", html.Div(id="tenant-table")),
                panel("A month at scale, with this window's mix",
                      html.Div(id="projection-table")),
            ]),
            panel("Most recent requests", html.Div(id="recent-table", className="scroll"),
                  wide=True),
        ]),
    ])


def graph(graph_id: str) -> dcc.Graph:
    # responsive: redrawn to its panel's size, also when the panel first becomes visible
    return dcc.Graph(id=graph_id, config={"displayModeBar": False}, responsive=True,
                     style={"height": "300px"})


def panel(title: str, body, *, wide: bool = False) -> html.Section:
    return html.Section(className="panel panel-wide" if wide else "panel",
                        children=[html.H2(title), body])
