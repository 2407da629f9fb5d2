"""router.v1.stats: the cost summary on request, read on connections of its own, so a slow
summary never holds up a batch, and in one read-only snapshot (stats.snapshot), so its figures
are of one instant.

The caller always hears an answer before it gives up (`smart-router stats` and the gateway wait
10 s, the tests 5 s): a database that is down, restarting or slow is answered within ANSWER_WITHIN_S
with `internal_error` saying why, and logged once until it answers again; a connection broken by a
database restart is checked out of the pool, not used. A summary that would not fit in one NATS
message (the server's max_payload, headers included) is answered with `internal_error` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
import structlog
from faststream.nats import NatsMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import db, payload, subjects
from shared.db import first_line
from shared.errors import ErrorCode
from shared.messages import ErrorBody, ErrorReply, describe_validation_error

from . import stats

log = structlog.get_logger(__name__)

# One summary per pooled connection at once: a request is not queued behind another's wait
# for a database that does not answer.
STATS_AT_ONCE = 4
ANSWER_WITHIN_S = 4.0  # a connection (db.POOL_TIMEOUT_S) and the whole summary, or an error
STATEMENT_TIMEOUT_MS = 3_000  # one of the summary's queries (each takes milliseconds)


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: int = Field(default=30, ge=1, le=3660)


class StatsResponder:
    """`max_payload` reads the NATS server's limit when a reply is ready (the broker's
    connection's, which exists only once the service runs)."""

    def __init__(self, database_url: str, max_payload: Callable[[], int]) -> None:
        self.readers = db.responder_pool(database_url, name="stats", max_size=STATS_AT_ONCE)
        self._max_payload = max_payload
        self._reachable = True
        self._deadline = db.Deadline(ANSWER_WITHIN_S)

    async def open(self) -> None:
        await self.readers.open()

    async def close(self) -> None:
        await self.readers.close()

    async def on_stats(self, msg: NatsMessage) -> dict:
        try:
            query = StatsQuery.model_validate_json(msg.body or b"{}")
        except ValidationError as exc:
            return _error(ErrorCode.INVALID_REQUEST, describe_validation_error(exc))
        try:
            summary = await self._deadline.of(self._summary(query.days))
        except (psycopg.Error, TimeoutError) as exc:
            reason = (f"no answer within {ANSWER_WITHIN_S:g} s" if isinstance(exc, TimeoutError)
                      else first_line(exc))
            if self._reachable:
                log.warning("stats.database_unavailable", reason=reason)
            self._reachable = False
            return _error(ErrorCode.INTERNAL, f"the ledger's database did not answer: {reason}")
        if not self._reachable:
            log.info("stats.database_available")
        self._reachable = True
        return self.fitting(summary)

    async def _summary(self, days: int) -> dict:
        async with self.readers.connection() as conn, stats.snapshot(conn, STATEMENT_TIMEOUT_MS):
            return await stats.summary(conn, days)

    def fitting(self, summary: dict) -> dict:
        """`summary`, or an error reply when it is over the server's max_payload: measured as
        json.dumps writes it, which is FastStream's encoding (or longer, when FastStream finds
        orjson, which writes no spaces and no escapes), with shared.payload's header margin."""
        try:
            payload.check(self._max_payload(), subjects.STATS, json.dumps(summary).encode())
        except payload.TooLarge as exc:
            log.error("stats.too_large", size=exc.size, max_payload=exc.limit)
            return _error(ErrorCode.INTERNAL, f"the summary is {exc.size} bytes, over the NATS "
                          f"server's max_payload of {exc.limit} bytes")
        return summary


def _error(code: ErrorCode, message: str) -> dict:
    return ErrorReply(request_id=None, error=ErrorBody(code=code, message=message)).model_dump()
