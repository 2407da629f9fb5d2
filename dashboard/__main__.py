"""`python -m dashboard [--host 127.0.0.1] [--port 8050] [--refresh-s 5]`: the cost dashboard,
reading the ledger at DATABASE_URL. It binds to localhost unless told otherwise: the page shows
every tenant's spend and has no login of its own."""

from __future__ import annotations

import argparse
import logging
import os

import structlog
from psycopg.conninfo import conninfo_to_dict

from shared import logs
from shared.config import settings

from .app import create_app
from .ledger import Ledger

log = structlog.get_logger("dashboard")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("DASHBOARD_HOST", "127.0.0.1"),
                        help="default: DASHBOARD_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DASHBOARD_PORT", 8050)),
                        help="default: DASHBOARD_PORT or 8050")
    parser.add_argument("--refresh-s", type=float, default=5.0,
                        help="seconds between refreshes of the page")
    args = parser.parse_args(argv)

    env = settings()
    logs.configure(env.log_level, env.log_format, service="dashboard")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per refresh per page
    database = conninfo_to_dict(env.database_url)  # host and name only: no password in logs
    # A snapshot must be read within the refresh interval (see Ledger), and never wait > 10 s.
    ledger = Ledger(env.database_url, timeout_s=min(10.0, 0.8 * args.refresh_s))
    app = create_app(ledger, args.refresh_s)
    log.info("dashboard.start", url=f"http://{args.host}:{args.port}/",
             database=database.get("dbname"), database_host=database.get("host"),
             refresh_s=args.refresh_s)
    try:
        app.run(host=args.host, port=args.port, debug=False)
    finally:
        ledger.close()


if __name__ == "__main__":
    main()
