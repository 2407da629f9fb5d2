"""The ledger keeps up, never loses or double-counts a request, and survives its own crash,
duplicates, unreadable events and a database outage."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest

from shared import subjects
from tests import harness


async def counts(conn: psycopg.AsyncConnection, job: str) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM requests WHERE job_id = %(job)s),"
        " (SELECT count(*) FROM attempts WHERE request_id LIKE %(prefix)s)",
        {"job": job, "prefix": f"{job}-%"})
    return await cur.fetchone()


async def wait_for_rows(conn, job: str, expected: tuple[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := await counts(conn, job)) != expected:
        assert time.monotonic() < deadline, f"{found} rows, expected {expected}"
        await asyncio.sleep(0.25)


async def assert_rollups_match_rows(conn: psycopg.AsyncConnection) -> None:
    """The daily roll-ups count each request once: they equal the raw rows they summarise."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM requests), (SELECT coalesce(sum(requests), 0)"
        " FROM daily_usage), (SELECT coalesce(sum(cost_usd), 0) FROM requests),"
        " (SELECT coalesce(sum(cost_usd), 0) FROM daily_usage)")
    rows, rolled, cost, rolled_cost = await cur.fetchone()
    assert rolled == rows and rolled_cost == cost


async def test_a_ledger_killed_mid_load_loses_and_doubles_nothing(stack, nc, conn):
    job = f"kill-{uuid.uuid4().hex[:8]}"
    publishing = asyncio.create_task(harness.publish_ledger_events(nc, job, 10_000))
    while (await counts(conn, job))[0] < 2_000:  # noqa: ASYNC110 (polls the database)
        await asyncio.sleep(0.05)

    stack.processes.kill("ledger")
    written_at_kill = (await counts(conn, job))[0]
    stack.processes.start("ledger")
    expected = await publishing

    await wait_for_rows(conn, job, expected, timeout_s=120)
    assert written_at_kill < expected[0]  # the crash really happened mid-load
    await assert_rollups_match_rows(conn)


async def test_redelivered_events_are_ignored(stack, nc, conn):
    job = f"dup-{uuid.uuid4().hex[:8]}"
    expected = await harness.publish_ledger_events(nc, job, 300)
    await wait_for_rows(conn, job, expected, timeout_s=30)

    # The same events again, past JetStream's dedup: only the ledger's keys can stop them.
    await harness.publish_ledger_events(nc, job, 300, msg_id_suffix=".again")
    await asyncio.sleep(2)

    assert await counts(conn, job) == expected
    await assert_rollups_match_rows(conn)


async def test_an_unreadable_event_is_recorded_as_a_dead_letter(stack, nc, conn):
    ack = await nc.jetstream().publish(subjects.REQUEST_EVENTS, b"{not an event")

    rows = await harness.rows_when_ready(
        conn, "SELECT reason FROM dead_letters WHERE subject = %s AND stream_seq = %s",
        (subjects.REQUEST_EVENTS, ack.seq))
    assert rows[0][0].startswith("unreadable event")


@pytest.mark.faults
async def test_postgres_down_for_30_s_loses_nothing_and_the_ledger_catches_up(
        stack, nc, tmp_path):
    postgres = harness.ControlledPostgres(tmp_path / "pg")
    url = postgres.start()
    stack.processes.kill("ledger")  # this test's ledger writes to its own database
    processes = harness.Processes({**stack.processes.env, "DATABASE_URL": url}, tmp_path)
    try:
        processes.start("ledger")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await harness.rows_when_ready(  # the ledger has migrated its new database
                conn, "SELECT 1 FROM pg_tables WHERE tablename = 'daily_latency'", (),
                wait_s=60)
            job = f"outage-{uuid.uuid4().hex[:8]}"
            first = await harness.publish_ledger_events(nc, job, 1_000)
            await wait_for_rows(conn, job, first, timeout_s=60)

        postgres.stop()
        later = f"{job}-b"
        expected = await harness.publish_ledger_events(nc, later, 3_000)
        await asyncio.sleep(30)
        assert processes.procs["ledger"].poll() is None  # it waited; it did not die
        postgres.start()

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await wait_for_rows(conn, later, expected, timeout_s=120)
            await assert_rollups_match_rows(conn)
        assert "ledger.database_unavailable" in processes.log("ledger")
    finally:
        processes.stop_all()
        stack.processes.start("ledger")
        postgres.stop()
