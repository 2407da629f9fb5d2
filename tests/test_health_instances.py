"""`health` shows the copies that run: one that stops takes itself out at once, instead of
being shown, and counted as up, until its last heartbeat goes stale."""

from __future__ import annotations

import asyncio
import signal

from shared import health
from tests import harness


def pids(report: dict, service: str) -> set[int]:
    return {i["pid"] for i in report["services"][service]["instances"]}


async def test_a_copy_that_stops_leaves_health_at_once(stack, nc, tmp_path):
    js = nc.jetstream()
    processes = harness.Processes(stack.processes.env, tmp_path)
    processes.start("escalator")
    copy = processes.procs["escalator"]
    try:
        async with asyncio.timeout(60):
            while copy.pid not in pids(await health.snapshot(js), "escalator"):  # noqa: ASYNC110
                await asyncio.sleep(0.2)

        copy.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(copy.wait, 30) == 0
        report = await health.snapshot(js)  # its last beat is younger than STALE_AFTER_S

        assert copy.pid not in pids(report, "escalator")
        assert stack.processes.procs["escalator"].pid in pids(report, "escalator")
    finally:
        processes.stop_all()
