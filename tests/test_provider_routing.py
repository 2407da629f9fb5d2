"""Tiers and their providers through the whole pipeline: each tier answered by its provider's
official SDK, fallback inside a tier, escalation past a tier with no working model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import ask, rows_when_ready


@pytest.mark.parametrize(("tier", "provider", "model"), [
    ("simple", "anthropic", "claude-haiku-4-5"),
    ("medium", "groq", "llama-3.3-70b-versatile"),
    ("complex", "openai", "gpt-4o"),
])
def test_ask_with_a_pinned_tier_is_answered_by_that_tiers_provider(stack, tier, provider, model):
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.cli", "ask", "Name three primary colours.",
         "--tier", tier, "--json"],
        env={**os.environ, "NATS_URL": stack.nats_url}, capture_output=True, text=True,
        timeout=60,
    )
    reply = json.loads(done.stdout)

    assert done.returncode == 0, done.stderr
    assert (reply["tier"], reply["provider"], reply["model_used"]) == (tier, provider, model)
    assert reply["emulated"] is True and reply["cost_usd"] > 0


async def test_a_429_on_a_tiers_first_model_is_answered_by_the_next(stack, emulator, nc, conn):
    emulator.faults({"model": "claude-haiku-4-5", "action": "rate_limit", "times": 1})

    reply = await ask(nc, {"prompt": "What is 7 + 5?", "tier": "simple"})

    assert reply["model_used"] == "gpt-4o-mini" and reply["tier"] == "simple"
    assert [(a["model"], a["outcome"]) for a in reply["attempts"]] == [
        ("claude-haiku-4-5", "error"), ("gpt-4o-mini", "ok")]
    assert "rate_limited" in reply["attempts"][0]["reason"]
    rows = await _attempt_rows(conn, reply["request_id"], expected=2)
    assert [(r[0], r[1]) for r in rows] == [("claude-haiku-4-5", "error"), ("gpt-4o-mini", "ok")]


async def test_a_tier_with_no_working_model_escalates_with_provider_error(stack, emulator, nc):
    emulator.faults({"provider": "anthropic", "action": "server_error"},
                    {"model": "gpt-4o-mini", "action": "server_error"})

    reply = await ask(nc, {"prompt": "What is 7 + 5?", "tier": "simple"})

    assert reply["tier"] == "medium" and reply["provider"] == "groq"
    failed = [a for a in reply["attempts"] if a["tier"] == "simple"]
    assert failed and all(a["outcome"] == "error" and a["reason"].startswith("provider_error")
                          for a in failed)
    assert reply["escalated"] is False  # one tier answered


async def test_no_working_model_anywhere_is_an_error_reply_and_a_ledger_row(stack, emulator,
                                                                            nc, conn):
    emulator.faults({"action": "server_error"})

    reply = await ask(nc, {"prompt": "What is 7 + 5?", "tier": "complex"})

    assert reply["error"]["code"] == "no_provider_available"
    assert "gpt-4o" in reply["error"]["message"]
    rows = await _attempt_rows(conn, reply["request_id"], expected=4)
    assert all(r[1] == "error" for r in rows)


async def _attempt_rows(conn, request_id: str, expected: int) -> list[tuple]:
    return await rows_when_ready(
        conn, "SELECT model, outcome FROM attempts WHERE request_id = %s ORDER BY attempt",
        (request_id,), at_least=expected)
