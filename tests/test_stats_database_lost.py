"""A database that restarts or is down never leaves a router.v1.stats caller without an answer:
after a restart the next summary is read on a fresh connection, and while the database is down
the caller hears `internal_error` saying why, well before it gives up. Feedback's pool, too,
replaces a connection the restart broke."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import psycopg
import pytest
import structlog
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from services.ledger import feedback as ledger_feedback
from services.ledger import stats as ledger_stats
from services.ledger.feedback import FeedbackResponder
from services.ledger.stats_responder import ANSWER_WITHIN_S, STATS_AT_ONCE, StatsResponder
from shared import db, subjects
from shared.errors import RouterError
from tests import harness
from tests.stage_helpers import stats_responder

CALLER_WAITS_S = 5.0  # the shortest wait of a stats caller (the tests'; the CLI waits 10 s)


@pytest.fixture
def postgres(tmp_path):
    server = harness.ControlledPostgres(tmp_path / "pg")
    try:
        yield server
    finally:
        server.stop()


async def asking(stats, for_s: float) -> list[tuple[dict, float]]:
    """Every reply and how long it took, asking every half second for `for_s` seconds."""
    replies = []
    ends = time.monotonic() + for_s
    while time.monotonic() < ends:
        replies.append(await stats())
        await asyncio.sleep(0.5)
    return replies


async def answered(stats, within_s: float) -> dict:
    """The first summary that is not an error, asking again every 0.2 s."""
    for _ in range(int(within_s / 0.2)):
        reply, _took_s = await stats()
        if "error" not in reply:
            return reply
        await asyncio.sleep(0.2)
    raise AssertionError(f"no summary within {within_s} s")


async def test_stats_answer_across_a_restart_and_while_the_database_is_down(postgres):
    url = postgres.start()
    db.migrate(url)
    async with stats_responder(url) as (_, client):

        async def stats() -> tuple[dict, float]:
            start = time.monotonic()
            reply = await client.request(b'{"days": 1}', subjects.STATS, timeout=CALLER_WAITS_S)
            return json.loads(reply.body), time.monotonic() - start

        assert (await stats())[0]["requests"] == 0

        postgres.stop()
        postgres.start()  # the pool's connection is now a broken one
        assert (await stats())[0]["requests"] == 0

        postgres.stop()
        with structlog.testing.capture_logs() as logs:
            # Past db.RECONNECT_TIMEOUT_S, when the pool gives up its reconnection attempts
            # (and starts one at the next request).
            down = await asking(stats, for_s=db.RECONNECT_TIMEOUT_S + 2)
            postgres.start()
            back = time.monotonic()
            up = await answered(stats, within_s=30)
            recovered_s = time.monotonic() - back

    for reply, took_s in down:
        assert reply["error"]["code"] == "internal_error"
        assert reply["error"]["message"].startswith("the ledger's database did not answer: ")
        assert took_s < ANSWER_WITHIN_S + 0.5 < CALLER_WAITS_S
    assert up["requests"] == 0
    assert recovered_s < 5
    events = [entry["event"] for entry in logs]
    assert events == ["stats.database_unavailable", "stats.database_available"]  # once each


async def test_a_slow_summary_is_answered_in_time(postgres, monkeypatch):
    """Each query within the statement timeout, the whole past ANSWER_WITHIN_S: the caller
    hears so in time, and the read is cancelled."""
    url = postgres.start()
    db.migrate(url)

    async def slow_summary(conn, days):
        for _ in range(3):
            await conn.execute("SELECT pg_sleep(%s)", (ANSWER_WITHIN_S / 2,))
        return {}

    monkeypatch.setattr(ledger_stats, "summary", slow_summary)
    async with stats_responder(url) as (responder, client):
        start = time.monotonic()
        reply = json.loads((await client.request(b"{}", subjects.STATS,
                                                 timeout=CALLER_WAITS_S)).body)
        took_s = time.monotonic() - start
        for _ in range(50):  # the read, cancelled in the background, ends
            if not responder._deadline._abandoned:
                break
            await asyncio.sleep(0.1)
        abandoned = len(responder._deadline._abandoned)

    assert reply["error"] == {
        "code": "internal_error", "retry_after_s": None,
        "message": f"the ledger's database did not answer: no answer within {ANSWER_WITHIN_S:g} s"}
    assert ANSWER_WITHIN_S <= took_s < ANSWER_WITHIN_S + 0.5
    assert abandoned == 0


async def test_feedback_is_recorded_on_a_fresh_connection_after_a_restart(postgres):
    url = postgres.start()
    db.migrate(url)
    feedback = FeedbackResponder(url)
    await feedback.writers.open()
    body = b'{"request_id": "r-1", "score": 1}'
    try:
        with pytest.raises(RouterError) as before:
            await feedback.record(body, None)
        postgres.stop()
        postgres.start()
        with pytest.raises(RouterError) as after:  # not psycopg's AdminShutdown
            await feedback.record(body, None)
        postgres.stop()
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):  # on_feedback answers internal_error
            await feedback.record(body, None)
        down_s = time.monotonic() - start
    finally:
        await feedback.writers.close()

    assert before.value.code == after.value.code == "unknown_request"
    assert down_s < db.POOL_TIMEOUT_S + 1 < CALLER_WAITS_S  # not psycopg_pool's 30 s


async def test_callers_at_once_are_each_answered_while_the_database_is_down(postgres, servers):
    """Before, the ledger answered stats one request at a time: with the database down each
    took its full wait, and the fifth of seven callers heard nothing within the CLI's 10 s."""
    url = postgres.start()
    db.migrate(url)
    responder = StatsResponder(url, lambda: 1_048_576)
    await responder.open()
    postgres.stop()
    subject = f"test.stats.{uuid.uuid4().hex}"  # the suite's own ledger answers the real one
    broker = NatsBroker(servers.nats_url)
    broker.subscriber(subject, max_workers=STATS_AT_ONCE)(responder.on_stats)
    try:
        async with broker:
            await broker.start()

            async def ask() -> tuple[dict, float]:
                start = time.monotonic()
                reply = await broker.request(b'{"days": 1}', subject, timeout=10)
                return json.loads(reply.body), time.monotonic() - start

            replies = await asyncio.gather(*(ask() for _ in range(7)))
    finally:
        await responder.close()

    assert all(reply["error"]["code"] == "internal_error" for reply, _ in replies)
    assert max(took for _, took in replies) < 2 * ANSWER_WITHIN_S + 1


