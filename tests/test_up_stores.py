"""`up` keeps each NATS mode's JetStream data in a store of its own (smart_router/up_stores.py),
and says at start what the other mode's store still holds: filled here by a real nats-server in
each mode, as `up` would have left them, and read back by the notice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from shared import nats_auth, subjects, topology
from shared.config import load_config
from smart_router import embedded, up_auth, up_stores


async def fill(url: str, identity: Path | None, jobs: int, results: int) -> None:
    """Declare the topology (as setup, with auth) and leave `jobs` jobs and `results` results."""
    setup = identity.with_name(f"{nats_auth.SETUP}.env") if identity else None
    await topology.declare_as(up_auth.identity_settings(url, setup), load_config())
    given = nats_auth.read_env(identity) if identity else {}
    nc = await nats.connect(url, user=given.get("NATS_USER"),
                            password=given.get("NATS_PASSWORD"),
                            inbox_prefix=given.get("NATS_INBOX_PREFIX", "_INBOX"))
    try:
        js = nc.jetstream()
        for i in range(jobs):
            await js.publish(subjects.JOBS, b"{}", headers={"Nats-Msg-Id": f"job-{i}"})
        for i in range(results):
            await js.publish(f"{subjects.RESULTS_PREFIX}.default.job-{i}", b"{}")
    finally:
        await nc.close()


def left_open(store: Path, jobs: int, results: int = 0) -> None:
    server = embedded.EmbeddedNats.start(store)
    try:
        asyncio.run(fill(server.url, None, jobs, results))
    finally:
        server.stop()


def test_each_mode_has_its_own_store():
    data = Path("/data")

    assert up_stores.store(data, insecure=False) == data / "nats"
    assert up_stores.store(data, insecure=True) == data / "nats-insecure"


def test_auth_mode_is_told_of_the_open_stores_jobs_and_results(tmp_path):
    left_open(up_stores.store(tmp_path, insecure=True), jobs=2, results=1)

    notice = asyncio.run(up_stores.other_mode_notice(tmp_path, insecure=False))

    assert notice is not None
    assert str(tmp_path / "nats-insecure") in notice
    assert "2 queued message(s)" in notice and "1 result(s)" in notice
    assert "start `up` with --insecure to drain them" in notice


def test_open_mode_is_told_of_the_auth_stores_jobs_read_as_admin(tmp_path):
    files = nats_auth.write_identities(up_auth.folder(tmp_path), [nats_auth.DEMO_TENANT])
    server = embedded.EmbeddedNats.start(up_stores.store(tmp_path, insecure=False),
                                         config=up_auth.folder(tmp_path) / "nats.conf")
    try:
        asyncio.run(fill(server.url, files[nats_auth.ADMIN], jobs=3, results=0))
    finally:
        server.stop()

    notice = asyncio.run(up_stores.other_mode_notice(tmp_path, insecure=True))

    assert notice is not None and "3 queued message(s)" in notice and "0 result(s)" in notice
    assert "start `up` without --insecure" in notice


def test_no_notice_without_the_other_store_or_with_nothing_in_it(tmp_path):
    assert asyncio.run(up_stores.other_mode_notice(tmp_path, insecure=False)) is None

    left_open(up_stores.store(tmp_path, insecure=True), jobs=0)

    assert (tmp_path / "nats-insecure" / "jetstream").is_dir()
    assert asyncio.run(up_stores.other_mode_notice(tmp_path, insecure=False)) is None


def test_an_earlier_open_run_in_the_shared_store_moves_to_the_open_store(tmp_path):
    """Before the split, --insecure kept its streams in <data>/nats (account $G)."""
    left_open(tmp_path / "nats", jobs=1)

    moved = up_stores.adopt_earlier_open_store(tmp_path)

    assert moved == tmp_path / "nats-insecure" / "jetstream" / "$G"
    assert not (tmp_path / "nats" / "jetstream" / "$G").exists()
    notice = asyncio.run(up_stores.other_mode_notice(tmp_path, insecure=False))
    assert notice is not None and "1 queued message(s)" in notice
    assert up_stores.adopt_earlier_open_store(tmp_path) is None  # once
