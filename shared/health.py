"""Heartbeats: every service instance writes one to a KV bucket whose entries expire, so a
service with no fresh heartbeat is down. `smart-router health` and router.v1.health read it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field

from nats.js.errors import NoKeysError, NotFoundError
from nats.js.kv import KeyValue

SERVICES = ("classifier", "dispatcher", "escalator", "ledger")
HEARTBEAT_EVERY_S = 2.0
STALE_AFTER_S = 3 * HEARTBEAT_EVERY_S


@dataclass
class Counters:
    """What an instance has done since it started; shown by `health` to spot a stuck one."""

    handled: int = 0
    failed: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)


def instance_key(service: str) -> str:
    return f"{service}.{socket.gethostname().replace('.', '-')}-{os.getpid()}"


async def beat_forever(kv: KeyValue, service: str, counters: Counters) -> None:
    key = instance_key(service)
    while True:
        payload = {"service": service, "instance": key, "pid": os.getpid(), "at": time.time()}
        payload |= asdict(counters)
        with contextlib.suppress(Exception):  # a missed beat is what a down service looks like
            await kv.put(key, json.dumps(payload).encode())
        await asyncio.sleep(HEARTBEAT_EVERY_S)


async def snapshot(kv: KeyValue) -> dict:
    """Per service: its live instances and whether it is up."""
    instances: list[dict] = []
    try:
        keys = await kv.keys()
    except (NoKeysError, NotFoundError):
        keys = []
    now = time.time()
    for key in keys:
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            beat = json.loads(entry.value or b"{}")
            if now - beat.get("at", 0) <= STALE_AFTER_S:
                instances.append(beat)
    services = {
        name: {"up": False, "instances": []} for name in SERVICES
    }
    for beat in instances:
        service = services.setdefault(beat["service"], {"up": False, "instances": []})
        service["up"] = True
        service["instances"].append(beat)
    return {"ok": all(s["up"] for s in services.values()), "services": services, "at": now}
