from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError

from shared import db, health, subjects
from smart_router import embedded
from tests import harness


@dataclass
class Servers:
    nats_url: str
    postgres_url: str


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("servers")
    nats_url, nats_handle = harness.nats_server(tmp)
    postgres_url, pg_handle = harness.postgres_server(tmp)
    yield Servers(nats_url, postgres_url)
    for handle in (nats_handle, pg_handle):
        with contextlib.suppress(Exception):
            handle.stop()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    url = harness.fresh_database(servers.postgres_url)
    db.migrate(url)
    yield url
    with contextlib.suppress(psycopg.Error):
        harness.drop_database(servers.postgres_url, url)


@pytest.fixture(scope="session")
def clean_nats(servers: Servers) -> str:
    """The suite owns its NATS: the router's streams and buckets start empty."""

    async def reset() -> None:
        nc = await nats.connect(servers.nats_url)
        js = nc.jetstream()
        for stream in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM, subjects.RESULTS_STREAM,
                       subjects.EVENTS_STREAM, subjects.ADVISORIES_STREAM,
                       f"KV_{subjects.HOPS_BUCKET}", f"KV_{subjects.REQUESTS_BUCKET}",
                       f"KV_{subjects.HEALTH_BUCKET}"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
        await nc.close()

    asyncio.run(reset())
    return servers.nats_url


@dataclass
class Emulator:
    base: str

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.base}/_emulator/{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"{}")


    def reset(self) -> None:
        self.control("POST", "reset")


    def faults(self, *rules: dict, **settings) -> None:
        """Replace the scenario's fault rules (the default market of models stays)."""
        self.control("PUT", "scenario", {"faults": list(rules), **settings})


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The provider emulator as its own process, shared by the whole session."""
    port = embedded.free_port()
    processes = harness.Processes(dict(os.environ), tmp_path_factory.mktemp("emulator"))
    processes.start("emulator", [sys.executable, "-m", "emulator", "--port", str(port)])
    harness.wait_for_http(f"http://127.0.0.1:{port}/_emulator/health")
    yield Emulator(f"http://127.0.0.1:{port}")
    processes.stop_all()


@pytest.fixture
def emulator(emulator_process: Emulator) -> Iterator[Emulator]:
    """The emulator, back to its default scenario after the test, whatever the test injected."""
    yield emulator_process
    emulator_process.reset()


@dataclass
class Stack:
    nats_url: str
    database_url: str
    emulator: Emulator
    processes: harness.Processes


@pytest.fixture(scope="session")
def stack(clean_nats: str, database_url: str, emulator_process: Emulator,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four services as real processes, their SDKs pointed at the emulator."""
    env = {**os.environ, "NATS_URL": clean_nats, "DATABASE_URL": database_url,
           "LOG_LEVEL": "INFO", "ROUTER_CONFIG": str(harness.TEST_CONFIG),
           "GATEWAY_PORT": "0",  # any free port: its heartbeat says which
           **harness.emulator_env(emulator_process.base)}
    processes = harness.Processes(env, tmp_path_factory.mktemp("logs"))
    for name in harness.SERVICES:
        processes.start(name)
    asyncio.run(_wait_until_up(clean_nats))
    yield Stack(clean_nats, database_url, emulator_process, processes)
    processes.stop_all()


async def _wait_until_up(nats_url: str, timeout_s: float = 60.0) -> None:
    nc = await nats.connect(nats_url)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(Exception):
                    kv = await nc.jetstream().key_value(subjects.HEALTH_BUCKET)
                    if (await health.snapshot(kv))["ok"]:
                        return
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.fixture
async def nc(servers: Servers) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(servers.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c
