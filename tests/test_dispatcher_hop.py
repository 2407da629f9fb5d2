"""One dispatcher hop in-process: the tier's call through the real SDKs against the emulator in
a thread, and an answer over the byte limit cut with its attempt saying so. No broker."""

from __future__ import annotations

import asyncio
import json

import pytest
from faststream.nats import NatsBroker

from services.dispatcher.streaming import Cancels
from services.dispatcher.worker import Dispatcher, all_settled, bounded
from tests import harness
from tests.stage_helpers import envelope, stage_config


@pytest.fixture
def dispatcher(providers, emulator, monkeypatch) -> Dispatcher:
    for name, value in harness.emulator_env(emulator.base).items():
        monkeypatch.setenv(name, value)
    return Dispatcher(NatsBroker(), stage_config(), providers)


async def test_a_hop_calls_its_tier_and_keeps_what_a_replay_needs(dispatcher):
    result = await dispatcher.call(envelope())

    simple = dispatcher.cfg.tiers[0]
    assert result.answer is not None and result.answer.text
    assert [a.model for a in result.attempts] == [simple.models[0].model]
    assert result.attempts[0].outcome == "ok" and result.attempts[0].cost_usd > 0
    assert result.ttft_ms is None and not result.cancelled


async def test_a_pinned_model_is_the_only_one_called(dispatcher, emulator):
    second = dispatcher.cfg.tiers[0].models[1]
    emulator.faults({"model": second.model, "action": "server_error"})

    result = await dispatcher.call(envelope(model=second.model))

    # It alone is tried, each round, even though the tier's first model would have answered.
    assert {a.model for a in result.attempts} == {second.model}
    assert result.answer is None


async def test_an_answer_over_the_limit_is_cut_and_its_attempt_says_so(dispatcher):
    result = await dispatcher.call(envelope("Write a long essay on the history of Rome."))
    answer_bytes = len(json.dumps(result.answer.text, ensure_ascii=False).encode())
    limit = answer_bytes // 3

    cut = bounded(result, limit)

    assert len(json.dumps(cut.answer.text, ensure_ascii=False).encode()) <= limit
    assert result.answer.text.startswith(cut.answer.text)
    served = next(a for a in cut.attempts if a.n == cut.answer.attempt)
    assert served.reason == f"answer cut to {limit} bytes (limits.max_answer_bytes)"
    assert bounded(result, answer_bytes) == result  # at the limit: untouched


async def test_a_failed_write_is_raised_only_once_every_write_has_settled():
    """The hop record and the attempt events are written at once. Were a failed event publish
    raised at once, the message could come back before the record is in and pay again."""
    settled: list[str] = []

    async def record() -> None:
        await asyncio.sleep(0.2)
        settled.append("record")

    async def bill() -> None:
        raise TimeoutError("no receipt from the events stream")

    with pytest.raises(TimeoutError):
        await all_settled(record(), bill())
    assert settled == ["record"]


async def test_cancels_are_remembered_for_a_hop_yet_to_begin_and_a_flood_stays_bounded():
    cancels = Cancels(ttl_s=60, maxsize=2)
    waiting = cancels.watch("_INBOX.b")
    for reply_to in ("_INBOX.a", "_INBOX.b", "_INBOX.c"):
        cancels.heard(reply_to)

    assert waiting.is_set()  # a hop under way hears it at once
    assert cancels.watch("_INBOX.c").is_set()  # a hop that begins later, too
    assert not cancels.watch("_INBOX.a").is_set()  # the oldest went, past maxsize
