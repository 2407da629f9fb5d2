"""The crash-loop dead-letterer: a message whose every delivery ended without a settle (its
handler's process died each time) would sit in its work-queue stream for ever. JetStream's
max_deliver advisory names it: read it back, dead-letter it, so its caller hears why, and delete
it. It runs in the ledger's process, for every stage, because a stage in a crash loop cannot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from faststream.nats import NatsBroker, NatsMessage
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from shared import outcomes

log = structlog.get_logger(__name__)


class MaxDeliveriesAdvisory(BaseModel):
    """JetStream's io.nats.jetstream.advisory.v1.max_deliver: the fields used here."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class Exhausted:
    def __init__(self, broker: NatsBroker, jetstream: Callable[[], JetStreamContext], *,
                 store_prompt: bool, tiers: int) -> None:
        """`jetstream` gives the broker's JetStream context, which exists once it connects."""
        self.broker, self.jetstream = broker, jetstream
        self.store_prompt, self.tiers = store_prompt, tiers

    async def on_advisory(self, msg: NatsMessage) -> None:
        advisory = MaxDeliveriesAdvisory.model_validate_json(msg.body)
        try:
            stored = await self.jetstream().get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:
            return  # settled since, or already dead-lettered by an earlier delivery
        reason = (f"no delivery settled it: {advisory.deliveries} deliveries to "
                  f"{advisory.consumer}")
        log.error("message.dead_letter", subject=stored.subject, delivery=advisory.deliveries,
                  reason=reason)
        unsettled = outcomes.Unsettled(advisory.stream, stored.subject or "",
                                       advisory.stream_seq, advisory.deliveries,
                                       stored.data or b"", stored.time or datetime.now(UTC))
        await outcomes.dead_letter(self.broker, unsettled, reason, store_prompt=self.store_prompt,
                                   tiers=self.tiers)
        await self.jetstream().delete_msg(advisory.stream, advisory.stream_seq)
