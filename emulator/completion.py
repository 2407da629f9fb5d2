"""Provider-neutral request and result: what every wire format parses into and renders from."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

from .answers import Answer, classification, good_answer, weak_answer, weak_style
from .heuristics import profile
from .scenario import Action, ModelSpec
from .tokens import TokenLogprob, make_logprobs

Verdict = Literal["good", "weak", "truncated"]

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
    if action in ("hedge", "refuse", "empty"):
        answer, verdict = weak_answer(request.prompt, seed, action), "weak"
    elif request.wants_json:
        answer, verdict = classification(request.prompt), "good"
    elif not masters(spec, request.model, request.prompt):
        answer, verdict = weak_answer(request.prompt, seed, weak_style(seed)), "weak"
    else:
        answer, verdict = good_answer(request.prompt, seed), "good"

    mean_logprob = _CONFIDENT_LOGPROB if verdict == "good" else _UNSURE_LOGPROB
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


def masters(spec: ModelSpec, model: str, prompt: str) -> bool:
    """The market's verdict on this model answering this prompt, before any fault: its own
    difficulty estimate against the model's strength, with a lot drawn from model and prompt."""
    lot = zlib.crc32(f"mastery\x00{model}\x00{prompt}".encode()) / 2**32
    return spec.masters(profile(prompt).difficulty, lot)
