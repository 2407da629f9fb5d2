"""Writes a batch of ledger events in one transaction.

Rows are COPied into temporary tables, then inserted with ON CONFLICT DO NOTHING, so a redelivered
event is ignored by its unique key; only the rows that were really new are added to the daily
roll-ups, in the same statement, so the roll-ups can never count a request twice.

A batch PostgreSQL refuses for its data is split in two until each refused event stands alone
(`write_isolating`): the rest commit, and the caller dead-letters the refused ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import assert_never

import psycopg

from shared.db import first_line
from shared.messages import AttemptEvent, DeadLetterEvent, RequestEvent

from . import columns

REQUEST_COLUMNS = tuple(columns.REQUESTS)
ATTEMPT_COLUMNS = tuple(columns.ATTEMPTS)
DEAD_LETTER_COLUMNS = tuple(columns.DEAD_LETTERS)
_TIMESTAMPS = {"received_at", "finished_at", "at"}
REASON_MAX_CHARS = 500
KEY_MAX_CHARS = 120  # 4 bytes a character at most: within columns.KEY_TEXT_MAX_BYTES

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS requests_in (LIKE requests INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS attempts_in (LIKE attempts INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS dead_letters_in (LIKE dead_letters INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
"""

_cols = ", ".join

INSERT_REQUESTS = f"""
WITH new AS (
    INSERT INTO requests ({_cols(REQUEST_COLUMNS)})
    SELECT {_cols(REQUEST_COLUMNS)} FROM requests_in
    ORDER BY trace_id  -- concurrent writers of the same rows lock them in one order
    ON CONFLICT (trace_id) DO NOTHING
    RETURNING *
), usage AS (
    INSERT INTO daily_usage AS d (
        day, tenant, model_used, tier, status, emulated, requests, escalated, input_tokens,
        output_tokens, cost_usd, baseline_cost_usd, escalation_cost_usd, latency_ms_sum)
    SELECT (finished_at AT TIME ZONE 'UTC')::date, coalesce(tenant, ''),
           coalesce(model_used, ''), coalesce(tier, ''), status, emulated, count(*),
           count(*) FILTER (WHERE escalated), sum(input_tokens), sum(output_tokens),
           sum(cost_usd), sum(baseline_cost_usd), sum(escalation_cost_usd), sum(latency_ms)
    FROM new GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6  -- concurrent writers lock roll-up rows in one order: no deadlock
    ON CONFLICT (day, tenant, model_used, tier, status, emulated) DO UPDATE SET
        requests = d.requests + excluded.requests,
        escalated = d.escalated + excluded.escalated,
        input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cost_usd = d.cost_usd + excluded.cost_usd,
        baseline_cost_usd = d.baseline_cost_usd + excluded.baseline_cost_usd,
        escalation_cost_usd = d.escalation_cost_usd + excluded.escalation_cost_usd,
        latency_ms_sum = d.latency_ms_sum + excluded.latency_ms_sum
), latency AS (
    INSERT INTO daily_latency AS l (day, tier, bucket, count)
    SELECT (finished_at AT TIME ZONE 'UTC')::date, coalesce(tier, ''),
           round(20 * ln(greatest(latency_ms, 0.1)))::smallint, count(*)
    FROM new WHERE status = 'ok' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (day, tier, bucket) DO UPDATE SET count = l.count + excluded.count
)
INSERT INTO daily_ttft AS t (day, bucket, count)
SELECT (finished_at AT TIME ZONE 'UTC')::date, round(20 * ln(greatest(ttft_ms, 0.1)))::smallint,
       count(*)
FROM new WHERE ttft_ms IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (day, bucket) DO UPDATE SET count = t.count + excluded.count
"""

# A call's row comes from the dispatcher when the call returns, and again from the escalator when
# it judges the answer weak: the verdict wins, whichever arrives first. The checks' and samples'
# costs of the calls really inserted are added to their day's roll-up (a verdict only ever
# changes an answer's call).
INSERT_ATTEMPTS = f"""
WITH new AS (
    INSERT INTO attempts AS a ({_cols(ATTEMPT_COLUMNS)})
    SELECT DISTINCT ON (call_id) {_cols(ATTEMPT_COLUMNS)} FROM attempts_in
    ORDER BY call_id, outcome = 'weak' DESC
    ON CONFLICT (call_id) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason
        WHERE excluded.outcome = 'weak'
    RETURNING at, outcome, cost_usd
)
INSERT INTO daily_checks AS c (day, verification_cost_usd, sampling_cost_usd)
SELECT (at AT TIME ZONE 'UTC')::date,
       coalesce(sum(cost_usd) FILTER (WHERE outcome IN ('verify', 'judge')), 0),
       coalesce(sum(cost_usd) FILTER (WHERE outcome = 'sample'), 0)
FROM new WHERE outcome IN ('verify', 'judge', 'sample') GROUP BY 1
ORDER BY 1  -- concurrent writers lock roll-up rows in one order: no deadlock
ON CONFLICT (day) DO UPDATE SET
    verification_cost_usd = c.verification_cost_usd + excluded.verification_cost_usd,
    sampling_cost_usd = c.sampling_cost_usd + excluded.sampling_cost_usd
"""

