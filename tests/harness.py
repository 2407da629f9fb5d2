"""Real servers and real service processes for the tests.

NATS and PostgreSQL come from NATS_URL / DATABASE_URL when set, else from the embedded servers
`smart-router up` uses, else from testcontainers where a Docker engine runs. The suite owns the
NATS server it is given: it deletes the router's streams at the start. PostgreSQL gets a fresh
database per session.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from smart_router import embedded

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("classifier", "dispatcher", "escalator", "ledger", "gateway")
TEST_CONFIG = ROOT / "tests" / "router-test.toml"


def nats_server(tmp: Path) -> tuple[str, object | None]:
    url = os.environ.get("NATS_URL")
    if url:
        if not embedded.nats_answers(url):
            raise RuntimeError(f"NATS_URL={url} does not answer")
        return url, None
    try:
        server = embedded.EmbeddedNats.start(tmp / "nats")
        return server.url, server
    except Exception:
        return _nats_container()


def postgres_server(tmp: Path) -> tuple[str, object | None]:
    url = os.environ.get("DATABASE_URL")
    if url:
        if not embedded.postgres_answers(url):
            raise RuntimeError(f"DATABASE_URL does not answer ({urlsplit(url).hostname})")
        return url, None
    try:
        server = embedded.EmbeddedPostgres.start(server_dir(tmp / "postgres"))
        return server.url(), server
    except Exception:
        return _postgres_container()


def server_dir(link: Path) -> Path:
    """A fresh folder for embedded server data, reached through the symlink `link`. As root the
    embedded PostgreSQL runs as another user, who must traverse every folder above its data,
    and each pytest session that starts makes /tmp/pytest-of-<user> private again (mode 700):
    so the data lives outside it, and is removed when the test run exits."""
    base = Path(tempfile.gettempdir()) / f"smart-router-tests-{os.getuid()}"
    base.mkdir(mode=0o711, exist_ok=True)
    real = Path(tempfile.mkdtemp(prefix=f"{link.name}-", dir=base))
    atexit.register(shutil.rmtree, real, ignore_errors=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real, target_is_directory=True)
    return link


def _nats_container() -> tuple[str, object]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222)
    container.start()
    wait_for_logs(container, "Server is ready")
    host, port = container.get_container_host_ip(), container.get_exposed_port(4222)
    return f"nats://{host}:{port}", container


def _postgres_container() -> tuple[str, object]:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver=None)
    container.start()
    return container.get_connection_url(), container


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server, so runs never see each other's rows."""
    name = f"router_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Processes:
    """The router's services (and the emulator) as real OS processes, killable one by one."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str] | None = None) -> None:
        argv = argv or [sys.executable, "-m", f"services.{name}"]
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=embedded.die_with_parent,
        )

    def kill(self, name: str) -> None:
        """kill -9: no shutdown hooks, no acks, exactly what a crash looks like."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def wait_for_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def emulator_env(base: str) -> dict[str, str]:
    """Point the real SDKs at the emulator through their own variables."""
    return {
        "OPENAI_BASE_URL": f"{base}/v1", "OPENAI_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "test-key",
        "GROQ_BASE_URL": base, "GROQ_API_KEY": "test-key",
    }


async def ask(nc, payload: dict | bytes, timeout: float = 30.0) -> dict:
    """One request on router.v1.chat, as any online caller makes it."""
    from shared import subjects

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg = await nc.request(subjects.CHAT, body, timeout=timeout)
    return json.loads(msg.data)


async def rows_when_ready(conn, query: str, params: tuple, at_least: int = 1,
                          wait_s: float = 10.0) -> list[tuple]:
    """The query's rows once the ledger has written at least `at_least` of them."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = await (await conn.execute(query, params)).fetchall()
        if len(rows) >= at_least or time.monotonic() > deadline:
            assert len(rows) >= at_least, f"{len(rows)} rows for {params}, wanted {at_least}"
            return rows
        await asyncio.sleep(0.1)


class ControlledPostgres:
    """A PostgreSQL of the test's own (embedded, in a temporary folder) that it can stop and
    start: what "the database is down" looks like to the ledger. Its URL stays the same."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = server_dir(data_dir)
        self.server: embedded.EmbeddedPostgres | None = None

    def start(self) -> str:
        self.server = embedded.EmbeddedPostgres.start(self.data_dir)
        return self.server.url()

    def stop(self) -> None:
        """Fast shutdown; nothing to do when it is not running."""
        if self.server is not None:
            self.server.stop()


def process_tree(pid: int) -> set[tuple[int, int]]:
    """pid's descendants as (pid, start time) pairs, which a reused pid cannot fake (Linux)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = set(), list(children.get(pid, []))
    while todo:
        child = todo.pop()
        identity = process_identity(child)
        if identity is not None:
            found.add(identity)
        todo.extend(children.get(child, []))
    return found


def process_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time) of a live process; None once it is gone or a zombie."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return pid, int(fields[19])
    return None


def alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {p for p in processes if process_identity(p[0]) == p}


def wait_all_gone(processes: set[tuple[int, int]], timeout_s: float = 30.0) -> set[int]:
    """The pids still alive after timeout_s: empty when all are gone."""
    deadline = time.monotonic() + timeout_s
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {pid for pid, _ in alive(processes)}


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


async def publish_ledger_events(nc, job: str, requests: int, *, seed: int = 7,
                                msg_id_suffix: str = "") -> tuple[int, int]:
    """A burst of synthetic request and attempt events through JetStream; returns how many
    request and attempt rows they should make."""
    import random

    from shared import subjects
    from shared.messages import RequestEvent
    from smart_router.bench.events import request_with_attempts

    js = nc.jetstream()
    rng = random.Random(seed)
    gate = asyncio.Semaphore(500)
    attempts = 0

    async def publish(event) -> None:
        if isinstance(event, RequestEvent):
            subject, msg_id = subjects.REQUEST_EVENTS, f"r.{event.request_id}"
        else:
            subject, msg_id = subjects.ATTEMPT_EVENTS, f"a.{event.request_id}.{event.n}"
        async with gate:
            await js.publish(subject, event.model_dump_json().encode(),
                             headers={subjects.MSG_ID: msg_id + msg_id_suffix})

    events = []
    for i in range(requests):
        batch = request_with_attempts(f"{job}-{i}", job, rng)
        attempts += len(batch) - 1
        events.extend(batch)
    await asyncio.gather(*(publish(e) for e in events))
    return requests, attempts
