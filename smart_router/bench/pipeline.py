"""Load through the whole running stack: online request-reply, batch jobs, or both at once.

Reports throughput, end-to-end latency percentiles, the router's own overhead (end to end minus
the time spent in provider calls, from each reply's attempts) and the ledger's lag (how long
after the last answer the ledger held every request). Each run tags its requests with a tenant
of its own, so its ledger rows can be counted through the tenant index.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from nats.aio.client import Client

from shared import db, subjects

from ..client import results

REPLY_TIMEOUT_S = 120.0
LEDGER_WAIT_S = 120.0
_AS_WHITESPACE = str.maketrans("01", " \t")
PROMPTS = Path(__file__).resolve().parents[2] / "services/classifier/data/test.jsonl"


class Prompts:
    """The classifier's test split, cycled. With `unique`, every request's prompt is one no run
    sent before: a tag of the run and the request's number follows it as trailing whitespace.
    The classifier's features and e5 excerpt strip that, so a tagged prompt costs what its
    original costs uncached, while its cache (keyed by a digest of the text, as is the ledger's
    prompt_sha256) misses. A visible tag would change the work measured: on the test split a
    "(ref <run>-<n>)" suffix sent 42% of prompts to e5 instead of 36%."""

    def __init__(self, texts: list[str], unique: bool) -> None:
        self._texts, self.unique = texts, unique
        self._run = random.getrandbits(32)

    @classmethod
    def test_split(cls, unique: bool) -> Prompts:
        return cls([json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()],
                   unique)

    def fresh(self) -> Prompts:
        """The same texts under another run tag: for a second load in the same run."""
        return Prompts(self._texts, self.unique)

    def __getitem__(self, i: int) -> str:
        text = self._texts[i % len(self._texts)]
        if not self.unique:
            return text
        return f"{text}\n{format(self._run << 24 | i, 'b').translate(_AS_WHITESPACE)}"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    # How long an `overloaded` refusal took: admission control must answer at once.
    refused_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    def record(self, reply: dict, elapsed_ms: float) -> None:
        if "error" in reply:
            code = reply["error"]["code"]
            self.errors[code] = self.errors.get(code, 0) + 1
            if code == "overloaded":
                self.refused_ms.append(elapsed_ms)
            return
        self.latencies_ms.append(elapsed_ms)
        provider_ms = sum(a["latency_ms"] for a in reply["attempts"])
        self.overheads_ms.append(max(elapsed_ms - provider_ms, 0.0))

    def report(self) -> dict:
        answered = len(self.latencies_ms)
        seconds = self.finished - self.started
        return {
            "answered": answered,
            "errors": self.errors,
            "seconds": round(seconds, 2),
            "requests_per_s": round(answered / seconds, 1) if seconds else None,
            "latency_ms": percentiles(self.latencies_ms),
            "router_overhead_ms": percentiles(self.overheads_ms),
            "overloaded_reply_ms": percentiles(self.refused_ms),
            "finished_at": self.finished,
        }


async def online(nc: Client, prompts: Prompts, count: int, tenant: str, *,
                 concurrency: int, rate: float | None) -> dict:
    """`count` requests on router.v1.chat: `concurrency` callers back to back, or, with
    `rate`, arrivals at that many per second (at most `concurrency` in flight)."""
    tally, gate = Tally(), asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        body = json.dumps({"prompt": prompts[i], "tenant": tenant}).encode()
        async with gate:
            sent = time.perf_counter()
            try:
                msg = await nc.request(subjects.CHAT, body, timeout=REPLY_TIMEOUT_S)
            except Exception as exc:
                tally.errors[type(exc).__name__] = tally.errors.get(type(exc).__name__, 0) + 1
                return
            tally.record(json.loads(msg.data), (time.perf_counter() - sent) * 1000)

    await arrive(tally, count, rate, one)
    return tally.report()


async def arrive(tally: Tally, count: int, rate: float | None,
                 one: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start `one(i)` for each request, back to back or at `rate` a second, timing the run."""
    tally.started = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        if rate:
            await asyncio.sleep(max(0.0, tally.started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    tally.finished = time.perf_counter()


async def batch(nc: Client, prompts: Prompts, count: int, tenant: str) -> dict:
    """`count` jobs on router.v1.jobs, timed until the last result is in."""
    js, tally = nc.jetstream(), Tally()
    job = f"bench-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(500)
    sent_at: dict[str, float] = {}

    async def publish(i: int) -> None:
        request_id = f"{job}-{i}"
        body = json.dumps({"prompt": prompts[i], "tenant": tenant,
                           "job_id": job, "request_id": request_id}).encode()
        async with gate:
            sent_at[request_id] = time.perf_counter()
            await js.publish(subjects.JOBS, body, headers={subjects.MSG_ID: request_id})

    tally.started = time.perf_counter()
    publishing = asyncio.gather(*(publish(i) for i in range(count)))
    expected = {f"{job}-{i}" for i in range(count)}
    async with asyncio.timeout(REPLY_TIMEOUT_S + count / 50):
        async for result in results(nc, job, expect=expected):
            received = time.perf_counter()
            tally.record(result, (received - sent_at[result["request_id"]]) * 1000)
    await publishing
    tally.finished = time.perf_counter()
    return tally.report()


async def ledger_lag(database_url: str, tenant: str, expected: int, since: float) -> dict:
    """Seconds from `since` (the last answer) until the ledger holds every request."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        deadline = time.perf_counter() + LEDGER_WAIT_S
        while True:
            cur = await conn.execute("SELECT count(*) FROM requests WHERE tenant = %s",
                                     (tenant,))
            rows = (await db.one_row(cur))[0]
            if rows >= expected or time.perf_counter() > deadline:
                return {"rows": rows, "expected": expected,
                        "caught_up_after_s": round(max(time.perf_counter() - since, 0), 2)
                        if rows >= expected else None}
            await asyncio.sleep(0.05)


def new_tenant() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    data = np.array(values)
    return {f"p{p}": round(float(np.percentile(data, p)), 2) for p in (50, 95, 99)}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