INSERT_DEAD_LETTERS = f"""
INSERT INTO dead_letters ({_cols(DEAD_LETTER_COLUMNS)})
SELECT {_cols(DEAD_LETTER_COLUMNS)} FROM dead_letters_in ORDER BY subject, stream_seq
ON CONFLICT (subject, stream_seq) DO NOTHING
"""


Event = RequestEvent | AttemptEvent | DeadLetterEvent


@dataclass
class Batch:
    requests: list[RequestEvent] = field(default_factory=list)
    attempts: list[AttemptEvent] = field(default_factory=list)
    dead_letters: list[DeadLetterEvent] = field(default_factory=list)

    @classmethod
    def of(cls, events: Iterable[Event]) -> Batch:
        batch = cls()
        for event in events:
            match event:
                case RequestEvent():
                    batch.requests.append(event)
                case AttemptEvent():
                    batch.attempts.append(event)
                case DeadLetterEvent():
                    batch.dead_letters.append(event)
                case _:
                    assert_never(event)
        return batch

    def __len__(self) -> int:
        return len(self.requests) + len(self.attempts) + len(self.dead_letters)


@dataclass(frozen=True)
class Origin:
    """Where an event was read: what its dead letter records if it cannot be stored."""

    subject: str
    stream_seq: int
    deliveries: int
    body_bytes: int
    at: float

    def dead_letter(self, reason: str, request_id: str | None = None) -> DeadLetterEvent:
        """A dead letter for the message; reason and key made storable, whatever they hold."""
        return DeadLetterEvent(
            subject=columns.clean(self.subject, KEY_MAX_CHARS), stream_seq=self.stream_seq,
            deliveries=self.deliveries, reason=columns.clean(reason, REASON_MAX_CHARS),
            request_id=None if request_id is None else columns.clean(request_id, KEY_MAX_CHARS),
            body_bytes=self.body_bytes, at=self.at,
        )


@dataclass(frozen=True)
class Entry:
    event: Event
    origin: Origin
    replaced: bool = False  # the event is the dead letter of an unreadable or impossible one

    def dead_letter(self, reason: str) -> DeadLetterEvent:
        return self.origin.dead_letter(reason, getattr(self.event, "request_id", None))


@dataclass(frozen=True)
class Refused:
    entry: Entry
    reason: str


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL (or the conversion of a value for it) refused the data, not the connection:
    no retry would help, splitting the batch will. Anything else is either the database being
    away (retried) or a bug (raised)."""
    return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError,
                            psycopg.errors.ProgramLimitExceeded, ValueError, OverflowError))


def is_connection_problem(exc: BaseException) -> bool:
    """Worth waiting for: the database is down, restarting, out of space, or rolled us back."""
    return (isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
            and not is_data_error(exc))


class LedgerWriter:
    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn
        self._staged = False

    async def write_isolating(self, entries: Sequence[Entry]) -> list[Refused]:
        """Commit every entry PostgreSQL accepts; return the ones it refuses, each with why.

        A refused batch is halved until the offending events stand alone: one bad event in n
        costs about 2·log2(n) transactions, and the good ones still commit.
        """
        if not entries:
            return []
        try:
            await self.write(Batch.of(e.event for e in entries))
            return []
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(entries) == 1:
                return [Refused(entries[0], f"refused by PostgreSQL: {first_line(exc)}")]
        middle = len(entries) // 2
        return [*await self.write_isolating(entries[:middle]),
                *await self.write_isolating(entries[middle:])]

    async def write(self, batch: Batch) -> None:
        if not self._staged:  # outside the batch's transaction: a rollback must not drop them
            await self._conn.execute(STAGING)
            self._staged = True
        async with self._conn.transaction(), self._conn.cursor() as cur:
            for table, names, rows, insert in (
                ("requests_in", REQUEST_COLUMNS, batch.requests, INSERT_REQUESTS),
                ("attempts_in", ATTEMPT_COLUMNS, batch.attempts, INSERT_ATTEMPTS),
                ("dead_letters_in", DEAD_LETTER_COLUMNS, batch.dead_letters,
                 INSERT_DEAD_LETTERS),
            ):
                if not rows:
                    continue
                async with cur.copy(f"COPY {table} ({_cols(names)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(_values(row, names))
                await cur.execute(insert)


def _values(event: Event, names: tuple[str, ...]) -> tuple:
    data = event.__dict__
    return tuple(
        datetime.fromtimestamp(data[c], UTC) if c in _TIMESTAMPS
        else data[columns.FIELD_OF.get(c, c)]
        for c in names
    )
