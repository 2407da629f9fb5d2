"""The online front door on a real NATS of its own (the suite's runs classifiers that would share
the chat subject's queue), with an intake that only notes what it is handed: a crowd of
messages is a burst only where something can be refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from faststream.nats import NatsBroker

from services.classifier.front_door import FrontDoor
from services.gateway.link import RouterLink
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


class HoldingIntake:
    """Hands every request on and keeps it: its slot stays taken (no done notice comes)."""

    def __init__(self, expected: int) -> None:
        self.handed: list[Origin] = []
        self.expected, self.all_handed = expected, asyncio.Event()

    async def hand_on(self, body: bytes, origin: Origin, trace_id: str) -> bool:
        self.handed.append(origin)
        if len(self.handed) >= self.expected:
            self.all_handed.set()
        return True


@contextlib.asynccontextmanager
async def opened_door(nats_url: str, intake: HoldingIntake, bound: int,
                      share: int) -> AsyncIterator[FrontDoor]:
    """A front door of `bound` online requests, `share` of one tenant's, handing on to
    `intake`: open, then closed with its broker."""
    config = stage_config()
    config = config.model_copy(update={"pipeline": config.pipeline.model_copy(update={
        "max_online_in_flight": bound, "max_online_in_flight_per_tenant": share})})
    broker = NatsBroker(nats_url)
    await broker.connect()
    door = FrontDoor(broker, config, intake)  # type: ignore[arg-type]
    await door.open()
    try:
        yield door
    finally:
        await door.close()
        await broker.stop()


async def test_one_tenants_burst_leaves_room_for_the_others(own_nats):
    """Before, admission was one pool: alice's burst filled it and bob was refused."""
    intake = HoldingIntake(expected=8)
    async with opened_door(own_nats, intake, bound=10, share=4) as door:
        nc = door.broker.connection
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        alice = {subjects.TENANT_HEADER: "alice"}  # as the gateway names an API key's tenant
        for i in range(6):
            await nc.publish(subjects.CHAT, json.dumps({"prompt": f"a{i}"}).encode(),
                             reply=inbox, headers=alice)
        # alice's own identity's subject counts toward the same share
        own_inbox = f"{subjects.inbox_prefix('alice')}.x"
        alice_replies = await nc.subscribe(own_inbox)
        await nc.publish(subjects.chat("alice"), b'{"prompt": "a6"}', reply=own_inbox)
        for i in range(3):
            await nc.publish(subjects.CHAT, json.dumps({"prompt": f"b{i}"}).encode(),
                             reply=inbox, headers={subjects.TENANT_HEADER: "bob"})
        await nc.publish(subjects.CHAT, b'{"prompt": "nobody"}', reply=inbox)
        refusals = [json.loads((await replies.next_msg(timeout=5)).data) for _ in range(2)]
        refusals.append(json.loads((await alice_replies.next_msg(timeout=5)).data))
        await asyncio.wait_for(intake.all_handed.wait(), timeout=10)
        await asyncio.sleep(0.3)  # nothing more is handed on

    assert len(intake.handed) == 8  # alice's 4, bob's 3, the one of no known tenant
    assert door.admission.held_by("alice") == 4 and door.admission.held_by("bob") == 3
    # Refusals past one tenant's share, with no crowd waiting, are no burst: the others'
    # requests were not held back for a lull (before: up to 0.2 s each, for a trickle).
    assert door.burst_seen == 0.0
    for refusal in refusals:
        assert refusal["error"]["code"] == "overloaded"
        assert "4 online requests of this tenant" in refusal["error"]["message"]


class KeepingIntake(HoldingIntake):
    """Holds every request's slot, and notes its trace id by prompt to free it later."""

    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self.trace_ids: dict[str, str] = {}

    async def hand_on(self, body: bytes, origin: Origin, trace_id: str) -> bool:
        self.trace_ids[json.loads(body)["prompt"]] = trace_id
        return await super().hand_on(body, origin, trace_id)


async def test_near_the_bound_a_slot_freed_goes_to_a_tenant_below_its_fair_share(own_nats):
    """Before, alice and bob held all 10 slots, and the slot alice freed went back to alice
    while carol was refused."""
    intake = KeepingIntake(expected=10)
    async with opened_door(own_nats, intake, bound=10, share=8) as door:
        nc = door.broker.connection
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)

        async def ask(tenant: str, prompt: str) -> None:
            await nc.publish(subjects.CHAT, json.dumps({"prompt": prompt}).encode(),
                             reply=inbox, headers={subjects.TENANT_HEADER: tenant})

        for i in range(8):
            await ask("alice", f"a{i}")
        for i in range(2):
            await ask("bob", f"b{i}")
        await asyncio.wait_for(intake.all_handed.wait(), timeout=10)
        await ask("carol", "c0")
        full = json.loads((await replies.next_msg(timeout=5)).data)
        await nc.publish(door.done_subject, intake.trace_ids["a0"].encode())  # alice's is done
        await nc.flush()
        await asyncio.sleep(0.2)
        await ask("alice", "a8")
        alices = json.loads((await replies.next_msg(timeout=5)).data)
        await ask("carol", "c1")
        await asyncio.sleep(0.3)

    assert "holds 10 online requests" in full["error"]["message"]
    assert alices["error"]["code"] == "overloaded"
    assert "holds 7 online requests of this tenant, at or above its fair share of 5" in (
        alices["error"]["message"])
    assert "c1" in intake.trace_ids and "a8" not in intake.trace_ids
    assert door.admission.held_by("carol") == 1


async def test_the_gateway_names_its_keys_tenant_for_the_admission_count(own_nats):
    nc = await nats.connect(own_nats)

    async def echo_headers(msg) -> None:
        await msg.respond(json.dumps(msg.headers).encode())

    await nc.subscribe(subjects.CHAT, cb=echo_headers)
    link = RouterLink(lambda: nc, request_timeout_s=5)
    try:
        asked, _ = await link.chat(b"{}", "alice")
        open_mode, _ = await link.chat(b"{}", None)
        stream = await link.stream(b"{}", "bob")
        streamed = await stream.next()
        stream.close(left=False)
    finally:
        await nc.drain()

    assert asked == {subjects.TENANT_HEADER: "alice"} and open_mode is None
    assert streamed == {subjects.TENANT_HEADER: "bob"}
