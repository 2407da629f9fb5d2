"""`python -m emulator [--host H] [--port P] [--scenario FILE.toml] [--latency-ms N]`."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from .app import create_app
from .scenario import Scenario, load_scenario

_BACKLOG = 2048  # a benchmark opens a thousand connections at once
_SHUTDOWN_TIMEOUT_S = 1.0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    scenario = load_scenario(args.scenario)
    if args.latency_ms is not None:
        scenario = Scenario.model_validate({**scenario.model_dump(), "latency_ms": args.latency_ms})
    web.run_app(
        create_app(scenario),
        host=args.host,
        port=args.port,
        access_log=None,
        backlog=_BACKLOG,
        handler_cancellation=True,  # a client that gives up frees its hung or slow handler
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        print=lambda _: print(f"emulator on http://{args.host}:{args.port}", flush=True),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMULATOR_PORT", "8900")))
    parser.add_argument(
        "--scenario",
        default=os.environ.get("EMULATOR_SCENARIO") or None,
        help="TOML scenario file (default: the packaged default_scenario.toml)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=None, help="override the scenario's base latency"
    )
    return parser


if __name__ == "__main__":
    main()
