"""The dashboard's connection to the ledger: an async psycopg pool on a background event loop.

Dash runs callbacks synchronously on the web server's threads, while the ledger's stats.summary() is
async. One loop thread owns the pool; each callback hands it a coroutine and waits for the result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from . import queries

log = structlog.get_logger(__name__)


class LedgerUnavailable(Exception):
    """The database did not answer in time; the message says why, in one line."""


class Ledger:
    """`timeout_s` bounds a whole snapshot read. Keep it under the page's refresh interval: Dash
    drops an answer that arrives after the next tick's request went out."""

    def __init__(self, database_url: str, *, timeout_s: float = 4.0) -> None:
        self._timeout_s = timeout_s
        self._reachable = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ledger-loop",
                                        daemon=True)
        self._thread.start()
        self._pool = self._call(self._open_pool(database_url))

    async def _open_pool(self, database_url: str) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, open=False, name="dashboard",
            timeout=self._timeout_s / 2, kwargs={"autocommit": True, "connect_timeout": 2},
            # a connection broken by a database restart is replaced, not handed to a callback
            check=AsyncConnectionPool.check_connection,
        )
        await pool.open(wait=False)  # start even while the database is down; say so per refresh
        return pool

    def snapshot(self, days: int) -> queries.Snapshot:
        """Everything one refresh shows, for the last `days` days."""
        try:
            snapshot = self._call(self._read(days))
        except TimeoutError as exc:
            raise self._unreachable(f"no answer within {self._timeout_s:g} s") from exc
        except psycopg.Error as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise self._unreachable(first_line) from exc
        if not self._reachable:
            log.info("ledger.reachable")
        self._reachable = True
        return snapshot

    def _unreachable(self, reason: str) -> LedgerUnavailable:
        if self._reachable:
            log.warning("ledger.unreachable", reason=reason)
        self._reachable = False
        return LedgerUnavailable(reason)

    async def _read(self, days: int) -> queries.Snapshot:
        async with self._pool.connection() as conn:
            # the server stops a query the client gave up on, even if its cancel is lost
            return await queries.read_snapshot(conn, days, int(self._timeout_s * 1000))

    def _call(self, work: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout=self._timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self._call(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
