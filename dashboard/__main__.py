"""`python -m dashboard [--host 127.0.0.1] [--port 8050] [--refresh-s 5]`: the cost dashboard,
reading the ledger at DATABASE_URL. It binds to localhost unless told otherwise, and serves only
the host names DASHBOARD_ALLOWED_HOSTS adds to the loopback ones: the page shows every tenant's
spend, and has a login only when DASHBOARD_PASSWORD or DASHBOARD_TRUSTED_USER_HEADER sets one
(dashboard/settings.py)."""

from __future__ import annotations

import argparse
import logging

import structlog
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from shared import logs
from shared.config import settings

from .app import create_app
from .ledger import Ledger
from .settings import DashboardSettings

log = structlog.get_logger("dashboard")


def main(argv: list[str] | None = None) -> None:
    try:
        dashboard = DashboardSettings()
    except ValidationError as exc:  # said without the values read: one may be the password
        raise SystemExit("dashboard settings: " + "; ".join(
            f"DASHBOARD_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors(include_input=False))) from None
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default=dashboard.host,
                        help="default: DASHBOARD_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, default=dashboard.port,
                        help="default: DASHBOARD_PORT or 8050")
    parser.add_argument("--refresh-s", type=float, default=5.0,
                        help="seconds between refreshes of the page")
    args = parser.parse_args(argv)
    dashboard = dashboard.model_copy(update={"host": args.host, "port": args.port})

    env = settings()
    logs.configure(env.log_level, env.log_format, service="dashboard")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per refresh per page
    database = conninfo_to_dict(env.database_url)  # host and name only: no password in logs
    # A snapshot must be read within the refresh interval (see Ledger), and never wait > 10 s.
    ledger = Ledger(env.database_url, timeout_s=min(10.0, 0.8 * args.refresh_s))
    app = create_app(ledger, dashboard, args.refresh_s)
    log.info("dashboard.start", url=f"http://{args.host}:{args.port}/",
             database=database.get("dbname"), database_host=database.get("host"),
             refresh_s=args.refresh_s, hosts=sorted(dashboard.allowed_names()),
             login=dashboard.login)
    try:
        app.run(host=args.host, port=args.port, debug=False)
    finally:
        ledger.close()


if __name__ == "__main__":
    main()