async def test_feedback_is_answered_while_its_database_hangs(postgres, nc):
    """The database's backends stopped (a stalled server, a network black hole: connections
    neither answer nor fail). Before, feedback waited on them for ever, and every verdict after
    it queued behind: the sender heard nothing."""
    url = postgres.start()
    db.migrate(url)
    responder = FeedbackResponder(url)
    await responder.writers.open()
    await responder.writers.wait()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        backends = [pid for (pid,) in await (await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()")).fetchall()]
    backends.append(postgres.server.process.pid)  # the postmaster: new connections hang too
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox)
    for pid in backends:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        for _ in range(3):  # on one request: each waits its turn, within its deadline
            await responder.on_feedback(Msg(nc, subject=subjects.FEEDBACK, reply=inbox,
                                            data=b'{"request_id": "r-1", "score": 1}'))
        answers = [json.loads((await replies.next_msg(timeout=10)).data) for _ in range(3)]
        took_s = time.monotonic() - start
    finally:
        for pid in backends:
            os.kill(pid, signal.SIGCONT)
        await responder.close()

    assert {a["error"]["code"] for a in answers} == {"internal_error"}
    assert any(f"did not answer within {ledger_feedback.ANSWER_WITHIN_S:g} s"
               in a["error"]["message"]
               for a in answers)
    assert took_s < ledger_feedback.ANSWER_WITHIN_S + 2  # answered at once, not one by one


class Delivered:
    """A feedback message as nats-py hands it over; its reply is dropped."""

    def __init__(self, body: dict) -> None:
        self.subject, self.reply = subjects.FEEDBACK, "_INBOX.x"
        self.data = json.dumps(body).encode()

    async def respond(self, _data: bytes) -> None:
        pass


async def test_the_later_of_two_verdicts_on_a_request_is_the_one_kept(postgres):
    """Verdicts are answered in tasks of their own: two on one request could commit in either
    order (the earlier left standing in 21 pairs of 200, in the review). They are recorded in
    the order they came."""
    url = postgres.start()
    db.migrate(url)
    responder = FeedbackResponder(url)
    await responder.writers.open()
    await responder.writers.wait()
    wrong = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO requests (request_id, trace_id, received_at, finished_at,"
                           " source, status) VALUES ('q1', 't1', now(), now(), 'online', 'ok')")
        try:
            for i in range(100):
                earlier, later = (0.0, 1.0) if i % 2 else (1.0, 0.0)
                for score in (earlier, later):  # delivered one after the other
                    await responder.on_feedback(
                        Delivered({"request_id": "q1", "score": score}))  # type: ignore[arg-type]
                await asyncio.gather(*responder._answering)
                (kept,) = await (await conn.execute(
                    "SELECT score FROM feedback WHERE trace_id = 't1'")).fetchone()
                wrong += kept != later
        finally:
            await responder.close()

    assert wrong == 0
    assert responder._in_order == {}  # no lock kept once its verdicts are in
