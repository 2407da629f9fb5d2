"""`python -m smart_router.bench.floors`: every floor is measured (a positive CPU figure for each
part, from a process that did the work), on an embedded nats-server and the provider emulator."""

from __future__ import annotations

import json
import subprocess
import sys

from tests import harness


def test_every_floor_is_measured():
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.bench.floors", "--messages", "300", "--calls", "40",
         "--prompts", "30", "--json"],
        capture_output=True, text=True, timeout=180, cwd=harness.ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for mode in ("faststream", "nats-py"):
        hop = report[f"hop_{mode}"]
        assert hop["messages"] == 300 and hop["per_s"] > 0
        assert hop["hop_cpu_ms"] > 0 and hop["nats_server_cpu_ms"] >= 0
    for provider in ("groq", "openai", "anthropic"):
        assert report[f"call_{provider}"]["cpu_ms"] > 0
    model = report["classifier_model"]
    assert model["prompts"] == 30 and model["cpu_ms"] > 0 and 0 <= model["share_to_e5"] <= 1
