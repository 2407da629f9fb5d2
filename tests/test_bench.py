"""`smart-router bench` on the real stack: CPU per request for every process it names, and
`--unique` prompts that no cache along the way has seen, whose cost to the classifier is the
cost of the test split's own prompts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from services.classifier.local_model import LocalModel
from shared.messages import fingerprint
from smart_router.bench.pipeline import Prompts
from tests import harness

REQUESTS = 200
# PostgreSQL is found and counted too, but what it does for 200 requests can fall under the
# kernel's 10 ms accounting tick, so only its presence is asserted.
BUSY = ("classifier", "dispatcher", "escalator", "ledger", "nats-server", "emulator", "bench")


def bench(stack, *flags: str) -> dict:
    env = {**stack.processes.env, "NATS_URL": stack.nats_url, "DATABASE_URL": stack.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.cli", "bench", "--mode", "online", "--requests",
         str(REQUESTS), "--concurrency", "20", "--emulator", stack.emulator.base, "--json",
         *flags], env=env, capture_output=True, text=True, timeout=180, cwd=harness.ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def prompt_hashes(conn, tenant: str) -> list[str]:
    rows = await harness.rows_when_ready(
        conn, "SELECT prompt_sha256 FROM requests WHERE tenant = %s", (tenant,),
        at_least=REQUESTS)
    return [sha for (sha,) in rows]


@pytest.fixture(scope="module")
def runs(stack) -> list[dict]:
    return [bench(stack), bench(stack, "--unique"), bench(stack, "--no-unique")]


def test_cpu_per_request_is_reported_for_every_process(runs):
    for report in runs:
        cpu = report["cpu"]
        assert report["online"]["answered"] == REQUESTS
        assert cpu["not_found"] == []
        for role in BUSY:
            assert cpu["ms_per_request"][role] > 0, (role, cpu)
        assert cpu["ms_per_request"]["postgresql"] >= 0
        assert all(cpu["pids"][role] for role in (*BUSY, "postgresql"))
        router = sum(cpu["ms_per_request"][r] for r in cpu["router_counts"])
        assert cpu["router_ms_per_request"] == pytest.approx(router, abs=0.01)
        assert {"emulator", "bench"}.isdisjoint(cpu["router_counts"])
        assert set(cpu["load_average"]) == {"start", "end"}


async def test_unique_prompts_are_new_in_every_run_and_repeating_ones_are_the_split(runs, conn):
    default, unique, repeating = runs
    assert default["unique_prompts"] and unique["unique_prompts"]
    assert not repeating["unique_prompts"]
    split = {fingerprint(Prompts.test_split(False)[i])[0] for i in range(REQUESTS)}

    first = set(await prompt_hashes(conn, default["tenant"]))
    second = set(await prompt_hashes(conn, unique["tenant"]))
    assert len(first) == len(second) == REQUESTS
    assert not first & second and not (first | second) & split
    assert set(await prompt_hashes(conn, repeating["tenant"])) == split


def test_the_unique_tag_leaves_the_classifiers_work_unchanged():
    """The tag is whitespace the features and e5 strip: same stage, same probabilities."""
    model, original, tagged = LocalModel(), Prompts.test_split(False), Prompts.test_split(True)
    stages = set()
    for i in range(60):
        assert tagged[i] != original[i]
        plain, marked = model.predict(original[i]), model.predict(tagged[i])
        assert marked.stage == plain.stage
        assert marked.probabilities.tolist() == pytest.approx(plain.probabilities.tolist())
        stages.add(plain.stage)
    assert stages == {"fast", "full"}  # both the lexical model and e5 saw tagged prompts
