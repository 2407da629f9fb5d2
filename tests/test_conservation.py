"""The bill is exact: after a mixed run (online and batch, escalations, a 429 storm, a kill -9 of
the dispatcher with calls in flight, reused ids, answers cut to size), the ledger's attempts are
the calls the providers billed, one for one, and its cost is their tokens priced by the router's
table, to the cent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest

from shared.config import ModelRef, load_config
from shared.pricing import Pricer
from smart_router import client
from tests import harness
from tests.harness import ask, rows_when_ready

pytestmark = pytest.mark.faults
CONFIG = load_config()
PROMPTS = [json.loads(line)["prompt"] for line in
           (harness.ROOT / "services/classifier/data/test.jsonl").open()][:160]


def charged(emulator) -> dict[tuple[str, str], Counter]:
    stats = emulator.control("GET", "stats")
    return {(provider, model): Counter(bill) for provider, models in stats["charged"].items()
            for model, bill in models.items()}


async def test_the_ledger_holds_every_billed_call_and_nothing_else(stack, nc, conn, emulator,
                                                                  tmp_path):
    tenant = f"conservation-{uuid.uuid4().hex[:8]}"
    emulator.reset()
    emulator.faults({"action": "rate_limit", "model": "claude-haiku-4-5", "probability": 0.5,
                     "retry_after_s": 0},
                    {"action": "ramble", "model": "gpt-4o-mini", "times": 3},
                    latency_ms=150)
    reused = f"reused-{uuid.uuid4().hex[:8]}"

    async def online(i: int) -> dict:
        request = {"prompt": PROMPTS[i % 100], "tenant": tenant, "max_tokens": 4000}
        if i % 20 == 0:  # the same id again: same request, then another one
            request["request_id"] = reused
            if i % 40:
                request["prompt"] = PROMPTS[0]
        return await ask(nc, request, timeout=60)

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"prompt": p, "tenant": tenant}) + "\n"
                            for p in PROMPTS[100:160]))
    submission = await client.submit(nc, jobs, None, lambda done, total: None)
    gate = asyncio.Semaphore(20)

    async def paced(i: int) -> dict:
        async with gate:
            return await online(i)

    replies = asyncio.gather(*(paced(i) for i in range(400)))
    await asyncio.sleep(1)

    # Every new call now hangs; the calls already answered finish within the latency. Then the
    # dispatcher dies holding calls that no provider will bill (their clients are gone).
    emulator.faults({"action": "hang", "model": "*"}, latency_ms=150)
    await asyncio.sleep(1.5)
    assert emulator.control("GET", "stats")["in_flight"] > 0
    stack.processes.kill("dispatcher")
    emulator.faults(latency_ms=150)
    stack.processes.start("dispatcher")

    answered = await replies
    async with asyncio.timeout(120):
        results = [r async for r in client.results(nc, submission.job_id,
                                                   expect=set(submission.request_ids))]
    assert len(results) == 60
    assert any(r.get("escalated") for r in [*answered, *results])
    codes = Counter(r["error"]["code"] for r in answered if "error" in r)
    assert codes["duplicate_request"] >= 1

    replayed = sum(1 for r in answered if r.get("request_id") == reused and "error" not in r) - 1
    expected_rows = len(answered) + len(results) - replayed  # a replay is no new request
    await rows_when_ready(conn, "SELECT 1 FROM requests WHERE tenant = %s HAVING count(*) >= %s",
                          (tenant, expected_rows), wait_s=60)
    await asyncio.sleep(2)  # the last attempts' rows
    cur = await conn.execute(
        "SELECT provider, model, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd)"
        " FROM attempts WHERE tenant = %s AND input_tokens + output_tokens > 0"
        " GROUP BY provider, model", (tenant,))
    ledger = {(p, m): (n, i, o, float(c)) for p, m, n, i, o, c in await cur.fetchall()}
    bills = charged(emulator)

    pricer = Pricer(CONFIG.pricing)
    assert set(ledger) == set(bills)
    for key, bill in bills.items():
        calls, input_tokens, output_tokens, cost = ledger[key]
        assert (calls, input_tokens, output_tokens) == (
            bill["calls"], bill["input_tokens"], bill["output_tokens"]), key
        billed = pricer.cost(ModelRef(provider=key[0], model=key[1]), bill["input_tokens"],
                             bill["output_tokens"])
        assert cost == pytest.approx(billed, abs=0.005), key
