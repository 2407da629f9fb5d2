"""One of the ledger's writers: takes whole batches off the batcher's queue and commits each in
one transaction over its own connection, then acks its messages.

- PostgreSQL unavailable: the batch is retried, with exponential backoff and without limit (the
  events are the record), over a new connection; the batcher keeps the messages alive meanwhile.
- PostgreSQL refuses an event for its data: the batch is bisected, the event becomes a dead
  letter with the reason, the rest commit (writer.LedgerWriter.write_isolating).
- Anything else is a bug: the batch is logged (size, subjects, sequences; never its contents)
  and the exception raised, so the ledger's supervision stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import structlog
from nats.aio.msg import Msg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
)

from shared.db import first_line
from shared.health import Counters, LedgerProgress, WriterState

from . import intake
from .batcher import Batcher
from .writer import Batch, LedgerWriter, is_connection_problem

log = structlog.get_logger(__name__)

RECONNECT_FIRST_WAIT_S = 0.5
RECONNECT_MAX_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 5
T = TypeVar("T")


class BatchWriter:
    def __init__(self, database_url: str, progress: LedgerProgress, counters: Counters) -> None:
        self.state = WriterState()
        self._database_url = database_url
        self._progress = progress
        self._counters = counters
        self._conn: psycopg.AsyncConnection | None = None
        self._writer: LedgerWriter | None = None
        self._batch: list[Msg] = []

    async def run(self, batcher: Batcher) -> None:
        batches = batcher.batches
        while True:
            self._batch = await batches.get()
            self.state.become("writing")
            self._counters.in_flight += len(self._batch)
            try:
                await self.commit(self._batch)
                batcher.settled(self._batch)
            except Exception:
                self.state.become("failed")
                log.exception("ledger.batch_failed", **describe(self._batch))
                raise
            finally:
                self._counters.in_flight -= len(self._batch)
                batches.task_done()
            self.state.become("idle")

    async def commit(self, messages: list[Msg]) -> None:
        """Store every message's event, or its dead letter, then ack them all."""
        entries = intake.read(messages)
        refused = await self._with_database(lambda w: w.write_isolating(entries))
        if refused:
            for r in refused:
                log.warning("ledger.dead_letter", subject=r.entry.origin.subject,
                            seq=r.entry.origin.stream_seq, reason=r.reason)
            letters = Batch(dead_letters=[r.entry.dead_letter(r.reason) for r in refused])
            await self._with_database(lambda w: w.write(letters))
        self.state.batches += 1
        self._progress.last_commit_at = time.time()
        await asyncio.gather(*(m.ack() for m in messages))
        dead = sum(e.replaced for e in entries) + len(refused)
        self._counters.handled += len(messages) - dead
        self._counters.failed += dead

    async def _with_database(self, work: Callable[[LedgerWriter], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_connection_problem),
            wait=wait_exponential(multiplier=RECONNECT_FIRST_WAIT_S, max=RECONNECT_MAX_WAIT_S),
            stop=stop_never, before_sleep=self._database_unavailable, reraise=True,
        )
        return await retrying(self._on_connection, work)

    async def _on_connection(self, work: Callable[[LedgerWriter], Awaitable[T]]) -> T:
        return await work(await self._connected())

    async def _connected(self) -> LedgerWriter:
        if self._writer is None:
            self._conn = await psycopg.AsyncConnection.connect(
                self._database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            self._writer = LedgerWriter(self._conn)
            self.state.become("writing")
        return self._writer

    async def _database_unavailable(self, retry: RetryCallState) -> None:
        exc = retry.outcome.exception() if retry.outcome else None
        if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):
            # A deadlock or serialization failure with another writer: the database is fine and
            # the connection usable; the transaction is simply tried again.
            log.info("ledger.transaction_rolled_back", reason=first_line(exc),
                     pending=len(self._batch))
            return
        log.warning("ledger.database_unavailable",
                    retry_in_s=retry.next_action.sleep if retry.next_action else None,
                    reason=first_line(exc) if exc else "", pending=len(self._batch))
        self.state.become("waiting_for_database")
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn, self._writer = None, None


def describe(messages: list[Msg]) -> dict:
    """A batch for the logs: how many, which subjects, which stream sequences; no contents."""
    seqs = [m.metadata.sequence.stream for m in messages]
    return {"size": len(messages), "subjects": sorted({m.subject for m in messages}),
            "seq_first": min(seqs, default=None), "seq_last": max(seqs, default=None)}
