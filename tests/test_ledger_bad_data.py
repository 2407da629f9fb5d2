"""No byte stops the ledger: an event PostgreSQL cannot store (or should never bill) becomes a
dead letter with its reason while the events around it commit, and health says when the ledger
is stuck."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from services.ledger import columns
from services.ledger.writer import Entry, LedgerWriter, Origin
from shared import db, subjects
from shared.config import config
from shared.messages import MAX_FEATURE_BYTES, AttemptEvent, RequestEvent
from smart_router.bench.events import request_with_attempts
from tests import harness

CLI = [sys.executable, "-m", "smart_router.cli"]
EVENT_SUBJECTS = {RequestEvent: subjects.REQUEST_EVENTS, AttemptEvent: subjects.ATTEMPT_EVENTS}


def good_events(job: str, requests: int) -> list[RequestEvent | AttemptEvent]:
    rng = random.Random(job)
    return [e for i in range(requests) for e in request_with_attempts(f"{job}-{i}", job, rng)]


def forged(event: RequestEvent | AttemptEvent, **fields: object) -> bytes:
    """The event's JSON with fields replaced, as a forger (or a bug) would publish it; Python's
    json writes NaN and Infinity as the bare words, which pydantic accepts."""
    return json.dumps(event.model_dump() | fields).encode()


async def publish(js, subject: str, body: bytes) -> int:
    ack = await js.publish(subject, body, headers={subjects.MSG_ID: uuid.uuid4().hex})
    return ack.seq


async def row_counts(conn: psycopg.AsyncConnection, job: str) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM requests WHERE job_id = %(job)s),"
        " (SELECT count(*) FROM attempts WHERE request_id LIKE %(prefix)s)",
        {"job": job, "prefix": f"{job}-%"})
    return await cur.fetchone()


async def health(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(subprocess.run, [*CLI, "health", *args], env=env,
                                   capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout


# --- the ledger's own checks, before PostgreSQL ---------------------------------------------

def a_request() -> RequestEvent:
    return good_events(f"unit-{uuid.uuid4().hex[:6]}", 1)[-1]  # type: ignore[return-value]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tenant": "a\x00b"}, "requests.tenant contains NUL"),
    ({"model_used": "\ud800"}, "requests.model_used is not valid Unicode"),
    ({"tenant": "x" * 600}, "requests.tenant is 600 bytes"),
    ({"attempts": 40_000}, "requests.attempts = 40000 is outside smallint"),
    ({"input_tokens": 2**40}, "requests.input_tokens = 1099511627776 is outside integer"),
    ({"cost_usd": 1e12}, "requests.cost_usd = 1e+12 is not below 1e+10"),
    ({"baseline_cost_usd": -0.01}, "requests.baseline_cost_usd is negative"),
    ({"cost_usd": math.nan}, "requests.cost_usd is nan"),
    ({"latency_ms": math.inf}, "requests.latency_ms is inf"),
    ({"provider_latency_ms": 1e39}, "requests.provider_latency_ms = 1e+39 is not below"),
    ({"finished_at": 1e20}, "requests.finished_at = 1e+20 is not below"),
])
def test_an_impossible_value_is_named_with_its_column(fields, expected):
    event = a_request().model_copy(update=fields)

    found = columns.problems("requests", columns.REQUESTS, event)

    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_storable_event_has_no_problem():
    event = a_request().model_copy(update={"prompt_text": "naïve 東京 \n\t ok"})
    assert columns.problems("requests", columns.REQUESTS, event) == []


def test_reasons_and_keys_the_ledger_writes_are_made_storable():
    cleaned = columns.clean("bad\x00byte \ud800 and\nline" + "x" * 1000, 60)
    assert "\x00" not in cleaned and len(cleaned) == 60
    assert cleaned.startswith("bad\\x00byte \\ud800 and\\nline")
    cleaned.encode()  # no lone surrogate left


async def test_the_declared_column_types_are_the_databases(conn):
    cur = await conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_name IN ('requests', 'attempts', 'dead_letters')"
        " AND is_generated = 'NEVER'")
    actual = {(t, c): d for t, c, d in await cur.fetchall()}
    declared = {(table, name): column.type for table, types in (
        ("requests", columns.REQUESTS), ("attempts", columns.ATTEMPTS),
        ("dead_letters", columns.DEAD_LETTERS)) for name, column in types.items()}
    assert declared == actual


# --- bisection on a real PostgreSQL ---------------------------------------------------------

class CountingWriter(LedgerWriter):
    """The real writer, counting its transactions."""

    transactions = 0

    async def write(self, batch) -> None:
        self.transactions += 1
        await super().write(batch)


async def test_a_refused_batch_is_split_until_the_bad_events_stand_alone(database_url, conn):
    job = f"bisect-{uuid.uuid4().hex[:8]}"
    events = [e for e in good_events(job, 40) if isinstance(e, RequestEvent)][:25]
    events += [e for e in good_events(job + "a", 40) if isinstance(e, AttemptEvent)][:25]
    events = [e.model_copy(update={"job_id": job}) if isinstance(e, RequestEvent) else
              e.model_copy(update={"request_id": f"{job}-{e.request_id}"}) for e in events]
    # Past the ledger's own checks, as a gap in them would let through: one refused by
    # PostgreSQL (smallint), one by psycopg before it is sent (NUL).
    events[7] = events[7].model_copy(update={"attempts": 40_000})
    events[31] = events[31].model_copy(update={"model": "gpt\x00evil"})
    entries = [Entry(e, Origin(EVENT_SUBJECTS[type(e)], 1_000_000 + i, 1, 100, 0.0))
               for i, e in enumerate(events)]

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as own:
        writer = CountingWriter(own)
        refused = await writer.write_isolating(entries)

    assert [r.entry for r in refused] == [entries[7], entries[31]]
    assert "out of range for type smallint" in refused[0].reason
    assert "NUL" in refused[1].reason
    assert await row_counts(conn, job) == (24, 24)
    assert writer.transactions <= 4 * math.ceil(math.log2(len(entries))) + 1


# --- the running ledger ---------------------------------------------------------------------

def stored(column: str) -> str:
    return f"cannot be stored: {column} "


def unreadable(field: str, should_be: str) -> str:
    return f"unreadable event: '{field}': Input should be {should_be}"


async def test_forged_events_are_dead_letters_and_the_events_around_them_commit(stack, nc, conn):
    js = nc.jetstream()
    job = f"forged-{uuid.uuid4().hex[:8]}"
    before, after = good_events(f"{job}a", 20), good_events(f"{job}b", 20)
    request = next(e for e in before if isinstance(e, RequestEvent))
    attempt = next(e for e in before if isinstance(e, AttemptEvent))
    bad = [
        (subjects.REQUEST_EVENTS, forged(request, tenant="a\x00b"), stored("requests.tenant")),
        (subjects.ATTEMPT_EVENTS, forged(attempt, model="gpt\x00x"), stored("attempts.model")),
        (subjects.ATTEMPT_EVENTS, forged(attempt, reason="weak\x00"), stored("attempts.reason")),
        (subjects.REQUEST_EVENTS, forged(request, attempts=40_000), stored("requests.attempts")),
        (subjects.ATTEMPT_EVENTS, forged(attempt, n=40_000),
         unreadable("n", "less than or equal to 32767")),
        (subjects.REQUEST_EVENTS, forged(request, cost_usd=1e12), stored("requests.cost_usd")),
        (subjects.REQUEST_EVENTS, forged(request, input_tokens=2**40),
         stored("requests.input_tokens")),
        (subjects.ATTEMPT_EVENTS, forged(attempt, cost_usd=-0.5),  # the model refuses it first
         unreadable("cost_usd", "greater than or equal to 0")),
        (subjects.REQUEST_EVENTS, forged(request, cost_usd=math.nan), stored("requests.cost_usd")),
        (subjects.ATTEMPT_EVENTS, forged(attempt, latency_ms=math.inf),
         unreadable("latency_ms", "a finite number")),
        (subjects.REQUEST_EVENTS, forged(request, features=base64.b64encode(
            bytes(MAX_FEATURE_BYTES + 2)).decode()),
         "unreadable event: 'features': Data should have at most 16384 bytes"),
        (subjects.REQUEST_EVENTS, forged(request, finished_at=1e20),
         stored("requests.finished_at")),
        (subjects.REQUEST_EVENTS, forged(request, tenant=secrets.token_hex(2000)),
         stored("requests.tenant")),
        (subjects.DEAD_LETTER_EVENTS, json.dumps({
            "subject": "x", "stream_seq": 1, "deliveries": 1, "reason": "r\x00",
            "body_bytes": 1, "at": 0}).encode(), stored("dead_letters.reason")),
    ]

    await asyncio.gather(*(publish(js, EVENT_SUBJECTS[type(e)], e.model_dump_json().encode())
                           for e in before))
    seqs = await asyncio.gather(*(publish(js, subject, body) for subject, body, _ in bad))
    await asyncio.gather(*(publish(js, EVENT_SUBJECTS[type(e)], e.model_dump_json().encode())
                           for e in after))

    for (subject, _, reason), seq in zip(bad, seqs, strict=True):
        rows = await harness.rows_when_ready(
            conn, "SELECT reason, request_id FROM dead_letters"
                  " WHERE subject = %s AND stream_seq = %s", (subject, seq))
        assert rows[0][0].startswith(reason), rows
        assert "\x00" not in rows[0][0]
    for events, name in ((before, f"{job}a"), (after, f"{job}b")):
        expected = (sum(isinstance(e, RequestEvent) for e in events),
                    sum(isinstance(e, AttemptEvent) for e in events))
        await harness.rows_when_ready(
            conn, "SELECT 1 FROM requests WHERE job_id = %s", (name,), at_least=expected[0])
        assert await row_counts(conn, name) == expected
    await health_until(stack.processes.env, lambda _, report: sum(  # health counts them
        i["failed"] for i in report["services"]["ledger"]["instances"]) >= len(bad), 10)
    # The forged copies did not overwrite or add to the genuine request's row.
    cur = await conn.execute("SELECT tenant, attempts, cost_usd FROM requests"
                             " WHERE request_id = %s", (request.request_id,))
    tenant, attempts, cost = await cur.fetchone()
    assert (tenant, attempts) == (request.tenant, request.attempts)
    assert float(cost) == pytest.approx(request.cost_usd, abs=1e-9)


async def test_after_a_nul_tenant_the_next_request_is_recorded(stack, nc, conn):
    # Refused at the door or answered: either way the ledger must go on recording.
    await harness.ask(nc, {"prompt": "hi", "tenant": "a\x00b"})

    reply = await harness.ask(nc, {"prompt": "What is the capital of France?"})

    assert "error" not in reply, reply
    await harness.rows_when_ready(conn, "SELECT 1 FROM requests WHERE request_id = %s",
                                  (reply["request_id"],), wait_s=10)


# --- health -----------------------------------------------------------------------------------

async def test_health_reports_the_ledgers_writers_and_backlog(stack):
    pid = stack.processes.procs["ledger"].pid  # an earlier test's killed copy may still beat

    def ours(report: dict) -> dict | None:
        return next((i["ledger"] for i in report["services"]["ledger"]["instances"]
                     if i["pid"] == pid), None)

    # A ledger reads its backlog once a heartbeat: a copy started a moment ago has not yet.
    code, report = await health_until(stack.processes.env, lambda _, report: (
        (beat := ours(report)) is not None and beat["backlog_read_at"] is not None), 10)

    ledger = report["services"]["ledger"]
    assert code == 0 and report["ok"] and report["problems"] == []
    assert ledger["stuck"] is False
    beat = ours(report)
    assert len(beat["writers"]) == config().ledger.writers
    assert {w["state"] for w in beat["writers"]} <= {"idle", "writing"}
    backlog = ledger["backlog"]
    assert {"pending", "redelivered", "ack_pending", "oldest_unacked_age_s",
            "last_commit_at", "no_commit_for_s", "stuck_after_s"} <= backlog.keys()
    assert backlog["pending"] is not None and backlog["stuck_after_s"] > 0


@pytest.mark.faults
async def test_a_ledger_that_cannot_commit_is_reported_stuck(stack, nc, tmp_path: Path):
    postgres = harness.ControlledPostgres(tmp_path / "pg")
    url = postgres.start()
    settings = tmp_path / "router.toml"
    settings.write_text(harness.TEST_CONFIG.read_text() + "\n[ledger]\nstuck_after_s = 2.0\n")
    env = {**stack.processes.env, "DATABASE_URL": url, "ROUTER_CONFIG": str(settings)}
    stack.processes.kill("ledger")  # this test's ledger writes to a database it can lose
    processes = harness.Processes(env, tmp_path)
    try:
        processes.start("ledger")
        pid = processes.procs["ledger"].pid
        await health_until(env, lambda _, report: any(
            i["pid"] == pid for i in report["services"]["ledger"]["instances"]), timeout_s=60)
        postgres.stop()
        job = f"stuck-{uuid.uuid4().hex[:8]}"
        expected = await harness.publish_ledger_events(nc, job, 50)

        # Stuck, and saying why: writer states travel in heartbeats (every 2 s), so the first
        # stuck report may still show the writers as they were a beat earlier.
        code, report = await health_until(env, lambda _, report: (
            report["services"]["ledger"]["stuck"]
            and "waiting_for_database" in report["problems"][0]), timeout_s=60)
        assert code == 1 and not report["ok"] and report["services"]["ledger"]["up"]
        assert report["problems"][0].startswith("ledger is stuck: no commit for")
        code, out = await health(env)
        assert code == 1
        stuck = [line for line in out.splitlines() if line.startswith("ledger is stuck")]
        assert len(stuck) == 1 and "waiting_for_database" in stuck[0], out
        assert processes.procs["ledger"].poll() is None  # it waits; it does not die

        postgres.start()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await harness.rows_when_ready(conn, "SELECT 1 FROM requests WHERE job_id = %s",
                                          (job,), at_least=expected[0], wait_s=60)
        await health_until(env, lambda code, _: code == 0, timeout_s=30)
    finally:
        processes.stop_all()
        stack.processes.start("ledger")
        postgres.stop()


async def health_until(env: dict[str, str], wanted: Callable[[int, dict], bool],
                       timeout_s: float) -> tuple[int, dict]:
    """`smart-router health --json` until its exit code and report are as wanted."""
    report: dict = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                code, out = await health(env, "--json")
                report = json.loads(out)
                if wanted(code, report):
                    return code, report
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"health never got there; last said:\n{report}") from None


@pytest.mark.faults
async def test_a_writer_that_fails_stops_its_process_with_the_batch_logged(
        stack, nc, servers, tmp_path: Path):
    broken = harness.fresh_database(servers.postgres_url)
    await asyncio.to_thread(db.migrate, broken)
    async with await psycopg.AsyncConnection.connect(broken, autocommit=True) as conn:
        await conn.execute("DROP TABLE attempts")  # every batch now fails, and not for its data
    stack.processes.kill("ledger")
    processes = harness.Processes({**stack.processes.env, "DATABASE_URL": broken}, tmp_path)
    job = f"bug-{uuid.uuid4().hex[:8]}"
    try:
        processes.start("ledger")
        expected = await harness.publish_ledger_events(nc, job, 20)

        code = await asyncio.to_thread(processes.procs["ledger"].wait, 60)

        log = processes.log("ledger")
        assert code == 1, log[-3000:]
        assert "ledger.batch_failed" in log and "seq_first" in log and "UndefinedTable" in log
        assert "ledger.stopping" in log
    finally:
        processes.stop_all()
        stack.processes.start("ledger")
        harness.drop_database(servers.postgres_url, broken)
    # Nothing was acked: the stack's ledger records every event.
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        await harness.rows_when_ready(conn, "SELECT 1 FROM requests WHERE job_id = %s", (job,),
                                      at_least=expected[0], wait_s=60)
