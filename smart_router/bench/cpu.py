"""CPU time per process over a benchmark run, so that a throughput comes with what it cost.

The processes are found, not guessed by name: each service instance by the pid its heartbeat
carries (kept only when that pid runs `services.<name>` here, so a stale beat or another host's
pid counts for nothing), nats-server by the port the bench's own connection reached, PostgreSQL
as the parent of a backend the bench opens (the postmaster; its backends and helpers are its
children), the emulator by the port of --emulator. A process's CPU is its own plus its
descendants', live or already reaped, so PostgreSQL's backends that come and go are counted.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil
import psycopg
from nats.aio.client import Client

from shared.health import SERVICES

from .. import client
from .pipeline import say

# The router's own processes; the gateway counts only when the load goes through it.
ROUTER = ("classifier", "dispatcher", "escalator", "ledger", "nats-server", "postgresql")


@dataclass
class Group:
    """One role's processes, and their CPU seconds when the meter started."""

    processes: list[psutil.Process]
    started_s: float = 0.0

    def cpu_s(self) -> float:
        total = 0.0
        for root in self.processes:
            for process in (root, *_descendants(root)):
                # A reaped child's time is in its parent's children_* fields from then on.
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system + times.children_user + \
                        times.children_system
        return total

    def gone(self) -> list[int]:
        return [p.pid for p in self.processes if not p.is_running()]


@dataclass
class Meter:
    groups: dict[str, Group]
    in_router: tuple[str, ...]
    missing: list[str] = field(default_factory=list)
    _wall_started: float = 0.0
    _load_started: tuple[float, ...] = ()

    @classmethod
    async def find(cls, nc: Client, database_url: str, emulator: str | None,
                   via_gateway: bool = False) -> Meter:
        found: dict[str, list[psutil.Process]] = await _services(nc)
        found["nats-server"] = _listening(nc.connected_url.port if nc.connected_url else None,
                                          "nats-server")
        found["postgresql"] = await _postmaster(database_url)
        if emulator:
            found["emulator"] = _listening(urlsplit(emulator).port, "emulator")
        found["bench"] = [psutil.Process()]
        roles = (*ROUTER, "gateway") if via_gateway else ROUTER
        missing = [role for role in roles if not found.get(role)]
        if missing:
            say(f"CPU: not found on this machine, not counted: {', '.join(missing)}")
        return cls({role: Group(ps) for role, ps in found.items() if ps},
                   tuple(r for r in roles if r not in missing), missing)

    def start(self) -> None:
        for group in self.groups.values():
            group.started_s = group.cpu_s()
        self._wall_started = time.perf_counter()
        self._load_started = os.getloadavg()

    def report(self, requests: int) -> dict:
        """CPU milliseconds per request since start(), per role, and the router's total (the
        emulator and the bench are the load, not the router, and stay out of it)."""
        seconds = time.perf_counter() - self._wall_started
        used = {role: g.cpu_s() - g.started_s for role, g in self.groups.items()}
        per_request = {role: round(s * 1000 / requests, 3) for role, s in used.items()}
        gone = {role: pids for role, g in self.groups.items() if (pids := g.gone())}
        if gone:
            say(f"CPU: processes ended during the run, their time is missing: {gone}")
        return {
            "requests": requests,
            "seconds": round(seconds, 2),
            "ms_per_request": per_request,
            "router_ms_per_request": round(sum(per_request[r] for r in self.in_router), 3),
            "router_counts": list(self.in_router),
            "not_found": self.missing,
            "cores_busy": round(sum(used.values()) / seconds, 2) if seconds else None,
            "pids": {role: [p.pid for p in g.processes] for role, g in self.groups.items()},
            "load_average": {"start": [round(x, 2) for x in self._load_started],
                             "end": [round(x, 2) for x in os.getloadavg()]},
        }


async def _services(nc: Client) -> dict[str, list[psutil.Process]]:
    report = await client.service_health(nc)
    found: dict[str, list[psutil.Process]] = {}
    for name in SERVICES:
        for instance in report["services"].get(name, {}).get("instances", []):
            process = _running(instance.get("pid"), f"services.{name}")
            if process is not None:
                found.setdefault(name, []).append(process)
    return found


def _running(pid: int | None, command: str) -> psutil.Process | None:
    """The process `pid` if it is here and runs `command`."""
    if not pid:
        return None
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if command in " ".join(process.cmdline()):
            return process
    return None


def _listening(port: int | None, command: str) -> list[psutil.Process]:
    """The process that listens on this TCP port of this machine and runs `command` (not, say,
    a container engine's proxy in front of it)."""
    if port is None:
        return []
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections("tcp"):
            if (conn.status == psutil.CONN_LISTEN and conn.laddr
                    and conn.laddr.port == port):
                process = _running(conn.pid, command)
                return [process] if process is not None else []
    return []


async def _postmaster(database_url: str) -> list[psutil.Process]:
    """PostgreSQL's postmaster: the parent of the backend serving our own connection."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        if row is None:
            return []
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(row[0]).parent()
            if parent is not None and "postgres" in parent.name():
                return [parent]
    return []


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return process.children(recursive=True)
    return []
