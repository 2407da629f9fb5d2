"""What every classifier backend returns, and the bounded view of a prompt they judge."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Difficulty

# The question is usually at the start or the end; a pasted document in between does not change
# the work the answer needs. Judging a bounded excerpt keeps a 200,000-character prompt cheap.
HEAD_CHARS = 1500
TAIL_CHARS = 1500


@dataclass(frozen=True, slots=True)
class Verdict:
    difficulty: Difficulty
    confidence: float
    backend: str
    latency_ms: float = 0.0
    # With a router model configured: the learned score and the routing row it starts at.
    strong_score: float | None = None
    routed_as: Difficulty | None = None


def excerpt(text: str) -> str:
    text = text.strip()
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return f"{text[:HEAD_CHARS]}\n…\n{text[-TAIL_CHARS:]}"
