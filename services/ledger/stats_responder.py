"""router.v1.stats: the cost summary on request, read on connections of its own, so a slow
summary never holds up a batch. A summary that would not fit in one NATS message (the server's
max_payload, headers included) is answered with `internal_error` saying so, never with silence."""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog
from faststream.nats import NatsMessage
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import payload, subjects
from shared.errors import ErrorCode
from shared.messages import ErrorBody, ErrorReply, describe_validation_error

from . import stats

log = structlog.get_logger(__name__)


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: int = Field(default=30, ge=1, le=3660)


class StatsResponder:
    """`max_payload` reads the NATS server's limit when a reply is ready (the broker's
    connection's, which exists only once the service runs)."""

    def __init__(self, database_url: str, max_payload: Callable[[], int]) -> None:
        self.readers = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False,
                                           kwargs={"autocommit": True})
        self._max_payload = max_payload

    async def open(self) -> None:
        await self.readers.open()

    async def close(self) -> None:
        await self.readers.close()

    async def on_stats(self, msg: NatsMessage) -> dict:
        try:
            query = StatsQuery.model_validate_json(msg.body or b"{}")
        except ValidationError as exc:
            return _error(ErrorCode.INVALID_REQUEST, describe_validation_error(exc))
        async with self.readers.connection() as conn:
            summary = await stats.summary(conn, query.days)
        return self.fitting(summary)

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
