"""Retention: raw rows older than `ledger.retention_days` go, hourly; the daily roll-ups keep
their figures."""

from __future__ import annotations

import asyncio

import psycopg
import structlog

from shared import db

log = structlog.get_logger(__name__)

RETENTION_EVERY_S = 3600.0


async def apply_forever(database_url: str, days: int) -> None:
    while True:
        try:
            async with await db.connect(database_url) as conn:
                deleted = await apply(conn, days)
            if deleted:
                log.info("ledger.retention", deleted=deleted, keep_days=days)
        except psycopg.Error as exc:
            log.warning("ledger.retention_failed", reason=str(exc).splitlines()[0])
        await asyncio.sleep(RETENTION_EVERY_S)


async def apply(conn: psycopg.AsyncConnection, days: int) -> int:
    deleted = 0
    for table, column in (("requests", "finished_at"), ("attempts", "at"),
                          ("dead_letters", "at"), ("feedback", "at")):
        cur = await conn.execute(
            f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)", (days,)
        )
        deleted += cur.rowcount
    return deleted
