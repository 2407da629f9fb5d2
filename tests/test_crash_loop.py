"""A job that kills its classifier on every delivery: no handler ever settles it, so JetStream
gives up on it after max_deliver deliveries. The ledger, told by JetStream's advisory, records
it as a dead letter, answers the job with an error and removes it from its stream.

Own NATS server, own config (1 s ack wait, 2 deliveries) and only the ledger running: the test
itself is the crashing classifier, holding the classifier's deliveries and never acking them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from shared import subjects, topology
from shared.config import config
from smart_router import client, embedded
from tests import harness

pytestmark = pytest.mark.faults
MAX_DELIVER = 2


@pytest.fixture
def isolated_nats(tmp_path) -> Iterator[str]:
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    yield server.url
    server.stop()


@pytest.fixture
def ledger_only(isolated_nats: str, database_url: str, tmp_path) -> Iterator[harness.Processes]:
    config = tmp_path / "crash-loop.toml"
    config.write_text(f"[pipeline]\nack_wait_s = 1.0\nmax_deliver = {MAX_DELIVER}\n")
    env = {**os.environ, "NATS_URL": isolated_nats, "DATABASE_URL": database_url,
           "ROUTER_CONFIG": str(config)}
    processes = harness.Processes(env, tmp_path)
    processes.start("ledger")
    yield processes
    processes.stop_all()


@pytest.fixture
async def crash_looping_classifier(isolated_nats: str, ledger_only) -> AsyncIterator[list]:
    """Takes the classifier's deliveries and drops them, as a process that dies mid-job does."""
    nc = await nats.connect(isolated_nats)
    deliveries: list = []

    async def die(msg) -> None:
        deliveries.append(msg)

    async with asyncio.timeout(60):
        while True:  # the ledger declares the topology when it starts
            try:
                await nc.jetstream().consumer_info(subjects.JOBS_STREAM, "classifier")
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.2)
    classifier = topology.push_consumers(config().pipeline)["classifier"]
    await nc.subscribe(classifier.deliver_subject, queue=classifier.name, cb=die)
    yield deliveries
    await nc.close()


async def test_a_job_that_crash_loops_its_stage_is_dead_lettered_and_answered(
        isolated_nats, crash_looping_classifier, conn):
    nc = await nats.connect(isolated_nats)
    js = nc.jetstream()
    job_id = f"loop-{uuid.uuid4().hex[:8]}"
    ack = await js.publish(subjects.JOBS, (
        f'{{"job_id": "{job_id}", "request_id": "{job_id}-1", "prompt": "Hi"}}').encode())

    async with asyncio.timeout(60):
        results = [r async for r in client.results(nc, job_id, expect={f"{job_id}-1"})]

    assert results[0]["error"]["code"] == "dead_letter"
    assert len(crash_looping_classifier) == MAX_DELIVER
    rows = await harness.rows_when_ready(
        conn, "SELECT deliveries, reason, request_id FROM dead_letters "
              "WHERE subject = %s AND request_id = %s", (subjects.JOBS, f"{job_id}-1"))
    assert rows[0][0] == MAX_DELIVER and "classifier" in rows[0][1]
    request = await harness.rows_when_ready(
        conn, "SELECT status, error_code FROM requests WHERE request_id = %s", (f"{job_id}-1",))
    assert request[0] == ("error", "dead_letter")
    # Nothing is stuck: the job left its work-queue stream, the advisory its own.
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_msg(subjects.JOBS_STREAM, ack.seq)
    async with asyncio.timeout(10):
        while (await js.stream_info(subjects.ADVISORIES_STREAM)).state.messages:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await nc.close()
