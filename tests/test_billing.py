"""The events of calls already paid for are tried again in place while JetStream cannot take
them (here: the events stream is not there yet, as after a server lost its store), instead of
failing the hop at once: a redelivery without the hop record would call again and leave the
first calls without a ledger row. On a NATS server of the test's own, since the stream is
removed."""

from __future__ import annotations

import asyncio

import pytest
from faststream.nats import NatsBroker
from nats.js.errors import NoStreamResponseError

from shared import outcomes, subjects, topology
from smart_router import embedded
from tests.stage_helpers import attempt, envelope, stage_config


@pytest.fixture
async def broker(tmp_path):
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    connected = NatsBroker(server.url, apply_types=False)
    try:
        await connected.connect()
        yield connected
    finally:
        await connected.stop()
        server.stop()


async def _events_in(broker: NatsBroker) -> int:
    info = await broker.config.connection_state.stream.stream_info(subjects.EVENTS_STREAM)
    return info.state.messages


async def test_events_refused_for_a_while_are_recorded_once_the_stream_is_back(broker):
    config, request, paid = stage_config(), envelope(), [attempt(1), attempt(2)]
    recording = asyncio.create_task(outcomes.record_attempts(broker, request, paid))
    try:
        await asyncio.sleep(1.0)
        assert not recording.done()  # still trying, not failed

        await topology.declare(broker.config.connection_state.stream, config.pipeline,
                               config.ledger)
        await asyncio.wait_for(recording, timeout=10)
    finally:
        recording.cancel()

    assert await _events_in(broker) == len(paid)
    await outcomes.record_attempts(broker, request, paid)  # a replay's: deduplicated
    assert await _events_in(broker) == len(paid)


async def test_events_refused_past_the_patience_fail_the_hop(broker):
    with pytest.raises(NoStreamResponseError):
        await outcomes.record_attempts(broker, envelope(), [attempt(1)], patience_s=0.5)
