"""Ledger worker: the product's proof of savings. Consumes router.v1.events.> in batches, writes
each batch in one transaction and acks only after commit; answers router.v1.stats; dead-letters
the messages that crash-looped a stage.

JetStream pushes events to a callback that only gathers them (batcher.py); `ledger.writers`
writers (batch_writer.py), each with its own connection, take whole batches, so one is parsed
while PostgreSQL commits another. When PostgreSQL is down a writer retries its batch until the
database returns, keeping the batch's messages alive; the queue fills, deliveries stop,
JetStream holds the rest, and the ledger catches up afterwards. Duplicates from redelivery are
ignored by the tables' unique keys; an event PostgreSQL cannot store becomes a dead letter.

The writers run under supervision: if one fails for any other reason, the process stops and
exits non-zero (__main__), so its supervisor restarts it instead of it taking events and writing
none. Its heartbeat carries the writers' states and the consumer's backlog (backlog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import structlog
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import db, outcomes, stats, subjects, topology
from shared.errors import ErrorCode
from shared.health import LedgerProgress
from shared.messages import ErrorBody, ErrorReply, describe_validation_error
from shared.runtime import Service

from . import backlog
from .batch_writer import BatchWriter
from .batcher import Batcher
from .writer import first_line

log = structlog.get_logger(__name__)

service = Service("ledger")
broker, cfg = service.broker, service.config
database_url = service.settings.database_url
RETENTION_EVERY_S = 3600.0
STOP_WAIT_S = 10.0


@dataclass
class Supervision:
    """Why the writers stopped, if one failed; __main__ exits non-zero when set."""

    failure: str | None = None


consumer = topology.ledger_consumer(cfg.pipeline, cfg.ledger)
batcher = Batcher(cfg.ledger.batch_size, cfg.ledger.batch_timeout_s, depth=cfg.ledger.writers)
progress = LedgerProgress(stuck_after_s=cfg.ledger.stuck_after_s, writers=[])
writers = [BatchWriter(database_url, progress, service.counters,
                       keepalive_every_s=consumer.ack_wait_s / 3)
           for _ in range(cfg.ledger.writers)]
progress.writers = [w.state for w in writers]
service.counters.ledger = progress
supervision = Supervision()
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
    tasks.append(asyncio.create_task(_supervise()))
    subscription = await service.jetstream.subscribe(
        consumer.filter_subject, queue=consumer.name, stream=consumer.stream,
        cb=batcher.add, manual_ack=True,
    )
    service.background(backlog.watch(service.jetstream, consumer, progress))
    service.background(_retention_forever())


async def _supervise() -> None:
    """The writers and the batch closer live and die together: one that fails (it has logged
    its batch) stops the process, which exits 1."""
    try:
        async with asyncio.TaskGroup() as group:
            for writer in writers:
                group.create_task(writer.run(batcher.batches))
            group.create_task(batcher.close_late_batches())
    except* Exception as failed:
        supervision.failure = "; ".join(f"{type(e).__name__}: {first_line(e)}"
                                        for e in failed.exceptions)
        log.error("ledger.stopping", reason=supervision.failure, exit_code=1)
        service.app.exit()


@service.app.on_shutdown
async def finish_and_close() -> None:
    """Stop deliveries, let the batches in hand commit and be acked, close the database."""
    if subscription is not None:
        with contextlib.suppress(Exception):  # else the broker's drain waits for it
            await subscription.unsubscribe()
    if supervision.failure is None:  # else no writer is left to take them
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
                                   advisory.deliveries, stored.data or b"",
                                   stored.time or datetime.now(UTC))
    await outcomes.dead_letter(broker, unsettled, reason,
                               store_prompt=cfg.ledger.store_prompt_text)
    await service.jetstream.delete_msg(advisory.stream, advisory.stream_seq)


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
