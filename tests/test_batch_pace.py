"""Batch jobs are taken into the pipeline a bounded few at a time, and a job's deadline starts
when it is taken (services/classifier/batch_pace.py)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
from collections.abc import Iterator

import nats
import pytest

from services.classifier.batch_pace import BatchPace
from shared import subjects, topology
from shared.config import load_config
from smart_router import client
from smart_router.embedded import EmbeddedNats
from tests import harness
from tests.conftest import _wait_until_up


async def test_a_job_waiting_in_its_stream_is_not_aged_out(tmp_path):
    """Before, the jobs stream had the events' age limit: a job still waiting past it vanished
    with no result, no ledger row and no dead letter."""
    server = EmbeddedNats.start(tmp_path / "nats")
    nc = await nats.connect(server.url)
    try:
        config = load_config(harness.TEST_CONFIG)
        pipeline = config.pipeline.model_copy(update={"events_max_age_s": 1.0,
                                                      "dedup_window_s": 1.0})
        (jobs,) = [s for s in topology.streams(pipeline) if s.name == subjects.JOBS_STREAM]
        await nc.jetstream().add_stream(jobs)
        await nc.jetstream().publish(subjects.JOBS, b'{"prompt": "Name a colour."}')
        await asyncio.sleep(2.5)
        info = await nc.jetstream().stream_info(subjects.JOBS_STREAM)
    finally:
        await nc.close()
        server.stop()

    assert info.state.messages == 1


async def test_a_job_waits_for_a_slot_freed_by_a_done_notice_or_a_deadline():
    pace = BatchPace(limit=1)
    pace._counting.set()  # as open() does once the done subject is listened to
    await pace.take("a", 60)
    second = asyncio.create_task(pace.take("b", 0.5))
    await asyncio.sleep(0.7)  # longer than b's lifetime: it counts from when b is taken
    assert not second.done()  # a holds the one slot
    pace.done("a")
    await asyncio.wait_for(second, 1)
    third = asyncio.create_task(pace.take("c", 60))
    await asyncio.sleep(0.2)
    assert not third.done()  # b's slot holds for its lifetime...
    await asyncio.wait_for(third, 5)  # ...and, its notice lost, is freed at its deadline
    assert pace.in_flight == 1


@pytest.fixture(scope="module")
def slow_stack(database_url: str, emulator_process, tmp_path_factory) -> Iterator[str]:
    """The services on a NATS of their own (the suite's stack would take the jobs), two
    dispatcher slots, a 4 s batch deadline and four jobs in the pipeline at once."""
    tmp = tmp_path_factory.mktemp("slow")
    server = EmbeddedNats.start(tmp / "nats")
    config = tmp / "router.toml"
    config.write_text(harness.TEST_CONFIG.read_text()
                      .replace("[limits]\n", "[limits]\nbatch_timeout_s = 4.0\n")
                      .replace("[pipeline]\n", "[pipeline]\ndispatcher_concurrency = 2\n"
                                               "max_batch_in_flight = 4\n"))
    env = {**os.environ, "NATS_URL": server.url, "DATABASE_URL": database_url,
           "ROUTER_CONFIG": str(config), "GATEWAY_PORT": "0",
           **harness.emulator_env(emulator_process.base)}
    processes = harness.Processes(env, tmp)
    for name in harness.SERVICES:
        processes.start(name)
    try:
        asyncio.run(_wait_until_up(server.url))
        yield server.url
    finally:
        processes.stop_all()
        server.stop()


async def test_a_large_job_s_tail_is_not_timed_out_waiting_in_the_pipeline(slow_stack, emulator,
                                                                          conn, tmp_path):
    """40 lines, 2 calls at once of 0.5 s each (20 s of work), a 4 s deadline per line. Before,
    the whole job went into the pipeline at once with its clocks running: 26 of 40 ended
    `timeout`, most with no call made."""
    emulator.faults(latency_ms=500)
    lines = tmp_path / "big.jsonl"
    lines.write_text("".join(json.dumps({"prompt": f"What is {i} plus 1?"}) + "\n"
                             for i in range(40)))
    nc = await nats.connect(slow_stack)
    try:
        sent = await client.submit(nc, lines, None, lambda done, total: None)
        async with asyncio.timeout(120):
            got = [r async for r in client.results(nc, sent.job_id, expect=set(sent.fresh),
                                                   idle_timeout=30)]
    finally:
        await nc.close()
    rows = await harness.rows_when_ready(
        conn, "SELECT status FROM requests WHERE job_id = %s", (sent.job_id,), at_least=40)

    codes = collections.Counter(r.get("error", {}).get("code", "ok") for r in got)
    assert codes == {"ok": 40}
    assert collections.Counter(rows) == {("ok",): 40}
