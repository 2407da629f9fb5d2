"""router.v1.feedback: a user's verdict on an answer, recorded in the ledger's feedback table
and acknowledged once committed, or refused with a code (README, "Feedback").

A verdict names a request by its request_id and must come from the request's own tenant: on a
client identity's subject (router.v1.feedback.<tenant>, vouched for by the server's
permissions) that tenant, on the shared subject the body's. It labels the request's answered
row (status ok); an unknown id, an error reply's id and another tenant's id are refused alike
(`unknown_request`), so a tenant cannot learn which ids another one used. The ledger writes a
request a moment after its reply: feedback sent at once may need one retry. A later verdict on
the same request replaces the earlier one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from shared import db, runtime, subjects
from shared.errors import ErrorCode, RouterError
from shared.messages import (
    MAX_FEEDBACK_BYTES,
    ErrorBody,
    ErrorReply,
    Feedback,
    FeedbackAck,
    describe_validation_error,
)
from shared.outcomes import salvage

log = structlog.get_logger(__name__)
T = TypeVar("T")

AT_ONCE = 8  # feedback answered at once (the pool's two connections, and waits for them)
ANSWER_WITHIN_S = 4.0  # the sender (`smart-router feedback`, the gateway) waits 10 s

RECORD = """
WITH answered AS (
    SELECT trace_id FROM requests
    WHERE request_id = %(request_id)s AND tenant IS NOT DISTINCT FROM %(tenant)s
      AND status = 'ok'
    ORDER BY finished_at DESC LIMIT 1
)
INSERT INTO feedback (trace_id, request_id, tenant, score, comment, at)
SELECT trace_id, %(request_id)s, %(tenant)s, %(score)s, %(comment)s, now() FROM answered
ON CONFLICT (trace_id) DO UPDATE
    SET score = excluded.score, comment = excluded.comment, at = excluded.at
