"""The ledger's write rate: publish a burst of request and attempt events faster than the ledger
writes them, then time how fast it drains the backlog into PostgreSQL.

The burst goes out as plain publishes on the events stream's subjects (JetStream stores them;
the bench does not wait for each storage ack), so the publisher is never the bottleneck."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid

import nats
import psycopg

from shared import connection, db, subjects
from shared.config import Settings
from shared.messages import RequestEvent

from .events import request_with_attempts


async def run(nats_settings: Settings, database_url: str, requests: int) -> dict:
    job = f"bench-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    messages = []
    for i in range(requests):
        for event in request_with_attempts(f"{job}-{i}", job, rng):
            if isinstance(event, RequestEvent):
                subject, msg_id = subjects.REQUEST_EVENTS, f"r.{event.request_id}"
            else:
                subject, msg_id = subjects.ATTEMPT_EVENTS, f"a.{event.request_id}.{event.n}"
            messages.append((subject, event.model_dump_json().encode(), msg_id))

    nc = await nats.connect(**connection.nats_options(nats_settings),
                            pending_size=64 * 1024 * 1024)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        started = time.perf_counter()
        for subject, body, msg_id in messages:
            await nc.publish(subject, body, headers={subjects.MSG_ID: msg_id})
        await nc.flush(timeout=60)
        published = time.perf_counter()
        written_then = await _written(conn, job)
        _say(f"published {len(messages)} events in {published - started:.2f} s; "
             f"{written_then}/{requests} requests written so far")
        while (written := await _written(conn, job)) < requests:  # noqa: ASYNC110 (polls PG)
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        attempts = (await db.one_row(await conn.execute(
            "SELECT count(*) FROM attempts WHERE request_id IN "
            "(SELECT request_id FROM requests WHERE job_id = %s)", (job,))))[0]
    await nc.close()
    events = len(messages)
    backlog = events * (requests - written_then) / requests
    return {
        "mode": "ledger",
        "requests": requests,
        "events": events,
        "rows_written": {"requests": written, "attempts": attempts},
        "publish_events_per_s": round(events / (published - started)),
        "end_to_end_events_per_s": round(events / (done - started)),
        "drain_events_per_s": round(backlog / (done - published)) if done > published else None,
        "seconds": round(done - started, 2),
    }


async def _written(conn: psycopg.AsyncConnection, job: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM requests WHERE job_id = %s", (job,))
    count: int = (await db.one_row(cur))[0]
    return count


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
