"""router.v1.stats: the cost summary on request, read on connections of its own, so a slow
summary never holds up a batch."""

from __future__ import annotations

from faststream.nats import NatsMessage
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ErrorCode
from shared.messages import ErrorBody, ErrorReply, describe_validation_error

from . import stats


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: int = Field(default=30, ge=1, le=3660)


class StatsResponder:
    def __init__(self, database_url: str) -> None:
        self.readers = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False,
                                           kwargs={"autocommit": True})

    async def open(self) -> None:
        await self.readers.open()

    async def close(self) -> None:
        await self.readers.close()

    async def on_stats(self, msg: NatsMessage) -> dict:
        try:
            query = StatsQuery.model_validate_json(msg.body or b"{}")
        except ValidationError as exc:
            return ErrorReply(request_id=None, error=ErrorBody(
                code=ErrorCode.INVALID_REQUEST, message=describe_validation_error(exc)
            )).model_dump()
        async with self.readers.connection() as conn:
            return await stats.summary(conn, query.days)
