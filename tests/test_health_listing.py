"""`health` lists every fresh heartbeat, every time, while beats are being written and copies
that stopped have deleted theirs. The listing once came from KeyValue.keys(), which now and
then reported an empty bucket under that load (every service down in the gateway's
/v1/health). On a NATS server of the test's own, since it writes the heartbeat bucket."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.js import JetStreamContext

from shared import health, subjects, topology
from smart_router import embedded
from tests.stage_helpers import stage_config

SNAPSHOTS, AT_ONCE = 600, 25


@pytest.fixture
async def js(tmp_path):
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    nc = await nats.connect(server.url)
    try:
        jetstream = nc.jetstream()
        config = stage_config()
        await topology.declare(jetstream, config.pipeline, config.ledger)
        yield jetstream
    finally:
        await nc.close()
        server.stop()


async def _beat(kv, service: str) -> None:
    beat = {"service": service, "instance": f"{service}.test", "at": time.time()}
    await kv.put(f"{service}.test", json.dumps(beat).encode())


async def test_every_fresh_beat_is_listed_while_beats_are_written(js: JetStreamContext):
    kv = await js.key_value(subjects.HEALTH_BUCKET)
    for copy in range(20):  # copies that stopped: their keys deleted
        await kv.put(f"escalator.gone-{copy}", b"{}")
        await kv.delete(f"escalator.gone-{copy}")
    for key, beat in (("odd.1", b'{"service": ["x"], "at": 1}'), ("odd.2", b'{"service": "x",'
                      b' "at": "now"}'), ("odd.3", b"[1]"), ("odd.4", b"not json")):
        await kv.put(key, beat)  # malformed beats: left out, not a failed report
    writing = True

    async def beat_on() -> None:
        while writing:
            await asyncio.gather(*(_beat(kv, service) for service in health.SERVICES))
            await asyncio.sleep(0.01)

    beats = asyncio.create_task(beat_on())
    try:
        await asyncio.sleep(0.05)
        reports = []
        for _ in range(SNAPSHOTS // AT_ONCE):
            reports += await asyncio.gather(*(health.snapshot(js) for _ in range(AT_ONCE)))
    finally:
        writing = False
        await beats

    missed = [r["problems"] for r in reports if not r["ok"]]
    assert missed == []
    assert all(len(s["instances"]) == 1 for r in reports for s in r["services"].values())
