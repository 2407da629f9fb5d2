"""The pipeline end to end: four service processes on real NATS (JetStream) and PostgreSQL, the
providers' official SDKs pointed at the emulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from shared import subjects
from shared.config import load_config
from smart_router import client
from tests.harness import TEST_CONFIG, ask, rows_when_ready

CONFIG = load_config(TEST_CONFIG)
TIER_MODELS = {t.name: {m.model for m in t.models} for t in CONFIG.tiers}


async def ledger_row(conn: psycopg.AsyncConnection, request_id: str) -> tuple:
    """The request's ledger row, once the ledger has written it."""
    rows = await rows_when_ready(
        conn,
        "SELECT status, error_code, model_used, tier, cost_usd, baseline_cost_usd, escalated,"
        " attempts, input_tokens, output_tokens FROM requests WHERE request_id = %s",
        (request_id,),
    )
    return rows[0]


async def test_online_request_is_routed_answered_and_recorded(stack, nc, conn):
    reply = await ask(nc, {"prompt": "What is the capital of France?", "tenant": "acme"})

    assert "error" not in reply, reply
    assert reply["response"].strip()
    assert reply["difficulty_tag"] in ("simple", "medium", "complex")
    assert reply["model_used"] in TIER_MODELS[reply["tier"]]
    assert reply["cost_usd"] > 0 and reply["latency_ms"] > 0
    assert reply["input_tokens"] > 0 and reply["output_tokens"] > 0
    assert reply["escalated"] is False and reply["emulated"] is True
    assert [a["model"] for a in reply["attempts"]] == [reply["model_used"]]
    assert reply["saved_usd"] == pytest.approx(reply["baseline_cost_usd"] - reply["cost_usd"])

    row = await ledger_row(conn, reply["request_id"])
    assert row[0] == "ok" and row[2] == reply["model_used"] and row[3] == reply["tier"]
    assert float(row[4]) == pytest.approx(reply["cost_usd"], abs=1e-9)
    assert float(row[5]) == pytest.approx(reply["baseline_cost_usd"], abs=1e-9)


async def test_a_pinned_tier_is_where_the_request_starts(stack, nc):
    reply = await ask(nc, {"prompt": "hello there", "tier": "complex"})

    assert reply["tier"] == "complex"
    assert reply["model_used"] in TIER_MODELS["complex"]


async def test_a_truncated_answer_climbs_every_tier_and_the_best_is_returned(stack, nc, conn):
    # 3 tokens cannot hold any answer: every tier truncates, so each one is tried once.
    reply = await ask(nc, {"prompt": "Explain how DNS resolution works", "max_tokens": 3,
                           "tier": "simple"})

    assert [a["tier"] for a in reply["attempts"]] == ["simple", "medium", "complex"]
    assert all(a["outcome"] == "weak" and "truncation" in a["reason"]
               for a in reply["attempts"])
    assert reply["escalated"] is True
    assert reply["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in reply["attempts"]))
    row = await ledger_row(conn, reply["request_id"])
    assert row[6] is True and row[7] == 3
    cur = await conn.execute("SELECT count(*) FROM attempts WHERE request_id = %s",
                             (reply["request_id"],))
    assert (await cur.fetchone())[0] == 3


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"", "invalid_request", "not valid JSON"),
        (b"{not json", "invalid_request", "not valid JSON"),
        (b"[1, 2]", "invalid_request", "object"),
        (b"{}", "invalid_request", "exactly one of 'prompt' or 'messages'"),
        (b'{"prompt": "   "}', "invalid_request", "empty"),
        (b'{"prompt": 42}', "invalid_request", "'prompt'"),
        (b'{"prompt": "hi", "max_tokens": "ten"}', "invalid_request", "'max_tokens'"),
        (b'{"prompt": "hi", "colour": "red"}', "invalid_request", "unknown field 'colour'"),
        (b'{"prompt": "hi", "tier": "gold"}', "invalid_request", "unknown tier 'gold'"),
        (json.dumps({"prompt": "x" * 400_001}).encode(), "prompt_too_large", "limit"),
    ],
)
async def test_bad_input_gets_an_error_reply_fast_and_is_recorded(stack, nc, conn, body, code,
                                                                  says):
    started = time.monotonic()
    reply = await ask(nc, body, timeout=1.0)

    assert time.monotonic() - started < 1.0
    assert reply["error"]["code"] == code
    assert says in reply["error"]["message"]
    row = await ledger_row(conn, reply["request_id"])
    assert row[0] == "error" and row[1] == code
    # The consumer survived: the next good request is answered.
    assert "error" not in await ask(nc, {"prompt": "Say hi"})


