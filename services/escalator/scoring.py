"""How confident an answer looks. Each signal that fires caps the score; the lowest cap wins,
and the names of the fired signals become the attempt's reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.config import EscalationConfig
from shared.messages import Answer

_REFUSAL = re.compile(
    r"\b(I can(no|')t (help|assist|answer)|I('m| am) (not able|unable) to|"
    r"as an AI( language model)?, I)\b",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(I'?m not (entirely |completely |quite )?(sure|certain)|I'm unsure|"
    r"I (think|believe|guess) (it )?(might|may|could)|might be|may be wrong|"
    r"(you )?(may|might) want to (verify|double-check|check)|not (100%|fully) sure|"
    r"I don'?t (really )?know)\b",
    re.IGNORECASE,
)
LOW_LOGPROB = -1.0

# The score each signal caps an answer at.
CAPS = {"truncation": 0.0, "empty": 0.0, "refusal": 0.1, "hedging": 0.3, "logprob": 0.3}


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    signals: list[str]

    def weak(self, threshold: float) -> bool:
        return self.value < threshold


class Scorer:
    def __init__(self, config: EscalationConfig) -> None:
        self._enabled = set(config.signals)

    def score(self, answer: Answer) -> Score:
        fired = [name for name, test in self._tests(answer) if name in self._enabled and test()]
        return Score(min((CAPS[name] for name in fired), default=1.0), fired)

    @staticmethod
    def _tests(answer: Answer):
        text = answer.text
        return (
            ("truncation", lambda: answer.finish_reason == "length"),
            ("empty", lambda: not text.strip()),
            ("refusal", lambda: answer.finish_reason == "refusal" or bool(_REFUSAL.search(text))),
            ("hedging", lambda: bool(_HEDGE.search(text))),
            ("logprob", lambda: answer.logprob_mean is not None
             and answer.logprob_mean < LOW_LOGPROB),
        )
