"""`smart-router up` as a fresh machine sees it: nothing answers at NATS_URL or DATABASE_URL and
there are no API keys, so it starts embedded NATS and PostgreSQL and the provider emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from smart_router import embedded

CLI = [sys.executable, "-m", "smart_router.cli"]
KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GROQ_API_KEY")


@pytest.fixture
def fresh_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.endswith("_BASE_URL")}
    env["NATS_URL"] = f"nats://127.0.0.1:{embedded.free_port()}"
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/none"
    env["DASHBOARD_PORT"] = str(embedded.free_port())
    return env


def start_up(env: dict[str, str], data: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "up", "--data-dir", str(data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def wait_healthy(env: dict[str, str], up: subprocess.Popen, log: Path, timeout_s=90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, log.read_text()
        done = subprocess.run([*CLI, "health", "--json"], env=env, capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"not healthy in time:\n{log.read_text()[-3000:]}")


def ledger_requests(env: dict[str, str]) -> int:
    """Requests in the ledger; 0 while the ledger does not answer yet."""
    done = subprocess.run([*CLI, "stats", "--json"], env=env, capture_output=True, text=True,
                          timeout=30)
    return json.loads(done.stdout)["requests"] if done.returncode == 0 else 0


def eventually(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def nats_port_closed(env: dict[str, str]) -> bool:
    port = int(env["NATS_URL"].rsplit(":", 1)[1])
    return eventually(lambda: not embedded.port_open("127.0.0.1", port), timeout_s=15)


def test_up_serves_requests_stops_cleanly_and_restarts_after_a_crash(fresh_env, tmp_path):
    data, log = tmp_path / "data", tmp_path / "up.log"

    up = start_up(fresh_env, data, log)
    wait_healthy(fresh_env, up, log)
    asked = subprocess.run([*CLI, "ask", "What is the capital of France?", "--json"],
                           env=fresh_env, capture_output=True, text=True, timeout=60)
    reply = json.loads(asked.stdout)
    assert asked.returncode == 0, asked.stderr
    assert reply["emulated"] is True and reply["cost_usd"] > 0
    assert "PROVIDER EMULATOR" in log.read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{fresh_env['DASHBOARD_PORT']}/",
                                timeout=10) as page:
        assert page.status == 200

    up.send_signal(signal.SIGINT)
    assert up.wait(60) == 0
    assert nats_port_closed(fresh_env)

    # A crash (kill -9) takes the children with it; the next `up` starts clean on the same data.
    crashed = start_up(fresh_env, data, log)
    wait_healthy(fresh_env, crashed, log)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    assert nats_port_closed(fresh_env)

    again = start_up(fresh_env, data, log)
    try:
        wait_healthy(fresh_env, again, log)
        # The first run's request is in the ledger, written then or caught up from JetStream
        # now (a batch a stopping ledger had fetched comes back after the consumer's ack wait).
        assert eventually(lambda: ledger_requests(fresh_env) >= 1, timeout_s=30)
    finally:
        again.send_signal(signal.SIGINT)
        assert again.wait(60) == 0
