"""The ledger's column types (shared/migrations/) and the checks that keep an event
PostgreSQL would refuse, or should never bill, out of a COPY.

Events are validated by their models, but a model only knows Python types: a forged or buggy
event can carry NUL in a text field, an attempt count over smallint, a cost of 1e12 or NaN (which
numeric would store, poisoning every sum). Such an event becomes a dead letter with a precise
reason before it reaches PostgreSQL; the writer's bisection is the second line of defence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

# Text that is part of an index key: a btree entry must fit in 2,704 bytes, and the roll-ups'
# key holds four such texts.
KEY_TEXT_MAX_BYTES = 512
MONEY_LIMIT = 1e10  # numeric(20, 10): 20 digits, 10 after the point
REAL_LIMIT = 3.4028234e38
LATEST_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the end of Python's datetime
INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class Column:
    """A column as information_schema.columns names its type; `key`: indexed text."""

    type: str
    key: bool = False


TEXT, KEY = Column("text"), Column("text", key=True)
SMALLINT, INTEGER, BIGINT = Column("smallint"), Column("integer"), Column("bigint")
MONEY, REAL = Column("numeric"), Column("real")
BOOLEAN, TIMESTAMP = Column("boolean"), Column("timestamp with time zone")
BYTEA = Column("bytea")  # bounded by its model (messages.Features)

REQUESTS = {
    "trace_id": KEY, "request_id": KEY, "received_at": TIMESTAMP, "finished_at": TIMESTAMP,
    "tenant": KEY,
    "source": TEXT, "job_id": KEY, "status": KEY, "error_code": TEXT, "difficulty": TEXT,
    "classifier_backend": TEXT, "classifier_confidence": REAL, "start_tier": TEXT, "tier": KEY,
    "model_used": KEY, "provider": TEXT, "escalated": BOOLEAN, "attempts": SMALLINT,
    "input_tokens": INTEGER, "output_tokens": INTEGER, "cost_usd": MONEY,
    "baseline_cost_usd": MONEY, "escalation_cost_usd": MONEY, "latency_ms": REAL,
    "provider_latency_ms": REAL, "emulated": BOOLEAN, "prompt_sha256": TEXT,
    "prompt_chars": INTEGER, "prompt_text": TEXT, "ttft_ms": REAL, "features": BYTEA,
    "feature_set": TEXT,
}
ATTEMPTS = {
    "call_id": KEY, "trace_id": KEY, "request_id": KEY, "attempt": SMALLINT, "hop": SMALLINT,
    "at": TIMESTAMP, "tenant": TEXT,
    "model": KEY, "provider": TEXT, "tier": TEXT, "outcome": TEXT, "reason": TEXT,
    "input_tokens": INTEGER, "output_tokens": INTEGER, "cost_usd": MONEY, "latency_ms": REAL,
    "emulated": BOOLEAN,
}
DEAD_LETTERS = {
    "subject": KEY, "stream_seq": BIGINT, "deliveries": INTEGER, "reason": TEXT,
    "request_id": TEXT, "body_bytes": INTEGER, "at": TIMESTAMP,
}
FIELD_OF = {"attempt": "n"}  # column -> event field, where the names differ


def problems(table: str, columns: dict[str, Column], event: BaseModel) -> list[str]:
    """Why `event` cannot become a row of `table`, one phrase per bad column (none if it can).
    Text values are never quoted: they may be a prompt."""
    found = []
    for name, column in columns.items():
        value = getattr(event, FIELD_OF.get(name, name))
        if value is not None and (why := _problem(column, value)):
            found.append(f"{table}.{name} {why}")
    return found


def _problem(column: Column, value: Any) -> str | None:
    if column.type == "text":
        return _text_problem(value, column.key)
    if column.type in ("boolean", "bytea"):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value}, not a finite number"
    if value < 0:
        return f"is negative ({value}); the ledger holds counts, amounts, durations and times"
    if column.type in INTEGER_RANGES:
        low, high = INTEGER_RANGES[column.type]
        return None if low <= value <= high else f"= {value} is outside {column.type}"
    limit = {"numeric": MONEY_LIMIT, "real": REAL_LIMIT,
             "timestamp with time zone": LATEST_TIMESTAMP}[column.type]
    return None if value < limit else f"= {value:g} is not below {limit:g} ({column.type})"


def _text_problem(value: str, key: bool) -> str | None:
    if "\x00" in value:
        return "contains NUL (0x00), which PostgreSQL text cannot hold"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    if key and size > KEY_TEXT_MAX_BYTES:
        return f"is {size:,} bytes, over the {KEY_TEXT_MAX_BYTES} an indexed text may hold"
    return None


def clean(text: str, limit: int) -> str:
    """`text` made storable (NUL and other control characters escaped, lone surrogates
    escaped) and cut to `limit` characters: for reasons and keys the ledger writes itself."""
    escaped = text.encode("utf-8", "backslashreplace").decode()
    printable = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in escaped)
    return printable[:limit]
