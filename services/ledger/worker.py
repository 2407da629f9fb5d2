"""Ledger worker: the product's proof of savings. Consumes router.v1.events.> in batches, writes
each batch in one transaction and acks only after commit; answers router.v1.stats; dead-letters
the messages that crash-looped a stage.

JetStream pushes events to a callback that only gathers them (batcher.py); `ledger.writers`
writers, each with its own connection, take whole batches, so one is parsed while PostgreSQL
commits another. When PostgreSQL is down a writer retries its batch until the database returns,
keeping the batch's messages alive; the queue fills, deliveries stop, JetStream holds the rest,
and the ledger catches up afterwards. Duplicates from redelivery are ignored by the tables'
unique keys.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import structlog
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import db, outcomes, stats, subjects, topology
from shared.errors import ErrorCode
from shared.messages import (
    AttemptEvent,
    DeadLetterEvent,
    ErrorBody,
    ErrorReply,
    RequestEvent,
    describe_validation_error,
)
from shared.runtime import Service

from .batcher import Batcher
from .writer import Batch, LedgerWriter

log = structlog.get_logger(__name__)

service = Service("ledger")
broker, cfg = service.broker, service.config
database_url = service.settings.database_url
RETENTION_EVERY_S = 3600.0
RECONNECT_MAX_WAIT_S = 10.0
STOP_WAIT_S = 10.0


class Writer:
    """Writes whole batches over its own connection, remade after the database comes back."""

    def __init__(self) -> None:
        self.writer: LedgerWriter | None = None
        self.conn: psycopg.AsyncConnection | None = None

    async def run(self, batches: asyncio.Queue[list[Msg]]) -> None:
        while True:
            messages = await batches.get()
            try:
                service.counters.in_flight += len(messages)
                await self.write(_parse(messages), messages)
                await asyncio.gather(*(m.ack() for m in messages))
                service.counters.handled += len(messages)
            finally:
                service.counters.in_flight -= len(messages)
                batches.task_done()

    async def write(self, batch: Batch, messages: list[Msg]) -> None:
        wait = 0.5
        while True:
            try:
                if self.writer is None:
                    self.conn = await db.connect(database_url)
                    self.writer = LedgerWriter(self.conn)
                await self.writer.write(batch)
                return
            except psycopg.OperationalError as exc:
                log.warning("ledger.database_unavailable", retry_in_s=wait,
                            reason=str(exc).splitlines()[0], pending=len(messages))
                await self.close()
                await _keep_alive(messages)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX_WAIT_S)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn, self.writer = None, None


batcher = Batcher(cfg.ledger.batch_size, cfg.ledger.batch_timeout_s, depth=cfg.ledger.writers)
writers = [Writer() for _ in range(cfg.ledger.writers)]
tasks: list[asyncio.Task] = []
subscription = None
# For router.v1.stats: separate connections, so a slow summary never holds up a batch.
readers = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False,
                              kwargs={"autocommit": True})


@service.app.on_startup
async def prepare_database() -> None:
    await db.wait_until_ready(database_url)
    applied = await asyncio.to_thread(db.migrate, database_url)
    if applied:
        log.info("ledger.migrated", applied=applied)
    await readers.open()


@service.app.after_startup
async def start_consuming() -> None:
    global subscription
    tasks.extend(asyncio.create_task(w.run(batcher.batches)) for w in writers)
    tasks.append(asyncio.create_task(batcher.close_late_batches()))
    consumer = topology.ledger_consumer(cfg.pipeline, cfg.ledger)
    subscription = await service.jetstream.subscribe(
        consumer.filter_subject, queue=consumer.name, stream=consumer.stream,
        cb=batcher.add, manual_ack=True,
    )
    service.background(_retention_forever())


@service.app.on_shutdown
async def finish_and_close() -> None:
    """Stop deliveries, let the batches in hand commit and be acked, close the database."""
    if subscription is not None:
        with contextlib.suppress(Exception):  # else the broker's drain waits for it
            await subscription.unsubscribe()
    await batcher.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(batcher.batches.join(), STOP_WAIT_S)
    for task in tasks:
        task.cancel()
    for writer in writers:
        await writer.close()
    await readers.close()


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: int = Field(default=30, ge=1, le=3660)


@broker.subscriber(subjects.STATS, queue="ledger")
async def on_stats(_body: object) -> dict:
    try:
        query = StatsQuery.model_validate_json(service.message().body or b"{}")
    except ValidationError as exc:
        return ErrorReply(request_id=None, error=ErrorBody(
            code=ErrorCode.INVALID_REQUEST, message=describe_validation_error(exc)
        )).model_dump()
    async with readers.connection() as conn:
        return await stats.summary(conn, query.days)


class MaxDeliveriesAdvisory(BaseModel):
    """JetStream's io.nats.jetstream.advisory.v1.max_deliver: the fields used here."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


