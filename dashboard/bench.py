"""Time a page refresh against DATABASE_URL: `python -m dashboard.bench [--runs 50]`.

For each window it times the refresh callback in-process (all queries and figure building), then
the same refresh as the browser asks for it, a POST to /_dash-update-component through the Flask
app (adding Dash's dispatch and the JSON encoding of the response). Prints p50, p95 and max in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import psycopg

from shared.config import settings

from . import callbacks
from .app import create_app
from .layout import WINDOWS_DAYS
from .ledger import Ledger
from .settings import DashboardSettings

WARMUP_RUNS = 3
REFRESH_S = 5.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard.bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=50, help="timed refreshes per window")
    parser.add_argument("--database-url", default=settings().database_url,
                        help="default: DATABASE_URL")
    args = parser.parse_args(argv)

    with psycopg.connect(args.database_url) as conn:
        total = conn.execute("SELECT coalesce(sum(requests), 0) FROM daily_usage").fetchone()
    rows = total[0] if total else 0
    print(f"ledger: {rows:,} requests; {args.runs} refreshes per window after {WARMUP_RUNS} "
          "warm-up ones")
    print(f"{'window':>8}  {'measure':<9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    ledger = Ledger(args.database_url)
    # The default settings, not the environment's: the bench's client has no login to give.
    app = create_app(ledger, DashboardSettings.model_construct(), REFRESH_S)
    client, (callback_key,) = app.server.test_client(), app.callback_map  # the one callback
    try:
        for days in WINDOWS_DAYS:
            for measure, refresh in (
                ("callback", lambda days=days: callbacks.refresh(ledger, days, REFRESH_S)),
                ("http", lambda days=days: _post_refresh(client, callback_key, days)),
            ):
                p50, p95, worst = _time(refresh, args.runs)
                print(f"{days:>6} d  {measure:<9}{p50:>9.1f}{p95:>9.1f}{worst:>9.1f}")
    finally:
        ledger.close()


def _post_refresh(client, callback_key: str, days: int) -> None:
    """The request the page sends on an interval tick."""
    outputs = list(callbacks.OUTPUTS.values())
    response = client.post("/_dash-update-component", json={
        "output": callback_key,
        "outputs": [{"id": o.component_id, "property": o.component_property} for o in outputs],
        "inputs": [{"id": "window", "property": "value", "value": days},
                   {"id": "refresh", "property": "n_intervals", "value": 1}],
        "changedPropIds": ["refresh.n_intervals"],
        "state": [],
    })
    assert response.status_code == 200, response.get_data(as_text=True)[:500]


def _time(refresh: Callable[[], object], runs: int) -> tuple[float, float, float]:
    for _ in range(WARMUP_RUNS):
        refresh()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        refresh()
        samples.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(samples, n=20)[-1] if runs > 1 else samples[0]
    return statistics.median(samples), p95, max(samples)


if __name__ == "__main__":
    main()
