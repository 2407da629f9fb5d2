"""PostgreSQL: schema migrations (yoyo, re-runnable) and connections (psycopg 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import structlog
from yoyo import get_backend, read_migrations

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def _yoyo_uri(database_url: str) -> str:
    """yoyo picks its driver from the scheme; ours is psycopg 3."""
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def migrate(database_url: str) -> list[str]:
    """Apply the migrations not yet applied; returns their ids. Safe to run any number of times,
    from several processes at once (yoyo takes a lock)."""
    backend = get_backend(_yoyo_uri(database_url))
    migrations = read_migrations(str(MIGRATIONS))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


async def connect(database_url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True)


async def wait_until_ready(database_url: str, timeout_s: float = 60.0) -> None:
    """At start-up PostgreSQL may still be coming up: wait, saying so, then fail clearly."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(database_url, connect_timeout=2)
            await conn.close()
            return
        except psycopg.OperationalError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("postgres.waiting", reason=str(exc).splitlines()[0])
            await asyncio.sleep(1)
