from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import psycopg
import pytest
from aiohttp import web
from nats.js.errors import NotFoundError

from emulator import create_app as create_emulator
from emulator import load_scenario
from shared import db, health, subjects
from shared.providers import Providers
from smart_router import embedded
from tests import harness

# Every real server and process hangs off one of these fixtures...
REAL_SERVER_FIXTURES = frozenset({"servers", "emulator_process"})
# ...except in these modules, which start servers and processes of their own, or train and
# evaluate the learned router (tens of seconds of CPU).
SLOW_MODULES = frozenset({"test_up", "test_embedded", "test_nats_lost", "test_startup_wait",
                          "test_router_train", "test_router_eval"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-server tier is `slow`: a test that needs a server or a process is marked, so
    `pytest -m "not slow"` runs the unit tier alone, within a minute."""
    for item in items:
        if (REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.module.__name__.rpartition(".")[2] in SLOW_MODULES
                or item.get_closest_marker("browser") or item.get_closest_marker("faults")):
            item.add_marker(pytest.mark.slow)


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


@contextlib.contextmanager
def _migrated_database(servers: Servers) -> Iterator[str]:
    url = harness.fresh_database(servers.postgres_url)
    db.migrate(url)
    try:
        yield url
    finally:
        with contextlib.suppress(psycopg.Error):
            harness.drop_database(servers.postgres_url, url)


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    with _migrated_database(servers) as url:
        yield url


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


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    """Provider clients, closed at the test's end: an aiohttp session left open is reported as
    a leak when the process ends. Clients read the environment when first used, so a test (or
    an overriding fixture) sets the providers' addresses before its first call."""
    made = Providers()
    yield made
    await made.aclose()


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The provider emulator as its own process, shared by the whole session."""
    port = embedded.free_port()
    processes = harness.Processes(dict(os.environ), tmp_path_factory.mktemp("emulator"))
    processes.start("emulator", [sys.executable, "-m", "emulator", "--port", str(port)])
    harness.wait_for_http(f"http://127.0.0.1:{port}/_emulator/health")
    yield Emulator(f"http://127.0.0.1:{port}")
    processes.stop_all()


@pytest.fixture(scope="session")
def emulator_in_thread() -> Iterator[Emulator]:
    """The provider emulator in a thread of the test process: no process to start, so the
    tests that only call providers stay in the fast tier."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_emulator(load_scenario()), access_log=None,
                           handler_cancellation=True, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="emulator", daemon=True)
    thread.start()
    yield Emulator(f"http://{host}:{port}")
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The emulator, back to its default scenario after the test, whatever the test injected.
    Where the test's services use the emulator process (the stack's, or a module's own), that
    one; otherwise the one in a thread."""
    uses_process = "emulator_process" in request.fixturenames
    chosen = request.getfixturevalue("emulator_process" if uses_process else "emulator_in_thread")
    yield chosen
    chosen.reset()


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
    with _services(clean_nats, database_url, emulator_process, harness.TEST_CONFIG,
                   tmp_path_factory.mktemp("logs")) as running:
        yield running


@contextlib.contextmanager
def _services(nats_url: str, database_url: str, emulator: Emulator, config: Path,
              log_dir: Path) -> Iterator[Stack]:
    """Every service as a real process on these servers and this configuration, once their
    heartbeats say they are up; stopped after."""
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url,
           "LOG_LEVEL": "INFO", "ROUTER_CONFIG": str(config),
           "GATEWAY_PORT": "0",  # any free port: its heartbeat says which
           **harness.emulator_env(emulator.base)}
    processes = harness.Processes(env, log_dir)
    try:
        for name in harness.SERVICES:
            processes.start(name)
        asyncio.run(_wait_until_up(nats_url))
        yield Stack(nats_url, database_url, emulator, processes)
    finally:
        processes.stop_all()


@contextlib.contextmanager
def stack_of_its_own(tmp: Path, database_url: str, emulator: Emulator, *, limits: str = "",
                     pipeline: str = "", ack_wait_s: float = 8.0) -> Iterator[Stack]:
    """The services on a NATS of their own, with these lines added to the test configuration's
    [limits] and [pipeline]: the session's stack shares the suite's NATS, and its services
    would take the work too (a test of one dispatcher slot, say, would see a thousand)."""
    server = embedded.EmbeddedNats.start(tmp / "nats")
    config = tmp / "router.toml"
    config.write_text(harness.TEST_CONFIG.read_text()
                      .replace("[limits]\n", f"[limits]\n{limits}")
                      .replace("[pipeline]\n", f"[pipeline]\n{pipeline}")
                      .replace("ack_wait_s = 8.0\n", f"ack_wait_s = {ack_wait_s}\n"))
    try:
        with _services(server.url, database_url, emulator, config, tmp) as running:
            yield running
    finally:
        server.stop()


async def _wait_until_up(nats_url: str, timeout_s: float = 60.0) -> None:
    nc = await nats.connect(nats_url)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(Exception):
                    if (await health.snapshot(nc.jetstream()))["ok"]:
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
def ledger_url(servers: Servers) -> Iterator[str]:
    """A database of the test's own, migrated, dropped after it."""
    with _migrated_database(servers) as url:
        yield url


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection (autocommit) to that database."""
    async with await psycopg.AsyncConnection.connect(ledger_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c