async def test_batch_jobs_come_back_once_each_and_resubmitting_runs_nothing(stack, nc, conn,
                                                                            tmp_path: Path):
    jobs = tmp_path / "jobs.jsonl"
    prompts = [f"Convert {i} kilometres to miles" for i in range(20)]
    jobs.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    first = await client.submit(nc, jobs, None, lambda done, total: None)
    answers = [r async for r in client.results(nc, first.job_id,
                                                expect=set(first.request_ids))]
    again = await client.submit(nc, jobs, None, lambda done, total: None)

    assert first.submitted == 20 and first.duplicates == 0
    assert again.job_id == first.job_id and again.submitted == 0 and again.duplicates == 20
    assert sorted(r["request_id"] for r in answers) == sorted(first.request_ids)
    assert all("error" not in r and r["job_id"] == first.job_id for r in answers)
    await asyncio.sleep(1.0)  # would a duplicate run have produced a second result?
    stored = [r async for r in client.results(nc, first.job_id)]
    assert len(stored) == 20
    for request_id in first.request_ids:
        await ledger_row(conn, request_id)
    cur = await conn.execute("SELECT count(*) FROM requests WHERE job_id = %s", (first.job_id,))
    assert (await cur.fetchone())[0] == 20


async def test_a_bad_job_gets_an_error_result_and_a_ledger_row(stack, nc, conn):
    job_id = f"bad-{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    await js.publish(subjects.JOBS, json.dumps({"job_id": job_id, "request_id": f"{job_id}-1",
                                                "prompt": ""}).encode())

    results = [r async for r in client.results(nc, job_id, expect={f"{job_id}-1"})]

    assert results[0]["error"]["code"] == "invalid_request"
    row = await ledger_row(conn, f"{job_id}-1")
    assert row[0] == "error"


async def test_stats_agree_with_the_ledger(stack, nc, conn):
    await ask(nc, {"prompt": "What is 12 times 12?"})
    await asyncio.sleep(1.0)  # let the ledger commit its batch

    stats = await client.request(nc, subjects.STATS, {}, timeout=5)

    # Savings are over answered requests; what failed ones cost is a figure of its own.
    cur = await conn.execute(
        "SELECT count(*), coalesce(sum(cost_usd) FILTER (WHERE status = 'ok'), 0),"
        " coalesce(sum(baseline_cost_usd) FILTER (WHERE status = 'ok'), 0),"
        " coalesce(sum(cost_usd) FILTER (WHERE status <> 'ok'), 0) FROM requests"
    )
    requests, cost, baseline, failed_cost = await cur.fetchone()
    assert stats["requests"] == requests
    assert stats["cost_usd"] == pytest.approx(float(cost), abs=1e-9)
    assert stats["failed_cost_usd"] == pytest.approx(float(failed_cost), abs=1e-9)
    assert stats["baseline_cost_usd"] == pytest.approx(float(baseline), abs=1e-9)
    assert stats["saved_usd"] == pytest.approx(float(baseline - cost), abs=1e-9)
    assert [p["requests_per_month"] for p in stats["projection"]] == [10_000, 100_000, 1_000_000]


async def test_health_lists_every_service_up(stack, nc):
    report = await client.service_health(nc)

    assert report["ok"] is True
    assert {name for name, s in report["services"].items() if s["up"]} == {
        "classifier", "dispatcher", "escalator", "ledger", "gateway"}
