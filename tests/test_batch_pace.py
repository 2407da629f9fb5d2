"""Batch jobs are taken into the pipeline a bounded few at a time, and a job's deadline starts
when it is taken (services/classifier/batch_pace.py)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.classifier import batch_pace
from services.classifier.batch_pace import BatchPace
from shared import health, subjects, topology
from shared.config import load_config
from smart_router import client
from smart_router.embedded import EmbeddedNats
from tests import harness
from tests.conftest import stack_of_its_own


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


async def test_a_job_delivered_again_is_counted_once_and_no_slot_outlives_its_cap(monkeypatch):
    """A redelivery of a job in the pipeline takes nothing (and must not free the first
    copy's slot); a slot whose done notice is lost is freed after SLOT_HELD_AT_MOST_S, not at
    the hour of a batch deadline (a copy's waiting jobs hold handlers the copies share)."""
    monkeypatch.setattr(batch_pace, "SLOT_HELD_AT_MOST_S", 0.3)
    pace = BatchPace(limit=1)
    pace._counting.set()

    assert await pace.take("a", 3600) is True
    assert await pace.take("a", 3600) is False and pace.in_flight == 1
    await asyncio.wait_for(pace.take("b", 3600), 3)  # a's notice never came


async def test_jobs_waiting_with_no_request_ending_turn_health_red():
    counters = health.Counters()
    pace = BatchPace(limit=1, counters=counters)
    pace._counting.set()
    await pace.take("a", 60)
    assert counters.batch_stalled_since is None  # nothing waits
    waiting = asyncio.create_task(pace.take("b", 60))
    await asyncio.sleep(0.05)
    beat = {"service": "classifier", "instance": "c1", **dataclasses.asdict(counters)}
    later = time.time() + health.BATCH_STALLED_AFTER_S + 1

    assert health.stuck_too_long([beat], time.time()) == []
    (problem,) = health.stuck_too_long([beat], later)
    assert "classifier c1 is stuck: batch jobs have waited" in problem
    pace.done("a")
    await asyncio.wait_for(waiting, 1)
    assert counters.batch_stalled_since is None


@pytest.fixture(scope="module")
def slow_stack(database_url: str, emulator_process, tmp_path_factory) -> Iterator[str]:
    """Two dispatcher slots, a 4 s batch deadline and four jobs in the pipeline at once."""
    with stack_of_its_own(tmp_path_factory.mktemp("slow"), database_url, emulator_process,
                          limits="batch_timeout_s = 4.0\n",
                          pipeline="dispatcher_concurrency = 2\nmax_batch_in_flight = 4\n"
                          ) as stack:
        yield stack.nats_url


@pytest.fixture(scope="module")
def one_at_a_time(database_url: str, emulator_process, tmp_path_factory) -> Iterator[str]:
    """One classifier handler, one job in the pipeline, one dispatcher slot, a 2 s ack wait."""
    with stack_of_its_own(tmp_path_factory.mktemp("tight"), database_url, emulator_process,
                          pipeline="dispatcher_concurrency = 1\nclassifier_concurrency = 1\n"
                                   "max_batch_in_flight = 1\n", ack_wait_s=2.0) as stack:
        yield stack.nats_url


async def test_a_large_job_s_tail_is_not_timed_out_waiting_in_the_pipeline(slow_stack, emulator,
                                                                          conn, tmp_path):
    """40 lines, 2 calls at once of 0.5 s each (20 s of work), a 4 s deadline per line. Before,
    the whole job went into the pipeline at once with its clocks running: 26 of 40 ended
    `timeout`, most with no call made."""
    emulator.faults(latency_ms=500)
    codes, rows = await run_job(slow_stack, conn, tmp_path / "big.jsonl", 40)

    assert codes == {"ok": 40}
    assert rows == {("ok",): 40}


async def test_jobs_wait_for_the_pipeline_in_their_handlers_not_unseen_behind_them(
        one_at_a_time, emulator, conn, tmp_path):
    """Before, the classifier's consumer let four jobs per handler out of the stream: those
    behind a handler waiting for the pipeline waited unseen, were redelivered every ack wait
    and ended as dead letters (lines 7 and 8 of 8, in a review)."""
    emulator.faults(latency_ms=1500)
    codes, rows = await run_job(one_at_a_time, conn, tmp_path / "eight.jsonl", 8)

    assert codes == {"ok": 8}
    assert rows == {("ok",): 8}


async def run_job(url: str, conn, path: Path, lines: int) -> tuple[collections.Counter, ...]:
    """Submit a job of `lines` lines and wait for every result: the results' codes, and the
    ledger's statuses."""
    await asyncio.to_thread(path.write_text, "".join(
        json.dumps({"prompt": f"What is {i} plus 1?"}) + "\n" for i in range(lines)))
    nc = await nats.connect(url)
    try:
        sent = await client.submit(nc, path, None, lambda done, total: None)
        async with asyncio.timeout(120):
            got = [r async for r in client.results(nc, sent.job_id, expect=set(sent.fresh),
                                                   idle_timeout=30)]
    finally:
        await nc.close()
    rows = await harness.rows_when_ready(
        conn, "SELECT status FROM requests WHERE job_id = %s", (sent.job_id,), at_least=lines)
    return (collections.Counter(r.get("error", {}).get("code", "ok") for r in got),
            collections.Counter(rows))