RETURNING trace_id
"""


class FeedbackResponder:
    """Answers router.v1.feedback (and each tenant's own subject) on plain nats-py
    subscriptions: a reply must go to the sender's own inbox, which FastStream's would not
    check."""

    def __init__(self, database_url: str) -> None:
        # a connection broken by a database restart is replaced, not used; with the database
        # down, the sender hears internal_error within seconds (see db.responder_pool)
        self.writers = db.responder_pool(database_url, name="feedback", max_size=2)
        self._subscriptions: list[Subscription] = []
        self._deadline = db.Deadline(ANSWER_WITHIN_S)  # a database that hangs, not refuses
        self._slots = asyncio.Semaphore(AT_ONCE)
        self._answering: set[asyncio.Task] = set()
        # Verdicts on one request are recorded in the order they came: the later replaces the
        # earlier (README). The lock of a request id, kept while a verdict on it is in hand.
        self._in_order: dict[str | None, tuple[asyncio.Lock, int]] = {}

    async def open(self, nc: Client) -> None:
        await self.writers.open()
        self._subscriptions = await runtime.subscribe_with_tenants(
            nc, subjects.FEEDBACK, "ledger", self.on_feedback)

    async def close(self) -> None:
        await runtime.drain(self._subscriptions)
        if self._answering:
            await asyncio.wait(self._answering, timeout=ANSWER_WITHIN_S)
        await self.writers.close()

    async def on_feedback(self, msg: Msg) -> None:
        """nats-py's delivery of a subscription's messages: each is answered in a task of its
        own, AT_ONCE at most, so one waiting on the database holds up no other."""
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task) -> None:
        self._answering.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("feedback.answer_failed", reason=repr(task.exception()))

    async def _answer(self, msg: Msg) -> None:
        tenant = subjects.tenant_of(msg.subject)
        if not subjects.own_inbox(tenant, msg.reply or None):
            log.warning("feedback.foreign_inbox", subject=msg.subject)
            return
        key = salvage(msg.data).request_id if len(msg.data) <= MAX_FEEDBACK_BYTES else None
        lock, holders = self._in_order.get(key) or (asyncio.Lock(), 0)
        self._in_order[key] = (lock, holders + 1)  # before any await: the lock is taken in order
        try:
            reply = await self._reply(msg.data, tenant, lock)
        finally:
            lock, holders = self._in_order[key]
            if holders == 1:
                del self._in_order[key]
            else:
                self._in_order[key] = (lock, holders - 1)
        if msg.reply:
            await msg.respond(reply.encode())

    async def _reply(self, body: bytes, tenant: str | None, turn: asyncio.Lock) -> str:
        """The answer, within the deadline whether the database or an earlier verdict on the
        same request holds this one up."""
        try:
            return (await self._deadline.of(_in_turn(turn, lambda: self.record(body, tenant)))
                    ).model_dump_json()
        except TimeoutError:
            log.error("feedback.failed", error="TimeoutError", sqlstate=None)
            return _error(body, ErrorCode.INTERNAL, "the ledger's database did not answer within "
                          f"{ANSWER_WITHIN_S:g} s: the feedback may not be recorded; send it "
                          "again")
        except RouterError as refused:
            return _error(body, refused.code, refused.message)
        except Exception as exc:  # the database away: the sender hears it, may retry
            # The type and SQLSTATE only: psycopg's message may quote the row (the comment).
            log.error("feedback.failed", error=type(exc).__name__,
                      sqlstate=getattr(exc, "sqlstate", None))
            return _error(body, ErrorCode.INTERNAL,
                          f"the ledger could not record the feedback: {type(exc).__name__}")

    async def record(self, body: bytes, vouched: str | None) -> FeedbackAck:
        """Store the verdict; RouterError when it is invalid or names no answered request of
        the tenant's."""
        if len(body) > MAX_FEEDBACK_BYTES:
            raise RouterError(ErrorCode.INVALID_REQUEST, f"the feedback is {len(body)} bytes; "
                              f"the limit is {MAX_FEEDBACK_BYTES}")
        try:
            feedback = Feedback.model_validate_json(body)
        except ValidationError as exc:
            raise RouterError(ErrorCode.INVALID_REQUEST, describe_validation_error(exc)) from None
        tenant = feedback.tenant
        if vouched is not None:
            if not subjects.TENANT_TOKEN_RE.fullmatch(vouched):
                raise RouterError(ErrorCode.INVALID_REQUEST, f"'{vouched}' is not a tenant name")
            if tenant is not None and tenant != vouched:
                raise RouterError(ErrorCode.INVALID_REQUEST, f"'tenant': this connection is "
                                  f"tenant '{vouched}', not '{tenant}'")
            tenant = vouched
        async with self.writers.connection() as conn:
            row = await (await conn.execute(RECORD, {
                "request_id": feedback.request_id, "tenant": tenant, "score": feedback.score,
                "comment": feedback.comment})).fetchone()
        if row is None:
            owner = f"tenant '{tenant}'" if tenant is not None else "no tenant"
            raise RouterError(ErrorCode.UNKNOWN_REQUEST, (
                f"no answered request '{feedback.request_id}' of {owner} in the ledger (a "
                "request is recorded a moment after its reply: retry shortly if it just ended)"))
        log.info("feedback.recorded", request_id=feedback.request_id, score=feedback.score)
        return FeedbackAck(request_id=feedback.request_id, score=feedback.score)


async def _in_turn(turn: asyncio.Lock, work: Callable[[], Awaitable[T]]) -> T:
    """`work`, started once `turn` is ours (not before: cancelled while waiting, it never is)."""
    async with turn:
        return await work()


def _error(body: bytes, code: ErrorCode, message: str) -> str:
    request_id = salvage(body).request_id if len(body) <= MAX_FEEDBACK_BYTES else None
    return ErrorReply(request_id=request_id,
                      error=ErrorBody(code=code, message=message)).model_dump_json()
