"""PostgreSQL: schema migrations (yoyo, re-runnable) and connections (psycopg 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import Row
from psycopg_pool import AsyncConnectionPool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)
from yoyo import get_backend, read_migrations
from yoyo.connections import BadConnectionURI

log = structlog.get_logger(__name__)
T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")

# A request-reply responder's pool (router.v1.stats, router.v1.feedback): its caller waits seconds.
POOL_TIMEOUT_S = 2.0  # to get a connection: the database refusing them, or all of them in use
CONNECT_TIMEOUT_S = 2  # libpq's connect_timeout, in whole seconds
RECONNECT_TIMEOUT_S = 10.0  # see responder_pool


def _yoyo_uri(database_url: str) -> str:
    """yoyo picks its driver from the scheme; ours is psycopg 3."""
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def migrate(database_url: str) -> list[str]:
    """Apply the migrations not yet applied; returns their ids. Safe to run any number of times,
    from several processes at once (yoyo takes a lock)."""
    try:
        backend = get_backend(_yoyo_uri(database_url))
    except BadConnectionURI:  # its message quotes the string, password and all
        raise ValueError("DATABASE_URL must be a postgresql:// URL (a libpq key=value string "
                         "is not read by the migrations)") from None
    migrations = read_migrations(str(MIGRATIONS))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def first_line(exc: BaseException) -> str:
    """An error's message without psycopg's DETAIL and CONTEXT lines (which quote values)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class Deadline:
    """A responder's answer within `seconds`, whatever the database does: the read is awaited
    that long, then cancelled in the background (psycopg cancels a running query on the server,
    which takes seconds more when the server hangs, and the caller must not wait for that)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._abandoned: set[asyncio.Task] = set()

    async def of(self, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result, or TimeoutError after `seconds`."""
        task = asyncio.create_task(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.seconds)
        except asyncio.CancelledError:  # the responder is stopping
            task.cancel()
            raise
        if task not in done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise TimeoutError
        return task.result()

    def _forget(self, task: asyncio.Task) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was answered for already


def responder_pool(
    database_url: str, *, name: str, max_size: int,
    configure: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
) -> AsyncConnectionPool:
    """A pool (not yet open) of autocommit connections for a responder whose caller waits
    seconds. A connection is checked when taken, so one a database restart broke is replaced,
    not used; a caller waits at most POOL_TIMEOUT_S for one. While the database is down the pool
    retries a connection with a doubling delay and gives up after RECONNECT_TIMEOUT_S (psycopg's
    default, 300 s, lets the delay grow to minutes, which the first requests after the database
    returns would wait out); the next request then starts a new attempt at once."""
    return AsyncConnectionPool(
        database_url, min_size=1, max_size=max_size, open=False, name=name,
        timeout=POOL_TIMEOUT_S, reconnect_timeout=RECONNECT_TIMEOUT_S,
        check=AsyncConnectionPool.check_connection, configure=configure,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S})


async def connect(database_url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True)


async def one_row(cur: psycopg.AsyncCursor[Row]) -> Row:
    """The row of a query that always returns one: an aggregate (count, sum...)."""
    row = await cur.fetchone()
    if row is None:
        raise LookupError("an aggregate query returned no row")
    return row


async def wait_until_ready(database_url: str, timeout_s: float = 60.0) -> None:
    """At start-up PostgreSQL may still be coming up: wait, saying so, then fail clearly (with
    the server's own error)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(psycopg.OperationalError), wait=wait_fixed(1),
        stop=stop_after_delay(timeout_s), before_sleep=_waiting, reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            conn = await psycopg.AsyncConnection.connect(database_url, connect_timeout=2)
            await conn.close()


def _waiting(retry: RetryCallState) -> None:
    error = retry.outcome.exception() if retry.outcome else None
    log.warning("postgres.waiting", reason=str(error).partition("\n")[0])
