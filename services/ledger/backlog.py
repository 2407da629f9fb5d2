"""The ledger consumer's backlog, read from JetStream for the heartbeat: how many events wait,
how many were redelivered, and since when the oldest one not yet acked has been stored."""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.health import HEARTBEAT_EVERY_S, LedgerProgress
from shared.topology import PushConsumer

log = structlog.get_logger(__name__)


async def read(js: JetStreamContext, consumer: PushConsumer, progress: LedgerProgress) -> None:
    info = await js.consumer_info(consumer.stream, consumer.name)
    progress.pending = info.num_pending or 0
    progress.redelivered = info.num_redelivered or 0
    progress.ack_pending = info.num_ack_pending or 0
    progress.oldest_unacked_at = None
    if progress.pending or progress.ack_pending:
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        try:  # the first stored event after the ack floor: acked ones have left the work queue
            oldest = await js.get_msg(consumer.stream, seq=floor + 1,
                                      subject=consumer.filter_subject, next=True)
            progress.oldest_unacked_at = oldest.time.timestamp() if oldest.time else None
        except NotFoundError:
            pass  # acked since the consumer was read
    progress.backlog_read_at = time.time()


async def watch(js: JetStreamContext, consumer: PushConsumer, progress: LedgerProgress) -> None:
    """Runs for the service's life, once a heartbeat."""
    while True:
        try:
            await read(js, consumer, progress)
        except Exception as exc:  # health shows the last figures read, with their time
            log.warning("ledger.backlog_unreadable", reason=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(HEARTBEAT_EVERY_S)
