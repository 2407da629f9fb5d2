"""`smart-router bench`: one run of a mode against the running stack, as one report."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from shared.config import config, settings

from .. import client
from . import cpu, ledger, mix, pipeline
from .pipeline import PROMPTS


async def run(mode: str, requests: int, concurrency: int, rate: float | None,
              emulator: str | None, provider_latency_ms: float | None,
              unique: bool = True) -> dict:
    database_url = settings().database_url
    if mode == "ledger":
        return await ledger.run(settings(), database_url, requests)
    prompts = pipeline.Prompts.test_split(unique)
    if provider_latency_ms is not None:
        if emulator is None:
            raise ValueError("--provider-latency-ms needs --emulator URL")
        _emulator(emulator, "PUT", "scenario", {"latency_ms": provider_latency_ms})
    nc = await client.connect(settings())
    tenant = pipeline.new_tenant()
    try:
        meter = await cpu.Meter.find(nc, database_url, emulator)
        pipeline.say(f"{mode}: {requests} {'unique' if unique else 'repeating'} prompts, "
                     f"tenant {tenant}")
        meter.start()
        if mode == "online":
            runs = {"online": await pipeline.online(nc, prompts, requests, tenant,
                                                    concurrency=concurrency, rate=rate)}
        elif mode == "batch":
            runs = {"batch": await pipeline.batch(nc, prompts, requests, tenant)}
        elif mode == "mixed":
            half = requests // 2
            online, batch = await asyncio.gather(
                pipeline.online(nc, prompts, half, tenant, concurrency=concurrency, rate=rate),
                pipeline.batch(nc, prompts.fresh(), requests - half, tenant))
            runs = {"online": online, "batch": batch}
        else:
            raise ValueError(f"unknown mode {mode!r}: online, batch, mixed or ledger")
        last_answer = max(r["finished_at"] for r in runs.values())
        lag = await pipeline.ledger_lag(database_url, tenant, requests, last_answer)
        usage = meter.report(requests)  # once the ledger holds every row, so its work counts
    finally:
        await nc.close()
        if provider_latency_ms is not None and emulator is not None:
            _emulator(emulator, "POST", "reset", None)
    for r in runs.values():
        r.pop("finished_at")
    return {"mode": mode, "requests": requests, "unique_prompts": unique, "tenant": tenant,
            "concurrency": concurrency, "rate": rate, "provider_latency_ms": provider_latency_ms,
            **runs, "ledger": lag, "cpu": usage}


async def savings(shares: str, requests: int, concurrency: int, emulator: str | None) -> dict:
    """`bench --mix`: the savings report of the running stack (mix.py)."""
    wanted = mix.Mix.parse(shares)
    if emulator is None:
        raise ValueError("--mix needs --emulator URL (`up` prints it): quality is the verdict "
                         "of the emulator's market on each final answer")
    nc = await client.connect(settings())
    try:
        return await mix.run(nc, PROMPTS, wanted, requests, concurrency, emulator, config())
    finally:
        await nc.close()


def _emulator(base: str, method: str, path: str, body: dict | None) -> None:
    request = urllib.request.Request(
        f"{base.rstrip('/')}/_emulator/{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()
