"""Each service is built by `create_app(config, settings)`: nothing happens at import, and a
test can build one with other settings, in-process, on FastStream's in-memory broker."""

from __future__ import annotations

import json
import subprocess
import sys

from faststream.nats import TestNatsBroker

from services.ledger.worker import create_app as ledger_app
from shared import subjects
from shared.config import Settings, load_config
from tests import harness

SERVICES = ("classifier", "dispatcher", "escalator", "ledger", "gateway")


def test_importing_a_service_reads_no_config_and_connects_to_nothing():
    imports = "; ".join(f"import services.{name}.worker" for name in SERVICES)
    env = {"PATH": "", "ROUTER_CONFIG": "/nonexistent/router.toml",
           "NATS_URL": "nats://127.0.0.1:1", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}

    done = subprocess.run([sys.executable, "-c", imports], env=env, capture_output=True,
                          text=True, timeout=60, cwd=harness.ROOT)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""  # no log line either: no service was built


async def test_a_service_runs_in_process_with_other_settings():
    config = load_config(harness.TEST_CONFIG)
    app = ledger_app(config, Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    async with TestNatsBroker(app.broker) as broker:
        reply = await broker.request(b'{"days": 0}', subjects.STATS)

    error = json.loads(reply.body)["error"]
    assert error["code"] == "invalid_request" and "days" in error["message"]


def test_a_service_s_command_line_takes_help_and_refuses_anything_else():
    """Before, arguments were ignored: `python -m services.ledger --help` started the ledger
    against the default servers and migrated their database."""
    env = {"PATH": "", "NATS_URL": "nats://127.0.0.1:1",
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}  # nothing there, if it ran
    for module in [*(f"services.{name}" for name in SERVICES), "shared.topology"]:
        helped = subprocess.run([sys.executable, "-m", module, "--help"], env=env,
                                capture_output=True, text=True, timeout=60, cwd=harness.ROOT)
        refused = subprocess.run([sys.executable, "-m", module, "--port", "1"], env=env,
                                 capture_output=True, text=True, timeout=60, cwd=harness.ROOT)

        assert helped.returncode == 0 and "Configuration section" in helped.stdout, module
        assert refused.returncode == 2 and "unrecognized arguments: --port 1" in refused.stderr
