"""Writes a batch of ledger events in one transaction.

Rows are COPied into temporary tables, then inserted with ON CONFLICT DO NOTHING, so a redelivered
event is ignored by its unique key; only the rows that were really new are added to the daily
roll-ups, in the same statement, so the roll-ups can never count a request twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from shared.messages import AttemptEvent, DeadLetterEvent, RequestEvent

REQUEST_COLUMNS = (
    "request_id", "received_at", "finished_at", "tenant", "source", "job_id", "status",
    "error_code", "difficulty", "classifier_backend", "classifier_confidence", "start_tier",
    "tier", "model_used", "provider", "escalated", "attempts", "input_tokens", "output_tokens",
    "cost_usd", "baseline_cost_usd", "escalation_cost_usd", "latency_ms", "provider_latency_ms",
    "emulated", "prompt_sha256", "prompt_chars", "prompt_text",
)
ATTEMPT_COLUMNS = (
    "request_id", "attempt", "hop", "at", "tenant", "model", "provider", "tier", "outcome",
    "reason", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "emulated",
)
DEAD_LETTER_COLUMNS = (
    "subject", "stream_seq", "deliveries", "reason", "request_id", "body_bytes", "at",
)
_TIMESTAMPS = {"received_at", "finished_at", "at"}
_FIELD_OF = {"attempt": "n"}  # column -> event field, where the names differ

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
    ON CONFLICT (request_id) DO NOTHING
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
)
INSERT INTO daily_latency AS l (day, tier, bucket, count)
SELECT (finished_at AT TIME ZONE 'UTC')::date, coalesce(tier, ''),
       round(20 * ln(greatest(latency_ms, 0.1)))::smallint, count(*)
FROM new WHERE status = 'ok' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (day, tier, bucket) DO UPDATE SET count = l.count + excluded.count
"""

INSERT_ATTEMPTS = f"""
INSERT INTO attempts ({_cols(ATTEMPT_COLUMNS)}) SELECT {_cols(ATTEMPT_COLUMNS)} FROM attempts_in
ON CONFLICT (request_id, attempt) DO NOTHING
"""

INSERT_DEAD_LETTERS = f"""
INSERT INTO dead_letters ({_cols(DEAD_LETTER_COLUMNS)})
SELECT {_cols(DEAD_LETTER_COLUMNS)} FROM dead_letters_in
ON CONFLICT (subject, stream_seq) DO NOTHING
"""


@dataclass
class Batch:
    requests: list[RequestEvent] = field(default_factory=list)
    attempts: list[AttemptEvent] = field(default_factory=list)
    dead_letters: list[DeadLetterEvent] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requests) + len(self.attempts) + len(self.dead_letters)


class LedgerWriter:
    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn
        self._staged = False

    async def write(self, batch: Batch) -> None:
        async with self._conn.transaction(), self._conn.cursor() as cur:
            if not self._staged:
                await cur.execute(STAGING)
                self._staged = True
            for table, columns, rows, insert in (
                ("requests_in", REQUEST_COLUMNS, batch.requests, INSERT_REQUESTS),
                ("attempts_in", ATTEMPT_COLUMNS, batch.attempts, INSERT_ATTEMPTS),
                ("dead_letters_in", DEAD_LETTER_COLUMNS, batch.dead_letters,
                 INSERT_DEAD_LETTERS),
            ):
                if not rows:
                    continue
                async with cur.copy(f"COPY {table} ({_cols(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(_values(row, columns))
                await cur.execute(insert)


def _values(event, columns: tuple[str, ...]) -> tuple:
    data = event.__dict__
    return tuple(
        datetime.fromtimestamp(data[c], UTC) if c in _TIMESTAMPS else data[_FIELD_OF.get(c, c)]
        for c in columns
    )
