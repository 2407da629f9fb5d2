"""A budget is a ceiling: whatever the text (many tiny messages, emoji, CJK, a long conversation),
what a request is charged never exceeds its max_cost_usd, in the reply or in the ledger. Through
the real pipeline, on the emulator, which counts tokens from UTF-8 bytes as real tokenizers do
(four bytes a token, more for emoji and CJK, plus markup per message)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.harness import ask, rows_when_ready

TURN = ("Tell me more about how the Romans built their aqueducts, and why they lasted.",
        "They used gravity alone: a gentle, constant gradient over many kilometres, arches of "
        "cut stone and concrete to cross valleys, and a waterproof lining of opus signinum.")
PAYLOADS = {
    # Each message is a few tokens of markup around one byte: chars // 4 saw almost nothing.
    "one-character messages": [{"role": "user", "content": "a"}] * 1000,
    "emoji": [{"role": "user", "content": "😀" * 50_000}],
    "CJK": [{"role": "user", "content": "你好世界" * 7_500}],
    "a long conversation": [
        {"role": role, "content": text}
        for _ in range(150) for role, text in zip(("user", "assistant"), TURN, strict=True)
    ] + [{"role": "user", "content": "Summarise all of that in one line."}],
}
# From too small for any model to enough for the simple tier's second model on every payload.
BUDGETS_USD = (0.0005, 0.002, 0.01, 0.02, 0.05)
MAX_TOKENS = 64


async def charged(conn, request_id: str) -> float:
    [(cost,)] = await rows_when_ready(
        conn, "SELECT cost_usd FROM requests WHERE request_id = %s", (request_id,))
    return float(cost)


@pytest.mark.parametrize("payload", PAYLOADS, ids=list(PAYLOADS))
async def test_the_charged_cost_never_exceeds_max_cost_usd(stack, nc, conn, payload):
    answered, refused = [], []
    for budget in BUDGETS_USD:
        request_id = f"budget-{uuid.uuid4().hex[:12]}"
        body = {"messages": PAYLOADS[payload], "request_id": request_id, "tier": "simple",
                "max_tokens": MAX_TOKENS, "max_cost_usd": budget}
        reply = await ask(nc, json.dumps(body, ensure_ascii=False).encode())

        in_ledger = await charged(conn, request_id)
        assert in_ledger <= budget, (payload, budget, in_ledger)
        if "error" in reply:
            assert reply["error"]["code"] == "budget_exceeded", reply["error"]
            refused.append(budget)
            continue
        assert reply["cost_usd"] <= budget, (payload, budget, reply["attempts"])
        assert reply["cost_usd"] == pytest.approx(in_ledger, abs=1e-9)
        answered.append(budget)

    # Both sides of the check ran: some budgets were too small to call anything, some were not.
    assert refused and answered, (refused, answered)
    assert refused == sorted(refused) and max(refused) < min(answered)
