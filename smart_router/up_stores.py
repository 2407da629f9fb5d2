"""Where `up`'s embedded NATS keeps its JetStream data: a store per mode.

With auth the streams live in the account of shared/nats_auth.py (ROUTER); open (--insecure),
in the server's default account ($G). One store for both would hide each mode's queued jobs and
results from the other without a word, and mix messages anyone could publish while NATS was open
into the work of checked identities. So auth mode keeps <data>/nats and open mode
<data>/nats-insecure, and at start `up` says what the other mode's store still holds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import NotFoundError

from shared import nats_auth, subjects

from . import client, embedded, up_auth

OPEN_ACCOUNT = "$G"
# Work queues: each message in them is work not done yet (a job, a hop, an event to bill).
QUEUES = (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM, subjects.EVENTS_STREAM,
          subjects.ADVISORIES_STREAM)


def store(data_dir: Path, insecure: bool) -> Path:
    return data_dir / ("nats-insecure" if insecure else "nats")


def adopt_earlier_open_store(data_dir: Path) -> Path | None:
    """An earlier `up --insecure` kept its streams in <data>/nats, in account $G: they move to
    the open mode's store (unless it has its own already), where --insecure finds them.
    Returns where they went, if they moved."""
    earlier = store(data_dir, False) / "jetstream" / OPEN_ACCOUNT
    moved = store(data_dir, True) / "jetstream" / OPEN_ACCOUNT
    if not earlier.is_dir() or moved.exists():
        return None
    moved.parent.mkdir(parents=True, exist_ok=True)
    earlier.rename(moved)
    return moved


@dataclass(frozen=True)
class Held:
    queued: int  # messages in the work queues
    results: int  # results callers may still read


async def held(store_dir: Path, config: Path | None = None,
               identity: Path | None = None) -> Held:
    """What a store holds, read from a nats-server of its own on a free port: `config` and
    `identity` (one allowed to read stream info) for the auth mode's store."""
    server = embedded.EmbeddedNats.start(store_dir, config=config)
    try:
        nc = await client.connect(up_auth.identity_settings(server.url, identity))
        try:
            js, counts = nc.jetstream(), {}
            for name in (*QUEUES, subjects.RESULTS_STREAM):
                with contextlib.suppress(NotFoundError):
                    counts[name] = (await js.stream_info(name)).state.messages
        finally:
            await nc.close()
    finally:
        server.stop()
    return Held(sum(counts.get(q, 0) for q in QUEUES), counts.get(subjects.RESULTS_STREAM, 0))


async def other_mode_notice(data_dir: Path, insecure: bool) -> str | None:
    """What to tell the user when the other mode's store holds jobs or results, which this
    mode does not see; None when it holds none (or there is none)."""
    other = store(data_dir, not insecure)
    if not (other / "jetstream").is_dir():
        return None
    if insecure:  # the auth mode's store: its server's config and the admin identity
        credentials = up_auth.folder(data_dir)
        config, identity = credentials / "nats.conf", credentials / f"{nats_auth.ADMIN}.env"
        if not (config.is_file() and identity.is_file()):
            return None  # no way to read it, nor to drain it
        found = await held(other, config, identity)
    else:
        found = await held(other)
    if not (found.queued or found.results):
        return None
    start = "without --insecure" if insecure else "with --insecure"
    return (f"The other NATS mode's store, {other}, holds {found.queued} queued message(s) "
            f"(jobs, pipeline hops, ledger events) and {found.results} result(s), which this "
            f"mode does not see: start `up` {start} to drain them and read those results.")
