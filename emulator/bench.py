"""Throughput and latency of the emulator: `python -m emulator.bench [--url URL]`.

Without --url it starts `python -m emulator` on a free port, pinned to one CPU, and pins itself
to another, so the figures are the server's on one core. Two cases:
  1. zero latency, keep-alive connections, as many requests per second as it will take;
  2. 1 s latency, 1,000 requests in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp

PROMPTS = [
    "What is the capital of France?",
    "Explain how TCP congestion control works.",
    "Design a distributed rate limiter and discuss the trade-offs.",
    "¿Cuál es la diferencia entre un proceso y un hilo?",
    "Écris une fonction qui inverse une chaîne.",
    "Beweise, dass es unendlich viele Primzahlen gibt.",
    "请解释分布式系统中的共识算法",
    "Напиши письмо коллеге про перенос встречи.",
]


def request_body(index: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "max_completion_tokens": 512,
    }


async def run_load(
    http: aiohttp.ClientSession, url: str, total: int, concurrency: int
) -> tuple[float, list[float]]:
    """Send `total` requests from `concurrency` workers; wall time and each request's latency."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            async with http.post(f"{url}/v1/chat/completions", json=request_body(index)) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


@asynccontextmanager
async def keep_alive_client(connections: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:
        yield http


async def set_latency(url: str, latency_ms: float) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/_emulator/scenario", json={"latency_ms": latency_ms}) as r:
            r.raise_for_status()


def report(name: str, wall: float, latencies: list[float]) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name}: {len(latencies)} requests in {wall:.2f} s = {len(latencies) / wall:,.0f} req/s, "
        f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms",
        flush=True,
    )


async def bench(url: str, requests: int, connections: int, in_flight: int) -> None:
    await set_latency(url, 0)
    async with keep_alive_client(connections) as http:
        await run_load(http, url, 2_000, connections)  # open connections, warm the caches
        wall, latencies = await run_load(http, url, requests, connections)
        report(f"zero latency, {connections} keep-alive connections", wall, latencies)
    await set_latency(url, 1_000)
    async with keep_alive_client(in_flight) as http:
        wall, latencies = await run_load(http, url, in_flight, in_flight)
        report(f"1 s latency, {in_flight} in flight, new connections", wall, latencies)
        wall, latencies = await run_load(http, url, in_flight, in_flight)
        report(f"1 s latency, {in_flight} in flight, kept-alive connections", wall, latencies)
    await set_latency(url, 0)


@contextmanager
def emulator_process() -> Iterator[str]:
    """A fresh emulator on CPU 0 (when there are two), this process on CPU 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(port)])
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(process.pid, {0})
        os.sched_setaffinity(0, {1})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_healthy(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_emulator/health", timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the emulator at {url} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator.bench", description=__doc__)
    parser.add_argument("--url", help="a running emulator (default: start one)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--in-flight", type=int, default=1_000)
    args = parser.parse_args()
    if args.url:
        asyncio.run(bench(args.url, args.requests, args.connections, args.in_flight))
        return
    with emulator_process() as url:
        asyncio.run(bench(url, args.requests, args.connections, args.in_flight))


if __name__ == "__main__":
    main()
