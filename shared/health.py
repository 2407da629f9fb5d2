"""Heartbeats: every service instance writes one to a KV bucket whose entries expire, so a
service with no fresh heartbeat is down. `smart-router health` and router.v1.health read it.

The ledger's beat also carries its writers and its consumer's backlog: a ledger that beats but
commits nothing while events wait is stuck, and the snapshot says so (not ok).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared import subjects, topology

SERVICES = ("classifier", "dispatcher", "escalator", "ledger", "gateway")
HEARTBEAT_EVERY_S = 2.0
STALE_AFTER_S = 3 * HEARTBEAT_EVERY_S
BUSY_STUCK_AFTER_S = 30.0
# Batch jobs wait for the pipeline and none of the requests in it has ended for this long: their
# done notices are lost, or the stages after the classifier are stuck (a request ends in seconds,
# at worst in its tiers' provider timeouts).
BATCH_STALLED_AFTER_S = 600.0
STREAM_FULL_WARNING = 0.9  # a work stream past this share of its max_bytes is a problem


@dataclass
class WriterState:
    """One ledger writer: idle, writing, waiting_for_database or failed, since when."""

    state: str = "idle"
    since: float = field(default_factory=time.time)
    batches: int = 0

    def become(self, state: str) -> None:
        self.state, self.since = state, time.time()


@dataclass
class LedgerProgress:
    """The ledger's writers, its consumer's backlog (read from JetStream every beat) and its
    last commit. `oldest_unacked_at` is when the oldest event not yet acked was stored."""

    stuck_after_s: float
    writers: list[WriterState]
    last_commit_at: float | None = None
    pending: int | None = None
    redelivered: int | None = None
    ack_pending: int | None = None
    oldest_unacked_at: float | None = None
    backlog_read_at: float | None = None
    # The work streams' fill, bytes stored over their max_bytes (they refuse new work when
    # full: jobs, the pipeline's hops, the ledger's events), as last read.
    streams_full: dict[str, float] = field(default_factory=dict)


@dataclass
class Counters:
    """What an instance has done since it started; shown by `health` to spot a stuck one."""

    handled: int = 0
    failed: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    ledger: LedgerProgress | None = None  # the ledger's instances only
    url: str | None = None  # the gateway's instances only: where it serves HTTP
    # The classifier's model thread: since when it has been on its current prompt (None: idle).
    busy_since: float | None = None
    # The classifier's batch jobs: since when they have waited for the pipeline with none of
    # its requests ending (None: none waits).
    batch_stalled_since: float | None = None


# Two copies may share a host name and a pid (containers, each its pid 1, on one network
# namespace or with a fixed hostname): a per-process token keeps their heartbeats apart.
_PROCESS_TOKEN = secrets.token_hex(3)


def instance_key(service: str) -> str:
    return f"{service}.{socket.gethostname().replace('.', '-')}-{os.getpid()}-{_PROCESS_TOKEN}"


async def beat_forever(kv: KeyValue, service: str, counters: Counters) -> None:
    key = instance_key(service)
    while True:
        payload = {"service": service, "instance": key, "pid": os.getpid(), "at": time.time()}
        payload |= asdict(counters)
        with contextlib.suppress(Exception):  # a missed beat is what a down service looks like
            await kv.put(key, json.dumps(payload).encode())
        await asyncio.sleep(HEARTBEAT_EVERY_S)


async def snapshot(js: JetStreamContext) -> dict:
    """Per service: its live instances and whether it is up."""
    now = time.time()
    instances = [beat for beat in await _last_beats(js) if now - beat.get("at", 0) <= STALE_AFTER_S]
    services: dict[str, dict[str, Any]] = {
        name: {"up": False, "instances": []} for name in SERVICES
    }
    for beat in instances:
        service = services.setdefault(beat["service"], {"up": False, "instances": []})
        service["up"] = True
        service["instances"].append(beat)
    ledger = services["ledger"]
    ledger["backlog"] = ledger_backlog(ledger["instances"], now)
    problem = ledger_stuck(ledger["backlog"])
    ledger["stuck"] = problem is not None
    problems = [f"{name} is down: no fresh heartbeat" for name, s in services.items()
                if not s["up"]] + ([problem] if problem else []) + stuck_too_long(instances, now)
    problems += streams_filling(ledger["instances"])
    return {"ok": not problems, "services": services, "problems": problems, "at": now}


def unreadable(reason: str) -> dict:
    """The report when the heartbeats cannot be read: nothing can be shown to be up."""
    return {"ok": False, "services": {name: {"up": False, "instances": []} for name in SERVICES},
            "problems": [f"heartbeats unreadable: {reason}"], "at": time.time()}


async def _last_beats(js: JetStreamContext) -> list[dict]:
    beats = []
    for value in (await topology.latest_values(js, subjects.HEALTH_BUCKET)).values():
        with contextlib.suppress(ValueError):
            beat = json.loads(value)
            # Another identity's writing: one malformed beat must not fail the whole report.
            if (isinstance(beat, dict) and isinstance(beat.get("service"), str)
                    and isinstance(beat.get("at"), int | float)):
                beats.append(beat)
    return beats


# What an instance can be stuck on while it still beats from its event loop: the heartbeat's
# "since" field, how long is too long, and what to say ({s}: the seconds).
STUCK_SIGNS = {
    # the classifier's model thread on one prompt (a prompt takes milliseconds)
    "busy_since": (BUSY_STUCK_AFTER_S, "on one prompt for {s:.0f} s"),
    # its batch jobs waiting for the pipeline, none of its requests there ending
    "batch_stalled_since": (BATCH_STALLED_AFTER_S, "batch jobs have waited {s:.0f} s for the "
                            "pipeline with none of its requests ending"),
}


def stuck_too_long(instances: list[dict], now: float) -> list[str]:
    """Instances past one of STUCK_SIGNS' bounds: they beat, but do no work."""
    return [f"{beat['service']} {beat.get('instance')} is stuck: "
            + says.format(s=now - beat[field])
            for beat in instances for field, (after_s, says) in STUCK_SIGNS.items()
            if isinstance(beat.get(field), int | float) and now - beat[field] > after_s]


