"""The official Anthropic SDK against the emulator, unmodified but for its base URL."""

from __future__ import annotations

import anthropic
import pytest

SIMPLE = "What is the capital of France?"
COMPLEX = "Prove that the halting problem is undecidable."

# The SDK warns that this model retires on 2026-11-30; it is still the strong tier here.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5' is deprecated")


async def test_message_has_text_usage_and_marker(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    raw = await anthropic_client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        system="You are terse.",
        messages=[{"role": "user", "content": SIMPLE}],
    )
    message = await raw.parse()

    assert raw.headers["x-emulator"] == "smart-router"
    assert message.id.startswith("msg_01")
    assert message.model == "claude-sonnet-4-5"
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and "France" in block.text
    assert message.usage.output_tokens == len(block.text.split())
    assert message.usage.input_tokens >= (len("You are terse.") + len(SIMPLE)) // 4
    assert message.emulated is True
    assert message.model_extra == {
        "emulated": True,
        "emulator_verdict": "good",
        "emulator_difficulty": 1,
    }


async def test_content_blocks_and_system_prompt_count_as_input(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    bare = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": [{"type": "text", "text": SIMPLE}]}],
    )
    with_system = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        system=[{"type": "text", "text": "Answer like a geography teacher. " * 10}],
        messages=[{"role": "user", "content": [{"type": "text", "text": SIMPLE}]}],
    )

    assert with_system.usage.input_tokens > bare.usage.input_tokens + 50
    assert bare.content == with_system.content  # the answer depends on the user's question


async def test_max_tokens_stops_the_answer(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": COMPLEX}]
    )

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert message.model_extra is not None
    assert message.model_extra["emulator_verdict"] == "truncated"


async def test_raw_stream_sends_every_event_in_order(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    whole = await anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=[{"role": "user", "content": COMPLEX}]
    )
    stream = await anthropic_client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": COMPLEX}],
        stream=True,
    )
    events = [event async for event in stream]

    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert [anthropic.types.TextBlock(type="text", text=text)] == whole.content
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == whole.usage.output_tokens
    assert all(event.model_extra and event.model_extra["emulated"] for event in events)


async def test_stream_helper_keeps_the_marker_on_the_final_message(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    async with anthropic_client.messages.stream(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": SIMPLE}]
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()

    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.usage.output_tokens == len(text.split())
    assert final.model_extra is not None and final.model_extra["emulated"] is True


async def test_unknown_model_is_a_404(anthropic_client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client.messages.create(
            model="claude-opus-9", max_tokens=10, messages=[{"role": "user", "content": SIMPLE}]
        )

    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-opus-9"},
        "request_id": caught.value.body["request_id"],  # type: ignore[index]
    }


async def test_missing_max_tokens_is_a_400(anthropic_client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await anthropic_client.messages.create(
            model="claude-haiku-4-5",
            messages=[{"role": "user", "content": SIMPLE}],
            max_tokens=anthropic.omit,  # type: ignore[arg-type]
        )
