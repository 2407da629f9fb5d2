"""`smart-router bench --via http [--stream]`: the same online load through the HTTP gateway and
straight over NATS, in one run, so the gateway's own cost is the difference between the two.

Both paths get the same prompts (made new for each path by default: see pipeline.Prompts), rate and
concurrency, after a warm-up over NATS. With --rate both run at once, each at that rate, so whatever
else the machine does weighs on both alike; without, one after the other, each saturating the router
alone (the throughput comparison). The HTTP path posts the seed's /v1/chat body; with --stream it
asks /v1/chat/completions for server-sent events and also times the first content chunk (time to
first token). Reported: throughput, end-to-end p50/p95/p99, TTFT with --stream, and the gateway's
overhead (HTTP minus NATS, per percentile) with the share of NATS throughput the HTTP path keeps;
CPU per request and process for each path when they run one after the other, for both together when
they run at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp
from nats.aio.client import Client

from shared import subjects
from shared.config import settings

from .. import client
from . import cpu, pipeline

WARM_UP = 200


async def run(gateway: str | None, mode: str, requests: int, concurrency: int,
              rate: float | None, stream: bool, emulator: str | None = None,
              unique: bool = True) -> dict:
    if mode != "online":
        raise ValueError("--via http measures online requests: use --mode online")
    gateway = gateway or f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"
    prompts = pipeline.Prompts.test_split(unique)
    nc = await client.connect(settings())
    tenant = pipeline.new_tenant()
    try:
        meter = await cpu.Meter.find(nc, settings().database_url, emulator, via_gateway=True)
        runs = await compare(nc, gateway, prompts, requests, tenant, concurrency=concurrency,
                             rate=rate, stream=stream, meter=meter)
        last_answer = max(runs[path].pop("finished_at") for path in ("nats", "http"))
        lag = await pipeline.ledger_lag(settings().database_url, tenant, runs.pop("sent"),
                                        last_answer)
    finally:
        await nc.close()
    return {"mode": "online", "via": "http", "stream": stream, "requests": requests,
            "unique_prompts": unique, "concurrency": concurrency, "rate": rate,
            "gateway": gateway, **runs, "ledger": lag}


async def compare(nc: Client, gateway: str, prompts: pipeline.Prompts, count: int, tenant: str,
                  *, concurrency: int, rate: float | None, stream: bool,
                  meter: cpu.Meter) -> dict:
    """With a rate, both paths at that rate at once, so the machine's other load weighs on both
    alike (the latency comparison); without, one after the other, each saturating the router
    alone (the throughput comparison)."""
    pipeline.say(f"warm-up: {min(WARM_UP, count)} requests over NATS")
    await pipeline.online(nc, prompts, min(WARM_UP, count), tenant, concurrency=concurrency,
                          rate=None)
    async with _gateway_session(gateway, concurrency) as http:
        over_nats = Path("nats", _over_nats(nc, tenant), prompts.fresh())
        over_http = Path("http", _streamed(http, tenant) if stream else _plain(http, tenant),
                         prompts.fresh())
        if rate:
            pipeline.say(f"NATS and HTTP at once: {count} requests each at {rate:g}/s")
            meter.start()
            await asyncio.gather(*(p.load(count, concurrency, rate)
                                   for p in (over_nats, over_http)))
            usage = {"cpu": meter.report(2 * count)}
        else:
            usage = {}
            for path in (over_nats, over_http):
                pipeline.say(f"{path.name}: {count} requests, {concurrency} in flight")
                meter.start()
                await path.load(count, concurrency, rate)
                path.cpu = meter.report(count)
    reports = {p.name: p.report() for p in (over_nats, over_http)}
    return {**reports, "gateway_overhead": overhead(reports["nats"], reports["http"]),
            **usage, "sent": count * 2 + min(WARM_UP, count)}


def overhead(over_nats: dict, over_http: dict) -> dict:
    """What the HTTP hop adds: latency per percentile, and the throughput it keeps."""
    added = {p: round(over_http["latency_ms"][p] - over_nats["latency_ms"][p], 2)
             for p in over_nats["latency_ms"] if p in over_http["latency_ms"]}
    kept = (over_http["requests_per_s"] / over_nats["requests_per_s"]
            if over_http["requests_per_s"] and over_nats["requests_per_s"] else None)
    return {"added_latency_ms": added,
            "throughput_kept": round(kept, 3) if kept is not None else None}


Send = Callable[[str], Awaitable[dict]]


class Path:
    """One way into the router, its tally, and time to first token when it streams."""

    def __init__(self, name: str, send: Send, prompts: pipeline.Prompts) -> None:
        self.name, self._send, self._prompts = name, send, prompts
        self.tally = pipeline.Tally()
        self.first_tokens_ms: list[float] = []
        self.cpu: dict | None = None  # when it ran alone

    async def load(self, count: int, concurrency: int, rate: float | None) -> None:
        tally, gate, prompts = self.tally, asyncio.Semaphore(concurrency), self._prompts

        async def one(i: int) -> None:
            async with gate:
                sent = time.perf_counter()
                try:
                    reply = await self._send(prompts[i])
                except Exception as exc:
                    tally.errors[type(exc).__name__] = tally.errors.get(type(exc).__name__,
                                                                        0) + 1
                    return
                first = reply.pop("first_token_at", None)
                if first is not None:
                    self.first_tokens_ms.append((first - sent) * 1000)
                tally.record(reply, (time.perf_counter() - sent) * 1000)

        await pipeline.arrive(tally, count, rate, one)

    def report(self) -> dict:
        report = self.tally.report()
        if self.first_tokens_ms:  # streamed: the chunks carry no provider time
            report.pop("router_overhead_ms")
            report["time_to_first_token_ms"] = pipeline.percentiles(self.first_tokens_ms)
        if self.cpu is not None:
            report["cpu"] = self.cpu
        return report


def _gateway_session(gateway: str, concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        gateway, connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=pipeline.REPLY_TIMEOUT_S))


def _over_nats(nc: Client, tenant: str) -> Send:
    async def send(prompt: str) -> dict:
        body = json.dumps({"prompt": prompt, "tenant": tenant}).encode()
        msg = await nc.request(subjects.CHAT, body, timeout=pipeline.REPLY_TIMEOUT_S)
        return json.loads(msg.data)

    return send


def _plain(http: aiohttp.ClientSession, tenant: str) -> Send:
    async def send(prompt: str) -> dict:
        async with http.post("/v1/chat", json={"prompt": prompt, "tenant": tenant}) as response:
            return await response.json(content_type=None)

    return send


def _streamed(http: aiohttp.ClientSession, tenant: str) -> Send:
    """An SSE completion, as a reply the tally can read, with when its first text came. The
    provider time is not in the chunks, so the router's overhead is left out on this path."""

    async def send(prompt: str) -> dict:
        body = {"model": "auto", "stream": True, "tenant": tenant,
                "messages": [{"role": "user", "content": prompt}]}
        first = None
        async with http.post("/v1/chat/completions", json=body) as response:
            if response.status != 200:
                error = (await response.json(content_type=None))["error"]
                return {"error": {"code": error["code"]}}
            async for line in response.content:
                frame = parse_sse(line)
                if first is None and frame and frame.get("choices") and \
                        frame["choices"][0]["delta"].get("content"):
                    first = time.perf_counter()
        return {"attempts": [], "first_token_at": first}

    return send


def parse_sse(line: bytes) -> dict | None:
    """One `data:` line of the stream as JSON; None for [DONE] and blank lines."""
    if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
        return None
    return json.loads(line[6:])
