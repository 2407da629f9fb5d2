"""Ledger worker: the product's proof of savings. Consumes router.v1.events.> in batches, writes
each batch in one transaction and acks only after commit. The same process answers
router.v1.stats (stats_responder.py) and router.v1.feedback (feedback.py), dead-letters the messages that crash-looped a stage
(exhausted.py) and applies the retention (retention.py).

JetStream pushes events to a callback that only gathers them (batcher.py); `ledger.writers`
writers (batch_writer.py), each with its own connection, take whole batches, so one is parsed
while PostgreSQL commits another. When PostgreSQL is down a writer retries its batch until the
database returns, keeping the batch's messages alive; the queue fills, deliveries stop,
JetStream holds the rest, and the ledger catches up afterwards. Duplicates from redelivery are
ignored by the tables' unique keys; an event PostgreSQL cannot store becomes a dead letter.

The writers run under supervision: if one fails for any other reason, the process stops and
exits 1, so its supervisor restarts it instead of it taking events and writing
none. Its heartbeat carries the writers' states and the consumer's backlog (backlog.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from faststream import FastStream
from nats.js import JetStreamContext

from shared import db, subjects, topology
from shared.config import RouterConfig, Settings
from shared.db import first_line
from shared.health import LedgerProgress
from shared.runtime import Service

from . import backlog, retention
from .batch_writer import BatchWriter
from .batcher import Batcher
from .exhausted import Exhausted
from .feedback import FeedbackResponder
from .stats_responder import STATS_AT_ONCE, StatsResponder

log = structlog.get_logger(__name__)

STOP_WAIT_S = 10.0
LEDGER = "ledger"  # where create_app's app keeps its Ledger, in the app's context


def create_app(config: RouterConfig | None = None,
               settings: Settings | None = None) -> FastStream:
    service = Service("ledger", config, settings)
    cfg, database_url = service.config, service.settings.database_url
    ledger = Ledger(service)
    responder = StatsResponder(database_url, lambda: service.broker.connection.max_payload)
    service.respond(subjects.STATS, "ledger", responder.on_stats, at_once=STATS_AT_ONCE)
    feedback = FeedbackResponder(database_url)
    exhausted = Exhausted(service.broker, lambda: service.jetstream,
                          store_prompt=cfg.ledger.store_prompt_text, tiers=len(cfg.tiers))
    service.consume("exhausted", 1, exhausted.on_advisory)

    @service.app.on_startup
    async def prepare_database() -> None:
        await db.wait_until_ready(database_url)
        applied = await asyncio.to_thread(db.migrate, database_url)
        if applied:
            log.info("ledger.migrated", applied=applied)
        await responder.open()

    @service.app.after_startup
    async def start() -> None:
        await ledger.start()
        await feedback.open(service.broker.connection)
        service.background(retention.apply_forever(database_url, cfg.ledger.retention_days))

    @service.app.on_shutdown
    async def stop() -> None:
        await feedback.close()
        await ledger.stop()
        await responder.close()

    service.app.context.set_global(LEDGER, ledger)  # __main__ reads its failure
    return service.app


class Ledger:
    """The consumer, the batcher and the writers, which live and die together."""

    def __init__(self, service: Service) -> None:
        cfg = service.config
        self.service = service
        self.consumer = topology.ledger_consumer(cfg.pipeline, cfg.ledger)
        self.batcher = Batcher(cfg.ledger.batch_size, cfg.ledger.batch_timeout_s)
        self.progress = LedgerProgress(stuck_after_s=cfg.ledger.stuck_after_s, writers=[])
        self.writers = [BatchWriter(service.settings.database_url, self.progress,
                                    service.counters)
                        for _ in range(cfg.ledger.writers)]
        self.progress.writers = [w.state for w in self.writers]
        service.counters.ledger = self.progress
        self.failure: str | None = None  # why the writers stopped, if one failed
        self._supervisor: asyncio.Task | None = None
        self._subscription: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        jetstream = self.service.jetstream
        self._supervisor = asyncio.create_task(self._supervise())
        self._subscription = await jetstream.subscribe(
            self.consumer.filter_subject, queue=self.consumer.name, stream=self.consumer.stream,
            cb=self.batcher.add, manual_ack=True,
        )
        self.service.background(backlog.watch(jetstream, self.consumer, self.progress))

    async def _supervise(self) -> None:
        """One writer (or the batch closer) that fails, having logged its batch, stops the
        process, which exits 1."""
        try:
            async with asyncio.TaskGroup() as group:
                for writer in self.writers:
                    group.create_task(writer.run(self.batcher))
                group.create_task(self.batcher.close_late_batches())
                group.create_task(self.batcher.keep_held_alive(
                    self.consumer.ack_wait_s / 3,
                    lambda: self.service.broker.connection.is_connected))
        except* Exception as failed:
            self.failure = "; ".join(f"{type(e).__name__}: {first_line(e)}"
                                     for e in failed.exceptions)
            log.error("ledger.stopping", reason=self.failure, exit_code=1)
            self.service.app.exit()

    async def stop(self) -> None:
        """Stop deliveries, let the batches in hand commit and be acked, close the database."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):  # else the broker's drain waits for it
                await self._subscription.unsubscribe()
        if self.failure is None:  # else no writer is left to take them
            await self.batcher.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.batcher.batches.join(), STOP_WAIT_S)
        if self._supervisor is not None:
            self._supervisor.cancel()
        for writer in self.writers:
            await writer.close()