def streams_filling(ledger_beats: list[dict]) -> list[str]:
    """Work streams near their max_bytes, as the ledger last read them: past it, new jobs or
    hops are refused (overloaded) until the consumers catch up."""
    latest = max((b["ledger"] for b in ledger_beats if b.get("ledger")),
                 key=lambda p: p.get("backlog_read_at") or 0, default=None)
    fills = (latest or {}).get("streams_full") or {}
    return [f"{name} is {fill:.0%} full: new work is refused when it is full"
            for name, fill in sorted(fills.items())
            if isinstance(fill, int | float) and fill >= STREAM_FULL_WARNING]


def ledger_backlog(instances: list[dict], now: float) -> dict | None:
    """The ledger consumer's backlog, as the instance that read it last saw it, and the last
    commit of any instance (or, before the first, the earliest start)."""
    beats = [i for i in instances if i.get("ledger")]
    if not beats:
        return None
    latest = max((b["ledger"] for b in beats), key=lambda p: p["backlog_read_at"] or 0)
    commits = [b["ledger"]["last_commit_at"] for b in beats if b["ledger"]["last_commit_at"]]
    last_commit = max(commits) if commits else None
    quiet_since = last_commit or min(b["started_at"] for b in beats)
    oldest = latest["oldest_unacked_at"]
    return {
        "pending": latest["pending"], "redelivered": latest["redelivered"],
        "ack_pending": latest["ack_pending"],
        "oldest_unacked_age_s": None if oldest is None else round(now - oldest, 1),
        "last_commit_at": last_commit,
        "no_commit_for_s": round(now - quiet_since, 1),
        "stuck_after_s": min(b["ledger"]["stuck_after_s"] for b in beats),
        "writers": [w["state"] for b in beats for w in b["ledger"]["writers"]],
    }


def ledger_stuck(backlog: dict | None) -> str | None:
    """Why the ledger is stuck, if it is: events wait, and neither a commit nor the oldest
    waiting event is more recent than stuck_after_s (the age of the oldest event keeps a ledger
    that was merely idle until a moment ago from counting as stuck)."""
    if backlog is None:
        return None
    waiting = (backlog["pending"] or 0) + (backlog["ack_pending"] or 0)
    oldest = backlog["oldest_unacked_age_s"]
    idle_for = backlog["no_commit_for_s"] if oldest is None else min(
        backlog["no_commit_for_s"], oldest)
    if not waiting or idle_for < backlog["stuck_after_s"]:
        return None
    writers = ", ".join(sorted(set(backlog["writers"])))
    return (f"ledger is stuck: no commit for {backlog['no_commit_for_s']:.0f} s while "
            f"{waiting:,} events wait (writers: {writers})")
