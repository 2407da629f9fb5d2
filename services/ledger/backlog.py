"""The ledger consumer's backlog, read from JetStream for the heartbeat: how many events wait,
how many were redelivered, and since when the oldest one not yet acked has been stored; and how
full the work streams are (health warns before they refuse work)."""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.health import HEARTBEAT_EVERY_S, LedgerProgress
from shared.topology import PushConsumer

log = structlog.get_logger(__name__)

WORK_STREAMS = (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM, subjects.EVENTS_STREAM)


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
    progress.streams_full = await _fills(js)
    progress.backlog_read_at = time.time()


async def _fills(js: JetStreamContext) -> dict[str, float]:
    """Bytes stored over max_bytes, per work stream that can be read (a stream another setup
    left out, or a server refusing the read, is left out rather than failing the backlog)."""
    fills = {}
    for stream in WORK_STREAMS:
        try:
            info = await js.stream_info(stream)
        except Exception as exc:
            log.debug("ledger.stream_unreadable", stream=stream, reason=type(exc).__name__)
            continue
        limit = info.config.max_bytes
        fills[stream] = round(info.state.bytes / limit, 3) if limit and limit > 0 else 0.0
    return fills


async def watch(js: JetStreamContext, consumer: PushConsumer, progress: LedgerProgress) -> None:
    """Runs for the service's life, once a heartbeat."""
    while True:
        try:
            await read(js, consumer, progress)
        except Exception as exc:  # health shows the last figures read, with their time
            log.warning("ledger.backlog_unreadable", reason=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(HEARTBEAT_EVERY_S)
