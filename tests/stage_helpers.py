"""What the stage unit tests share: the test configuration and an envelope to hand a stage."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from faststream.nats import NatsBroker, TestNatsBroker

from services.ledger.stats_responder import StatsResponder
from shared import subjects
from shared.config import RouterConfig, load_config
from shared.messages import Attempt, ChatRequest, Classification, Envelope, Origin
from tests import harness


def stage_config(**limits: object) -> RouterConfig:
    """The test stack's configuration (the seed's three tiers), with `limits` changed."""
    config = load_config(harness.TEST_CONFIG)
    return config.model_copy(update={"limits": config.limits.model_copy(update=limits)})


def envelope(prompt: str = "What is the capital of France?", *, tier_index: int = 0,
             max_tier_index: int = 2, seconds_left: float = 30.0,
             attempts: list[Attempt] | None = None, **request: object) -> Envelope:
    now = time.time()
    return Envelope(
        request_id="r1", trace_id="t1", request=ChatRequest(prompt=prompt, **request),
        origin=Origin(kind="online"), received_at=now, deadline=now + seconds_left,
        classification=Classification(difficulty="simple", confidence=1.0, backend="test",
                                      latency_ms=0.0),
        start_tier="simple", tier_index=tier_index, max_tier_index=max_tier_index,
        attempts=attempts or [],
    )


def attempt(n: int, outcome: str = "ok", cost_usd: float = 0.001) -> Attempt:
    return Attempt(n=n, hop=n, model="gpt-4o-mini", provider="openai", tier="simple",
                   outcome=outcome, cost_usd=cost_usd)


@contextlib.asynccontextmanager
async def stats_responder(database_url: str
                          ) -> AsyncIterator[tuple[StatsResponder, TestNatsBroker]]:
    """The ledger's stats responder on that database, behind FastStream's in-memory broker: the
    responder and a client of the broker to ask it on router.v1.stats."""
    responder = StatsResponder(database_url, lambda: 1_048_576)
    broker = NatsBroker()
    broker.subscriber(subjects.STATS)(responder.on_stats)
    await responder.open()
    try:
        async with TestNatsBroker(broker) as client:
            yield responder, client
    finally:
        await responder.close()
