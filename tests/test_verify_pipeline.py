"""Verification through the real pipeline: the router's services as processes on a NATS of
their own, with [escalation.verify] on, answered by the emulator's market. A confidently wrong
cheap answer (no hedge, confident logprobs) is caught by the verifier and answered one tier up;
a right one passes after one verifier call; the cost cap stops verification."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import nats
import psycopg
import pytest

from emulator.mistakes import final_line, truth
from services.ledger import stats
from shared import db
from smart_router import embedded
from tests import harness
from tests.conftest import _wait_until_up
from tests.harness import ask, rows_when_ready

VERIFY_CAP_USD = 0.0001  # a short question's check fits; a long one's worst case does not
SETTINGS = f"""
[escalation.verify]
enabled = true
signals = ["verifier"]
provider = "groq"
model = "llama-3.1-8b-instant"
task_types = ["math", "choice"]
max_cost_usd = {VERIFY_CAP_USD}
"""
QUESTION = "A baker fills 14 trays with 6 rolls each. How many rolls does he bake?"
LONG_QUESTION = ("A baker keeps careful records. " * 160) + QUESTION
RIGHT = final_line(truth(QUESTION))  # the market's truth, which the router never sees


@pytest.fixture(scope="module")
def verifying(servers, emulator_process, tmp_path_factory) -> Iterator[str]:
    """The services with verification on, on their own NATS and database; yields NATS' URL."""
    tmp = tmp_path_factory.mktemp("verify")
    config = tmp / "router.toml"
    config.write_text(harness.TEST_CONFIG.read_text() + SETTINGS)
    nats_server = embedded.EmbeddedNats.start(tmp / "nats")
    database_url = harness.fresh_database(servers.postgres_url)
    db.migrate(database_url)
    env = {**os.environ, "NATS_URL": nats_server.url, "DATABASE_URL": database_url,
           "ROUTER_CONFIG": str(config), "GATEWAY_PORT": "0",
           **harness.emulator_env(emulator_process.base)}
    (tmp / "logs").mkdir()
    processes = harness.Processes(env, tmp / "logs")
    try:
        for name in harness.SERVICES:
            processes.start(name)
        asyncio.run(_wait_until_up(nats_server.url))
        yield nats_server.url, database_url
    finally:
        processes.stop_all()
        nats_server.stop()
        with contextlib.suppress(psycopg.Error):
            harness.drop_database(servers.postgres_url, database_url)


@pytest.fixture
async def client(verifying):
    connection = await nats.connect(verifying[0])
    yield connection
    await connection.close()


@pytest.fixture
async def ledger(verifying):
    async with await psycopg.AsyncConnection.connect(verifying[1], autocommit=True) as conn:
        yield conn


def confidently_wrong_simple_tier(emulator) -> None:
    emulator.faults({"model": "claude-haiku-4-5", "action": "mistake"})


def path(reply: dict) -> list[tuple[str, str]]:
    return [(a["tier"], a["outcome"]) for a in reply["attempts"]]


async def test_a_confidently_wrong_answer_is_caught_and_answered_one_tier_up(
        client, ledger, emulator):
    confidently_wrong_simple_tier(emulator)

    reply = await ask(client, {"prompt": QUESTION, "tier": "simple"})

    assert path(reply)[:3] == [("simple", "weak"), ("simple", "verify"), ("medium", "ok")]
    assert reply["attempts"][0]["reason"] == "verifier"
    assert reply["attempts"][1]["reason"] == "verifier: wrong"
    assert reply["tier"] == "medium" and reply["escalated"] is True
    assert reply["response"].endswith(RIGHT)
    check = reply["attempts"][1]
    assert check["model"] == "llama-3.1-8b-instant" and check["cost_usd"] > 0
    assert reply["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in reply["attempts"]))
    rows = await rows_when_ready(
        ledger, "SELECT outcome, cost_usd FROM attempts WHERE request_id = %s AND "
        "outcome = 'verify' ORDER BY attempt", (reply["request_id"],),
        at_least=sum(1 for a in reply["attempts"] if a["outcome"] == "verify"))
    assert float(rows[0][1]) == pytest.approx(check["cost_usd"])
    assert (await stats.summary(ledger))["verification_cost_usd"] >= check["cost_usd"]


async def test_a_right_answer_passes_after_one_verifier_call(client, emulator):
    reply = await ask(client, {"prompt": QUESTION, "tier": "simple"})

    assert path(reply) == [("simple", "ok"), ("simple", "verify")]
    assert reply["attempts"][1]["reason"] == "verifier: right"
    assert reply["response"].endswith(RIGHT)
    assert reply["escalated"] is False


async def test_the_cost_cap_stops_verification(client, emulator):
    confidently_wrong_simple_tier(emulator)

    reply = await ask(client, {"prompt": LONG_QUESTION, "tier": "simple"})

    assert path(reply) == [("simple", "ok")]  # wrong, but checking it would cost too much
    assert reply["tier"] == "simple"


async def test_prompts_of_other_task_types_are_not_verified(client, emulator):
    reply = await ask(client, {"prompt": "Write a short poem about autumn leaves.",
                               "tier": "simple"})

    assert "verify" not in {a["outcome"] for a in reply["attempts"]}
