"""The online front door on a real NATS of its own (the suite's runs classifiers that would share
the chat subject's queue), with an intake that only notes what it is handed: a crowd of
messages is a burst only where something can be refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from faststream.nats import NatsBroker

from services.classifier.front_door import FrontDoor
from shared import outcomes, subjects
from shared.messages import Origin
from smart_router.embedded import EmbeddedNats
from tests.stage_helpers import stage_config


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNats.start(tmp_path_factory.mktemp("nats"))
    yield server.url
    server.stop()


class NotingIntake:
    """Hands nothing on: notes each request it would classify, then frees its slot."""

    def __init__(self) -> None:
        self.handed: list[bytes] = []

    async def hand_on(self, body: bytes, origin: Origin, trace_id: str) -> bool:
        self.handed.append(body)
        return False  # as if answered here: the front door frees the slot


async def front_door(nats_url: str, limit: int) -> tuple[FrontDoor, NatsBroker, NotingIntake]:
    config = stage_config()
    config = config.model_copy(update={
        "pipeline": config.pipeline.model_copy(update={"max_online_in_flight": limit})})
    broker, intake = NatsBroker(nats_url), NotingIntake()
    await broker.connect()
    door = FrontDoor(broker, config, intake)  # type: ignore[arg-type]
    await door.open()
    return door, broker, intake


async def test_without_a_bound_a_crowd_of_requests_is_no_burst(own_nats):
    door, broker, intake = await front_door(own_nats, limit=0)
    try:
        for i in range(500):  # one publish each, flushed together: a crowd at the front door
            await broker.connection.publish(subjects.CHAT, json.dumps({"prompt": f"{i}"}).encode())
        async with asyncio.timeout(10):
            while len(intake.handed) < 500:
                await asyncio.sleep(0.01)
    finally:
        await door.close()
        await broker.stop()

    # Nothing can be refused, so nothing was held back for refusals to go first.
    assert door.burst_seen == 0.0


async def test_with_a_bound_a_crowd_past_it_is_a_burst(own_nats):
    door, broker, intake = await front_door(own_nats, limit=20)
    try:
        for i in range(500):
            await broker.connection.publish(subjects.CHAT, json.dumps({"prompt": f"{i}"}).encode())
        async with asyncio.timeout(10):
            while not intake.handed:  # the admitted ones start once the burst is answered
                await asyncio.sleep(0.01)
    finally:
        await door.close()
        await broker.stop()

    assert door.burst_seen > 0.0


class UnrecordedIntake:
    """Answers each request, then cannot publish its ledger row (JetStream timed out)."""

    def __init__(self, nc) -> None:
        self.nc = nc

    async def hand_on(self, body: bytes, origin: Origin, trace_id: str) -> bool:
        await self.nc.publish(origin.reply_to, b'{"error": {"code": "invalid_request"}}')
        raise outcomes.NotRecorded("the error reply went, its ledger row did not")

    async def reject(self, body, origin, trace_id, received_at, error) -> None:
        await self.nc.publish(origin.reply_to, b'{"error": {"code": "internal_error"}}')


async def test_a_request_answered_whose_row_failed_is_not_answered_twice(own_nats):
    """Before, a refusal whose ledger row could not be published (a burst of 1 MiB requests
    timed JetStream out) was refused again as internal_error: two replies to one request."""
    broker = NatsBroker(own_nats)
    await broker.connect()
    door = FrontDoor(broker, stage_config(), UnrecordedIntake(broker.connection))  # type: ignore[arg-type]
    await door.open()
    try:
        inbox = broker.connection.new_inbox()
        replies = await broker.connection.subscribe(inbox)
        await broker.connection.publish(subjects.CHAT, b'{"prompt": ""}', reply=inbox)
        first = await replies.next_msg(timeout=5)
        with pytest.raises(TimeoutError):
            await replies.next_msg(timeout=1)
    finally:
        await door.close()
        await broker.stop()
    assert json.loads(first.data)["error"]["code"] == "invalid_request"
