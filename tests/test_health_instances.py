"""`health` shows the copies that run: one that stops takes itself out at once, instead of
being shown, and counted as up, until its last heartbeat goes stale."""

from __future__ import annotations

import asyncio
import signal

import nats

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


async def test_a_classifier_wedged_on_one_prompt_turns_health_red():
    """The model thread hangs on one prompt (a native deadlock, a read that never ends): the
    heartbeat says since when the thread has been busy, and past BUSY_STUCK_AFTER_S the report
    names it. Before, requests went unanswered while every service showed up and health was
    ok."""
    import dataclasses
    import threading
    import time

    from services.classifier.chain import Classifier
    from services.classifier.local_model import LocalModel
    from tests.stage_helpers import stage_config

    release = threading.Event()

    class Hanging(LocalModel):
        def predict(self, text: str):
            if "Spain" in text:
                release.wait(30)
            return super().predict(text)

    config = stage_config().classifier.model_copy(update={"backends": ["local"]})
    counters = health.Counters()
    classifier = Classifier(config, local=Hanging(), counters=counters)
    await classifier.classify("What is the capital of France?")
    assert counters.busy_since is None

    wedged = asyncio.create_task(classifier.classify("What is the capital of Spain?"))
    async with asyncio.timeout(10):
        while counters.busy_since is None:  # noqa: ASYNC110 (the thread sets it)
            await asyncio.sleep(0.01)
    beat = {"service": "classifier", "instance": "c1"} | dataclasses.asdict(counters)
    later = time.time() + health.BUSY_STUCK_AFTER_S + 1

    assert health.stuck_too_long([beat], time.time()) == []
    (problem,) = health.stuck_too_long([beat], later)
    assert problem.startswith("classifier c1 is stuck: on one prompt for")

    release.set()
    await asyncio.wait_for(wedged, 10)
    assert counters.busy_since is None


async def test_a_work_stream_nearly_full_is_a_problem_in_health(tmp_path):
    """The jobs stream at 95% of its max_bytes, read as the ledger reads it each beat, is named
    in the report; past 100% new jobs are refused (overloaded). Before, health stayed ok
    until then, and after."""
    from nats.js.api import DiscardPolicy, StreamConfig

    from services.ledger import backlog
    from shared import subjects
    from smart_router.embedded import EmbeddedNats

    server = EmbeddedNats.start(tmp_path / "nats")
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=subjects.JOBS_STREAM, subjects=[subjects.JOBS],
                                         max_bytes=100_000, discard=DiscardPolicy.NEW))
        while (await js.stream_info(subjects.JOBS_STREAM)).state.bytes < 95_000:
            await js.publish(subjects.JOBS, b"x" * 1000)
        fills = await backlog._fills(js)  # the other work streams are not there: left out
    finally:
        await nc.close()
        server.stop()
    beat = {"ledger": {"backlog_read_at": 1.0, "streams_full": fills}}

    assert list(fills) == [subjects.JOBS_STREAM] and fills[subjects.JOBS_STREAM] >= 0.95
    (problem,) = health.streams_filling([beat])
    assert problem.startswith(f"{subjects.JOBS_STREAM} is 9") and "full" in problem
    assert health.streams_filling([{"ledger": {"backlog_read_at": 1.0,
                                               "streams_full": {"ROUTER_JOBS": 0.5}}}]) == []