@service.consumer("exhausted", 1)
async def on_exhausted(_body: object) -> None:
    """A message whose every delivery ended without a settle (its handler's process died each
    time) would sit in its work-queue stream for ever: read it back, dead-letter it, so its
    caller hears why, and delete it."""
    msg = service.message()
    await service.settle(msg, lambda: _dead_letter_exhausted(msg.body))


async def _dead_letter_exhausted(body: bytes) -> None:
    advisory = MaxDeliveriesAdvisory.model_validate_json(body)
    try:
        stored = await service.jetstream.get_msg(advisory.stream, advisory.stream_seq)
    except NotFoundError:
        return  # settled since, or already dead-lettered by an earlier delivery of the advisory
    reason = f"no delivery settled it: {advisory.deliveries} deliveries to {advisory.consumer}"
    log.error("message.dead_letter", subject=stored.subject, delivery=advisory.deliveries,
              reason=reason)
    unsettled = outcomes.Unsettled(advisory.stream, stored.subject or "", advisory.stream_seq,
                                   advisory.deliveries, stored.data or b"")
    await outcomes.dead_letter(broker, unsettled, reason,
                               store_prompt=cfg.ledger.store_prompt_text)
    await service.jetstream.delete_msg(advisory.stream, advisory.stream_seq)


_EVENT_TYPES: dict[str, type[BaseModel]] = {
    subjects.REQUEST_EVENTS: RequestEvent,
    subjects.ATTEMPT_EVENTS: AttemptEvent,
    subjects.DEAD_LETTER_EVENTS: DeadLetterEvent,
}


def _parse(messages: list[Msg]) -> Batch:
    """Events by kind. An unreadable event is itself recorded as a dead letter, not dropped."""
    batch = Batch()
    lists = {RequestEvent: batch.requests, AttemptEvent: batch.attempts,
             DeadLetterEvent: batch.dead_letters}
    for m in messages:
        kind = _EVENT_TYPES.get(m.subject)
        try:
            if kind is None:
                raise ValueError(f"no event type for subject {m.subject}")
            lists[kind].append(kind.model_validate_json(m.data))
        except (ValidationError, ValueError) as exc:
            log.warning("ledger.unreadable_event", subject=m.subject,
                        seq=m.metadata.sequence.stream)
            batch.dead_letters.append(DeadLetterEvent(
                subject=m.subject, stream_seq=m.metadata.sequence.stream,
                deliveries=m.metadata.num_delivered, reason=f"unreadable event: {exc}"[:500],
                body_bytes=len(m.data), at=m.metadata.timestamp.timestamp(),
            ))
    return batch


async def _keep_alive(messages: list[Msg]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.gather(*(m.in_progress() for m in messages))


async def _retention_forever() -> None:
    while True:
        try:
            async with await db.connect(database_url) as conn:
                deleted = await _apply_retention(conn, cfg.ledger.retention_days)
            if deleted:
                log.info("ledger.retention", deleted=deleted, keep_days=cfg.ledger.retention_days)
        except psycopg.Error as exc:
            log.warning("ledger.retention_failed", reason=str(exc).splitlines()[0])
        await asyncio.sleep(RETENTION_EVERY_S)


async def _apply_retention(conn: psycopg.AsyncConnection, days: int) -> int:
    """Raw rows older than the retention go; the daily roll-ups keep their figures."""
    deleted = 0
    for table, column in (("requests", "finished_at"), ("attempts", "at"),
                          ("dead_letters", "at")):
        cur = await conn.execute(
            f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)", (days,)
        )
        deleted += cur.rowcount
    return deleted
