"""At start-up a service waits for NATS and PostgreSQL that are still coming up, saying so, and
gives up at a deadline; credentials NATS refuses fail at once (no wait would fix them)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from nats.errors import Error as NatsError
from structlog.testing import capture_logs

from shared import db, runtime
from shared.config import Settings
from smart_router import embedded


def _waiting(logs: list[dict], event: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == event]


async def test_credentials_nats_refuses_fail_at_once(tmp_path):
    config = tmp_path / "nats.conf"
    config.write_text("authorization { user: svc, password: right }\n")
    server = embedded.EmbeddedNats.start(tmp_path / "data", config=config)
    port = server.url.rsplit(":", 1)[1]
    try:
        with capture_logs() as logs, pytest.raises(NatsError, match="Authorization Violation"):
            await runtime._connect_patiently(
                Settings(nats_url=f"nats://svc:wrong@127.0.0.1:{port}"))
    finally:
        server.stop()

    assert _waiting(logs, "nats.waiting") == []


async def test_a_nats_server_that_comes_up_late_is_waited_for(tmp_path):
    port = embedded.free_port()
    with capture_logs() as logs:
        connecting = asyncio.create_task(runtime._connect_patiently(
            Settings(nats_url=f"nats://svc:secret@127.0.0.1:{port}")))
        while not _waiting(logs, "nats.waiting"):  # noqa: ASYNC110 (waits for a log line)
            await asyncio.sleep(0.05)
        server = embedded.EmbeddedNats.start(tmp_path / "data", port=port)
        try:
            nc = await connecting
            assert nc.is_connected
            await nc.close()
        finally:
            server.stop()

    said = _waiting(logs, "nats.waiting")[0]
    assert "secret" not in said["nats"]  # the URL's password stays out of the log
    assert "Connect call failed" in said["reason"]  # the real cause, not nats-py's summary


async def test_no_nats_server_fails_after_the_deadline(monkeypatch):
    monkeypatch.setattr(runtime, "CONNECT_RETRY_S", 1.5)

    with capture_logs() as logs, pytest.raises(NatsError):
        await runtime._connect_patiently(
            Settings(nats_url=f"nats://127.0.0.1:{embedded.free_port()}"))

    assert _waiting(logs, "nats.waiting")


async def test_postgres_is_waited_for_until_the_deadline(servers):
    await db.wait_until_ready(servers.postgres_url)  # up: returns at once

    nowhere = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/postgres"
    with capture_logs() as logs, pytest.raises(psycopg.OperationalError):
        await db.wait_until_ready(nowhere, timeout_s=1.5)

    assert _waiting(logs, "postgres.waiting")
