"""Provider-neutral request and result: what every wire format parses into and renders from."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

from .answers import Answer, classification, good_answer, weak_answer, weak_style
from .heuristics import profile
from .mistakes import (
    confidently_wrong,
    final_line,
    is_verification,
    truth,
    verification,
    wrong_value,
)
from .scenario import Action, ModelSpec
from .tokens import TokenLogprob, make_logprobs, split_tokens

Verdict = Literal["good", "weak", "wrong", "truncated"]

_CONFIDENT_LOGPROB = -0.2
_UNSURE_LOGPROB = -2.0


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    prompt: str  # the last user message, which is what gets judged and answered
    prompt_tokens: int
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    wants_json: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    tokens: tuple[str, ...]
    finish: Literal["stop", "length"]
    verdict: Verdict
    difficulty: int
    prompt_tokens: int
    report_usage: bool
    logprobs: tuple[TokenLogprob, ...] | None

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    @property
    def markers(self) -> dict[str, Any]:
        """The top-level fields that tell a reader this response is not from a real model."""
        return {
            "emulated": True,
            "emulator_verdict": self.verdict,
            "emulator_difficulty": self.difficulty,
        }


def complete(request: ChatRequest, spec: ModelSpec, action: Action) -> Completion:
    """Answer as the market's model would, then apply a content fault if one fired."""
    difficulty = profile(request.prompt).difficulty
    seed = zlib.crc32(f"{request.model}\x00{request.prompt}".encode())
    answer: Answer
    verdict: Verdict
    finish: Literal["stop", "length"]
    if action in ("hedge", "refuse", "empty"):
        answer, verdict = weak_answer(request.prompt, seed, action), "weak"
    elif request.wants_json and is_verification(request.prompt):
        answer, verdict = _text(verification(spec, request.model, request.prompt)), "good"
    elif request.wants_json:
        answer, verdict = classification(request.prompt), "good"
    elif not masters(spec, request.model, request.prompt):
        answer, verdict = weak_answer(request.prompt, seed, weak_style(seed)), "weak"
    else:
        answer, verdict = _sure_answer(spec, request.model, request.prompt, seed,
                                       mistaken=action == "mistake")

    # A confident mistake sounds as sure as a right answer: its logprobs do not give it away.
    mean_logprob = _UNSURE_LOGPROB if verdict == "weak" else _CONFIDENT_LOGPROB
    text, tokens, finish = answer.text, answer.tokens, "stop"
    limit = len(tokens) if request.max_tokens is None else request.max_tokens
    if action == "truncate":
        limit = min(limit, len(tokens) // 2)
    if action == "ramble" and tokens:  # a model that writes on until its max_tokens
        tokens = (tokens * (limit // len(tokens) + 1))[:limit]
        text = "".join(tokens)
    if len(tokens) > limit or action == "truncate":
        tokens = tokens[:limit]
        text, finish, verdict = "".join(tokens), "length", "truncated"

    logprobs = None
    if request.logprobs:
        logprobs = make_logprobs(tokens, mean_logprob, request.top_logprobs, seed)
    return Completion(
        text=text,
        tokens=tokens,
        finish=finish,
        verdict=verdict,
        difficulty=difficulty,
        prompt_tokens=request.prompt_tokens,
        report_usage=action != "no_usage",
        logprobs=logprobs,
    )


def _sure_answer(spec: ModelSpec, model: str, prompt: str, seed: int, *, mistaken: bool
                 ) -> tuple[Answer, Verdict]:
    """A confident answer; to a checkable prompt it ends with its final value, which is wrong
    as often as the model's mistake rate makes it (always, under a "mistake" fault)."""
    answer = good_answer(prompt, seed)
    right = truth(prompt)
    if right is None:
        return answer, "good"
    wrong = mistaken or confidently_wrong(spec, model, prompt)
    line = final_line(wrong_value(prompt, model) if wrong else right)
    return _text(f"{answer.text}\n\n{line}"), "wrong" if wrong else "good"


def _text(text: str) -> Answer:
    return Answer(text, split_tokens(text))


def market_verdict(spec: ModelSpec, model: str, prompt: str) -> Literal["good", "weak", "wrong"]:
    """How this model answers this prompt, unfaulted: well, out of its depth, or sure and
    wrong."""
    if not masters(spec, model, prompt):
        return "weak"
    return "wrong" if confidently_wrong(spec, model, prompt) else "good"


def masters(spec: ModelSpec, model: str, prompt: str) -> bool:
    """The market's verdict on this model answering this prompt, before any fault: its own
    difficulty estimate against the model's strength, with a lot drawn from model and prompt."""
    lot = zlib.crc32(f"mastery\x00{model}\x00{prompt}".encode()) / 2**32
    return spec.masters(profile(prompt).difficulty, lot)
