"""A request_id is an idempotency key: the same request again is the first reply, with no
provider call; another request under the same id is `duplicate_request`, recorded as its own
ledger row and never billed to the first. Ids are scoped by tenant and, in batch, by job."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest

from services.classifier.intake import MAX_WAITING, MAX_WAITING_PER_KEY, MAX_WAITING_PER_TENANT
from shared import subjects
from smart_router import client
from tests.harness import ask, rows_when_ready


def calls(stack) -> int:
    return stack.emulator.control("GET", "stats")["total"]


def new_id() -> str:
    return f"idem-{uuid.uuid4().hex[:12]}"


async def test_the_same_request_again_is_the_first_reply_without_a_call(stack, nc, conn):
    request = {"prompt": "Name three primary colours.", "request_id": new_id(), "tenant": "acme"}
    first = await ask(nc, request)
    before = calls(stack)

    again = await ask(nc, request)

    assert "error" not in first, first
    assert again == first
    assert calls(stack) == before
    rows = await rows_when_ready(
        conn, "SELECT status, cost_usd FROM requests WHERE request_id = %s",
        (request["request_id"],))
    assert len(rows) == 1 and float(rows[0][1]) == pytest.approx(first["cost_usd"], abs=1e-9)


async def test_another_request_under_the_same_id_is_refused_recorded_and_not_billed(
        stack, nc, conn):
    request_id = new_id()
    first = await ask(nc, {"prompt": "What is the capital of Peru?", "request_id": request_id})
    before = calls(stack)

    other = await ask(nc, {"prompt": "Write a haiku about rain.", "request_id": request_id})

    assert other["error"]["code"] == "duplicate_request", other
    assert calls(stack) == before
    rows = await rows_when_ready(
        conn, "SELECT status, error_code, cost_usd FROM requests WHERE request_id = %s"
        " ORDER BY status DESC", (request_id,), at_least=2)
    assert [(s, c) for s, c, _ in rows] == [("ok", None), ("error", "duplicate_request")]
    assert float(rows[0][2]) == pytest.approx(first["cost_usd"], abs=1e-9)
    assert float(rows[1][2]) == 0


async def test_fifty_requests_under_one_id_bill_only_the_one_that_ran(stack, nc, conn):
    request_id = new_id()
    prompts = [f"What is {i} plus {i + 1}?" for i in range(50)]

    replies = await asyncio.gather(*(ask(nc, {"prompt": p, "request_id": request_id,
                                              "tier": "complex"}) for p in prompts))

    served = [r for r in replies if "error" not in r]
    assert len(served) == 1
    assert sorted(r["error"]["code"] for r in replies if "error" in r) == (
        ["duplicate_request"] * 49)
    rows = await rows_when_ready(conn, "SELECT sum(cost_usd), count(*) FROM requests"
                                 " WHERE request_id = %s HAVING count(*) >= 50", (request_id,))
    assert float(rows[0][0]) == pytest.approx(served[0]["cost_usd"], abs=1e-9)


async def test_a_retry_while_the_first_runs_waits_for_its_reply(stack, nc, emulator):
    emulator.faults(latency_ms=1500)
    request = {"prompt": "Spell 'idempotent'.", "request_id": new_id()}
    before = calls(stack)

    first_task = asyncio.create_task(ask(nc, request))
    await asyncio.sleep(0.5)
    retry = await ask(nc, request)
    first = await first_task

    assert "error" not in first, first
    assert retry == first
    assert calls(stack) - before == len(first["attempts"])


async def test_only_a_few_retries_may_wait_for_the_same_first_reply(stack, nc, emulator):
    """Retries waiting for a first request cost nothing, so a caller could queue any number of
    them: past MAX_WAITING_PER_KEY (4) at once, a retry is `overloaded` with a retry hint.
    Before, 250 of them waited, each holding an admission slot, and another tenant was
    refused as overloaded."""
    emulator.faults(latency_ms=1500)
    request = {"prompt": "Spell 'patience'.", "request_id": new_id()}
    first_task = asyncio.create_task(ask(nc, request))
    await asyncio.sleep(0.5)

    retries = await asyncio.gather(*(ask(nc, request) for _ in range(10)))
    first = await first_task

    assert "error" not in first, first
    assert sum(r == first for r in retries) == MAX_WAITING_PER_KEY
    refused = [r for r in retries if r != first]
    assert [r["error"]["code"] for r in refused] == ["overloaded"] * (10 - MAX_WAITING_PER_KEY)
    assert all(r["error"]["retry_after_s"] > 0 for r in refused)


async def waiting_retries(nc, emulator, tenants: list[str | None], ids_each: int
                          ) -> list[dict]:
    """MAX_WAITING_PER_KEY retries of each of `ids_each` first requests per tenant, sent while
    the firsts still run; their replies (the firsts' must all be answers)."""
    emulator.faults(latency_ms=1500)
    requests = [{"prompt": "Spell 'patience'.", "request_id": new_id(), "tenant": tenant}
                for tenant in tenants for _ in range(ids_each)]
    firsts = [asyncio.create_task(ask(nc, request)) for request in requests]
    await asyncio.sleep(0.5)
    retries = await asyncio.gather(*(ask(nc, request) for request in requests
                                     for _ in range(MAX_WAITING_PER_KEY)))
    answers = await asyncio.gather(*firsts)
    assert all("error" not in first for first in answers), answers
    return retries


async def test_only_so_many_retries_wait_in_all(stack, nc, emulator):
    """Four waiters per id, each out of the admission count, over many ids: past MAX_WAITING
    (64) in all a retry is `overloaded`. Before, a tenant holding its share of first requests
    could add four waiters to each (600 at the default share), each reading the request store
    until its reply came."""
    # no tenant named: no share per tenant applies (as in admission), only the whole bound
    retries = await waiting_retries(nc, emulator, [None], ids_each=20)

    refused = [r for r in retries if "error" in r]
    assert len(retries) - len(refused) == MAX_WAITING
    assert {r["error"]["code"] for r in refused} == {"overloaded"}
    assert all(f"{MAX_WAITING} requests already wait" in r["error"]["message"] for r in refused)


async def test_one_tenants_retries_leave_waiting_room_for_the_others(stack, nc, emulator):
    """Before, one tenant's retries could take all 64 places and another's single retry was
    refused."""
    retries = await waiting_retries(nc, emulator, ["greedy"] * 5 + ["other"], ids_each=1)

    greedy, other = retries[:5 * MAX_WAITING_PER_KEY], retries[5 * MAX_WAITING_PER_KEY:]
    refused = [r for r in greedy if "error" in r]
    assert len(greedy) - len(refused) == MAX_WAITING_PER_TENANT
    assert all(f"{MAX_WAITING_PER_TENANT} requests of this tenant already wait"
               in r["error"]["message"] for r in refused)
    assert all("error" not in r for r in other)


async def test_the_same_id_for_two_tenants_runs_for_both(stack, nc):
    request_id = new_id()

    a = await ask(nc, {"prompt": "Say yes.", "request_id": request_id, "tenant": "a"})
    b = await ask(nc, {"prompt": "Say no.", "request_id": request_id, "tenant": "b"})

    assert "error" not in a and "error" not in b, (a, b)


async def test_the_same_id_in_two_batch_jobs_runs_in_both(stack, nc, tmp_path):
    lines = [json.dumps({"prompt": "Count to three.", "request_id": "shared-line"})]
    results = {}
    for job in (f"job-a-{uuid.uuid4().hex[:6]}", f"job-b-{uuid.uuid4().hex[:6]}"):
        path = tmp_path / f"{job}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        submission = await client.submit(nc, path, job, progress=lambda done, total: None)
        assert submission.duplicates == 0 and submission.fresh == ["shared-line"]
        async with asyncio.timeout(30):
            async for result in client.results(nc, job, expect={"shared-line"}):
                results[job] = result

    assert len(results) == 2
    assert all("error" not in r for r in results.values()), results


async def test_waiting_on_a_job_reads_its_own_tenants_results_only(stack, nc, tmp_path):
    """Read across tenants (open mode, the admin identity), acme's and globex's jobs of one
    name answer the same request_ids. Before, globex's wait printed acme's answer as its own
    and stopped; a forged line in another tenant's job could answer the operator's."""
    job = f"weekly-{uuid.uuid4().hex[:6]}"
    answered = {}
    for tenant, prompt in (("acme", "Name the capital of France."), ("globex", "Say hello.")):
        path = tmp_path / f"{tenant}.jsonl"
        path.write_text(json.dumps({"prompt": prompt, "tenant": tenant}) + "\n")
        submission = await client.submit(nc, path, job, lambda done, total: None)
        async with asyncio.timeout(30):
            answered[tenant] = [r async for r in client.results(
                nc, job, expect=set(submission.fresh),
                result_tenants=submission.result_tenants)]
    everything = [r async for r in client.results(nc, job)]

    assert [r["tenant"] for r in answered["globex"]] == ["globex"]
    assert answered["globex"][0]["request_id"] == answered["acme"][0]["request_id"]
    assert sorted(r["tenant"] for r in everything) == ["acme", "globex"]  # one each, labelled


@pytest.mark.parametrize("tenant", ["t" * 70, "a\tb", ""])
async def test_waiting_on_a_job_gets_the_refusal_of_a_line_whose_tenant_is_no_name(
        stack, nc, tmp_path, tenant):
    """The refusal goes to the results of no tenant; before, the wait looked for it under the
    line's own (no) tenant and timed out. A 70-character tenant's refusal went to the tenant
    named by its first 64 characters."""
    path = tmp_path / "job.jsonl"
    path.write_text(json.dumps({"prompt": "Name a colour.", "tenant": tenant}) + "\n"
                    + json.dumps({"prompt": "Name a fruit."}) + "\n")
    submission = await client.submit(nc, path, None, lambda done, total: None)
    async with asyncio.timeout(30):
        got = {r["request_id"]: r async for r in client.results(
            nc, submission.job_id, expect=set(submission.fresh),
            result_tenants=submission.result_tenants)}

    first, second = (f"{submission.job_id}-{line}" for line in (1, 2))
    assert got[first]["error"]["code"] == "invalid_request"
    assert got[first]["tenant"] == got[second]["tenant"] == subjects.NO_TENANT
    assert "error" not in got[second]


async def test_the_same_job_for_two_tenants_runs_for_both(stack, nc, tmp_path):
    """JetStream dedups across the whole jobs stream: before, the same file and job id sent
    as two tenants ran for the first only (the second was all duplicates, exit 0)."""
    job = f"nightly-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "same.jsonl"
    path.write_text(json.dumps({"prompt": "Count to two.", "request_id": "r1"}) + "\n")
    results = {}
    for tenant in ("alice", "bob"):
        submission = await client.submit(nc, path, job, lambda done, total: None, tenant=tenant)
        assert submission.duplicates == 0 and submission.fresh == ["r1"], tenant
        async with asyncio.timeout(30):
            async for result in client.results(nc, job, expect={"r1"}, tenant=tenant):
                results[tenant] = result
    again = await client.submit(nc, path, job, lambda done, total: None, tenant="bob")

    assert set(results) == {"alice", "bob"} and all("error" not in r for r in results.values())
    # A body's tenant of another type is digested too (it crashed submit), apart from its text.
    assert client.job_msg_id(job, "r1", 5) != client.job_msg_id(job, "r1", "5")
    assert again.duplicates == 1 and again.fresh == []  # the same line again runs nothing


async def test_a_fixed_file_sent_again_under_its_job_runs_only_the_fixed_line(stack, nc,
                                                                            tmp_path):
    """A file with a bad line, fixed and sent again with --job (as submit's message says): the
    line sent the first time is a duplicate, the fixed one runs. Sent without --job, the fixed
    file's new job id would run (and bill) every line again."""
    path = tmp_path / "batch.jsonl"
    good = json.dumps({"prompt": "Name a fruit."})
    path.write_text(good + '\n{"prompt": "cut\n')
    first = await client.submit(nc, path, None, lambda done, total: None)
    path.write_text(good + '\n{"prompt": "Name a tree."}\n')
    again = await client.submit(nc, path, first.job_id, lambda done, total: None)

    assert first.fresh == [f"{first.job_id}-1"] and [i["line"] for i in first.invalid] == [2]
    assert again.fresh == [f"{first.job_id}-2"]
    assert [d["line"] for d in again.duplicate_lines] == [1]


async def test_a_full_job_queue_stops_submit_with_what_to_do(tmp_path):
    """The jobs stream at its max_bytes (nothing draining it): submit says how many lines were
    stored and to send the file again with its job id; before, it ended on JetStream's raw
    ServiceUnavailableError, its progress line far from what was stored."""
    from nats.js.api import DiscardPolicy, StreamConfig

    from shared import subjects
    from smart_router.embedded import EmbeddedNats

    server = EmbeddedNats.start(tmp_path / "nats")
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(StreamConfig(
            name=subjects.JOBS_STREAM, subjects=list(subjects.with_tenants(subjects.JOBS)),
            max_bytes=64 * 1024, discard=DiscardPolicy.NEW, duplicate_window=60))
        path = tmp_path / "many.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"{i} " + "x" * 1000}) + "\n"
                                for i in range(200)))
        with pytest.raises(ConnectionError) as refused:
            await client.submit(nc, path, "big-job", lambda done, total: None, in_flight=1)
        stored = (await nc.jetstream().stream_info(subjects.JOBS_STREAM)).state.messages
    finally:
        await nc.close()
        server.stop()
    assert 0 < stored < 200
    assert str(refused.value).startswith("the router's job queue refused a line")
    assert f"after {stored} of 200 were stored" in str(refused.value)
    assert "--job big-job" in str(refused.value)


async def test_an_edited_line_sent_again_under_its_job_is_reported_sent_before(stack, nc,
                                                                             tmp_path):
    """Its request_id was run in this job already: reported as a duplicate line, not sent
    (sent, it would be answered `duplicate_request`, which `--wait` does not show)."""
    path = tmp_path / "edit.jsonl"
    path.write_text(json.dumps({"prompt": "Name a fruit.", "request_id": "q1"}) + "\n")
    first = await client.submit(nc, path, None, lambda done, total: None)
    path.write_text(json.dumps({"prompt": "Name a tree.", "request_id": "q1"}) + "\n")
    again = await client.submit(nc, path, first.job_id, lambda done, total: None)

    assert first.fresh == ["q1"]
    assert again.fresh == [] and [d["request_id"] for d in again.duplicate_lines] == ["q1"]
