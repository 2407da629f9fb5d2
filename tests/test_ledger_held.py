"""While PostgreSQL is down, every event the ledger holds (being written, in a closed batch
waiting for a writer, or in the batch still filling) is reported in progress, so JetStream
sends none of them again: before, only the batches being written were, and the others came back
after every ack wait, piling up copies in the client. On a NATS server of the test's own, with
a one-second ack wait, and a database address where nothing listens."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import ConsumerConfig

from services.ledger.batch_writer import BatchWriter
from services.ledger.batcher import Batcher
from shared import subjects
from shared.health import Counters, LedgerProgress
from smart_router import embedded
from tests import harness

ACK_WAIT_S, EVENTS, BATCH = 1.0, 40, 5


@pytest.fixture
async def nc(tmp_path):
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    client = await nats.connect(server.url)
    try:
        await client.jetstream().add_stream(name="HELD", subjects=[f"{subjects.EVENTS_PREFIX}.>"])
        yield client
    finally:
        await client.close()
        server.stop()


async def test_no_event_held_is_sent_again_while_the_database_is_down(nc):
    js = nc.jetstream()
    batcher = Batcher(BATCH, max_wait_s=0.2)
    down = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/none"
    writer = BatchWriter(down, LedgerProgress(stuck_after_s=30, writers=[]), Counters())
    sub = await js.subscribe(f"{subjects.EVENTS_PREFIX}.>", durable="held",
                             stream="HELD", cb=batcher.add, manual_ack=True,
                             config=ConsumerConfig(ack_wait=ACK_WAIT_S, max_ack_pending=EVENTS))
    work = [asyncio.create_task(writer.run(batcher)),
            asyncio.create_task(batcher.close_late_batches()),
            asyncio.create_task(batcher.keep_held_alive(ACK_WAIT_S / 3,
                                                        lambda: nc.is_connected))]
    try:
        await harness.publish_ledger_events(nc, "held", EVENTS // 4)
        await asyncio.sleep(6 * ACK_WAIT_S)

        info = await js.consumer_info("HELD", "held")
        assert info.num_ack_pending > 0  # held, none written
        assert info.num_redelivered == 0
        assert sub.pending_msgs == 0
    finally:
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        await writer.close()
        await sub.unsubscribe()
