"""Verification: paid checks that catch a confidently wrong answer, which no phrase or logprob
reveals. A verifier model re-derives the result and says whether the answer is right; a second
cheap sample must reach the same final answer (a number, an option). Each call is an attempt of
its own (outcome "verify"), recorded as soon as it returns, and no call is made whose worst-case
price would take the request's verification past `escalation.verify.max_cost_usd`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.config import ModelRef, VerifyConfig, VerifySignal
from shared.messages import Attempt, Envelope, Outcome
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import Providers

from .calls import MIN_CALL_S, json_verdict, paid_call, tagged

QUESTION_CHARS = 4000
ANSWER_TAIL_CHARS = 1500  # the final result is at the end: the verifier re-derives the rest
VERIFIER_INSTRUCTIONS = (
    "Solve the question yourself, then judge the answer's final result. Reply with JSON only: "
    '{"correct": true} or {"correct": false}.'
)
SAMPLE_INSTRUCTIONS = "Answer the question. End with a last line 'Final answer: <value>'."
VERDICT_TOKENS = 20

Record = Callable[[list[Attempt]], Awaitable[None]]

# Space but not a line end: a \s* at every line start ran on across the blank lines after it (a
# prompt of 64 KB of blank lines took 31 s of the escalator's event loop).
_OPTIONS = re.compile(r"^[^\S\n]*+\(?([A-Ha-h])[).:]\s+\S", re.M)
_CODE = re.compile(r"```|\b(def|function|class|return|SELECT|regex|python|javascript|sql|"
                   r"write a (function|program|script|query))\b", re.I)
_MATH = re.compile(r"\d\s*[-+*/\u00d7\u00f7^=%]\s*\d|\b(how many|how much|how long|how far|"
                   r"how old|calculate|compute|total|sum|product|average|percent|solve|"
                   r"equation|remainder|profit|cost|price|speed|area|perimeter)\b", re.I)
_FACTUAL = re.compile(r"^\s*(who|when|where|which|what (year|is the|was the|are the)|"
                      r"in what|name the|how (tall|big|old|far))\b", re.I)
# Possessive where the parts cannot overlap: "final answer" then 2,000 spaces took 96 s (cubic).
_STATED = (
    re.compile(r"final answer\s*+(?:is)?+\s*+[:=]?+\s*+\$?\(?([A-H]\b|-?[\d,]*\.?\d+)", re.I),
    re.compile(r"\banswer\s*+(?:is|:)\s*+\$?\(?([A-H]\b|-?[\d,]*\.?\d+)", re.I),
    re.compile(r"\\boxed\{([^}]*)\}"),  # read only up to the last "}" (see final_answer)
)
_LAST_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def task_type(prompt: str) -> str:
    """A prompt's kind, by cheap cues: choice, code, math, factual or other."""
    if len(set(letter.upper() for letter in _OPTIONS.findall(prompt))) >= 2:
        return "choice"
    if _CODE.search(prompt):
        return "code"
    if _MATH.search(prompt) and any(c.isdigit() for c in prompt):
        return "math"
    if _FACTUAL.search(prompt):
        return "factual"
    return "other"


def final_answer(text: str, kind: str) -> str | None:
    """The final number or option an answer states, normalised for comparison; None when it
    states none that can be compared."""
    if kind not in ("math", "choice"):
        return None
    for pattern in _STATED:
        # A \boxed{ with no "}" after it cannot match: without the cut, each of many such
        # openings scanned on to the end (quadratic: 9.8 s at 128 KB).
        found = pattern.findall(text[:text.rfind("}") + 1] if pattern is _STATED[2] else text)
        if found:
            return _normal(found[-1])
    if kind == "math":
        numbers = _LAST_NUMBER.findall(text)
        return _normal(numbers[-1]) if numbers else None
    return None


def _normal(value: str) -> str:
    value = value.strip().rstrip(".").replace(",", "")
    try:
        number = float(value)
    except ValueError:
        return value.upper()
    return str(int(number)) if number.is_integer() else repr(round(number, 6))


@dataclass(frozen=True, slots=True)
class Check:
    """What verification concluded: the first signal that found the answer wrong (None: no
    signal did), and the paid calls it took."""

    wrong_by: VerifySignal | None
    calls: list[Attempt]


class Verifier:
    def __init__(self, config: VerifyConfig, providers: Providers, pricer: Pricer) -> None:
        self._config = config
        self._providers = providers
        self._pricer = pricer

    def eligible(self, envelope: Envelope) -> bool:
        """Whether this request's answer is worth paying to check: its task type is listed,
        it falls in the share, and its strong_score (when the router gives one) in the band."""
        config = self._config
        if not config.enabled or task_type(envelope.request.prompt_text) not in config.task_types:
            return False
        # The trace, not the caller's request_id: a caller must not pick ids that are (or are
        # never) checked.
        lot = zlib.crc32(f"verify\x00{envelope.trace_id}".encode()) / 2**32
        if lot >= config.share:
            return False
        score = envelope.classification.strong_score  # None without a learned router
        low, high = config.strong_score_band
        return score is None or low <= score <= high

    async def check(self, envelope: Envelope, answer: str, *, tier: str,
                    record: Record) -> Check:
        """Run the configured signals in order until one finds the answer wrong, within the
        per-request cost cap and the request's deadline; `record` is called with each call's
        attempt as soon as it ends."""
        prompt = envelope.request.prompt_text
        calls: list[Attempt] = []
        for signal in self._config.signals:
            if not applies(signal, prompt, answer):
                continue
            messages, ref, _, max_tokens = self._request(signal, prompt, answer)
            seconds_left = envelope.seconds_left()
            if (seconds_left < MIN_CALL_S
                    or not self._affordable(envelope, calls, ref, messages, max_tokens)):
                break
            wrong, call = await self.run(signal, prompt, answer,
                                         n=len(envelope.attempts) + len(calls) + 1,
                                         hop=envelope.hop, tier=tier,
                                         timeout=min(self._config.timeout_s, seconds_left))
            await record([call])  # paid: recorded at once
            calls.append(call)
            if wrong:
                return Check(signal, calls)
        return Check(None, calls)

    async def run(self, signal: VerifySignal, prompt: str, answer: str, *, n: int, hop: int,
                  tier: str, timeout: float | None = None) -> tuple[bool | None, Attempt]:
        """One signal's verdict (True: the answer is wrong; None: no verdict) and its call,
        within `timeout` (the configured one when None)."""
        messages, ref, json_format, max_tokens = self._request(signal, prompt, answer)
        text, call = await paid_call(self._providers, self._pricer, ref, messages,
                                     outcome=Outcome.VERIFY, n=n, hop=hop, tier=tier,
                                     max_tokens=max_tokens,
                                     timeout=self._config.timeout_s if timeout is None else timeout,
                                     json_format=json_format)
        wrong = None if text is None else _verdict(signal, text, answer, task_type(prompt))
        return wrong, call.model_copy(update={"reason": _reason(signal, call.reason, wrong)})

    def _request(self, signal: VerifySignal, prompt: str, answer: str
                 ) -> tuple[list[dict[str, str]], ModelRef, bool, int]:
        if signal == "verifier":
            return ([{"role": "system", "content": VERIFIER_INSTRUCTIONS},
                     {"role": "user",
                      "content": tagged(question=prompt[:QUESTION_CHARS],
                                        answer=answer[-ANSWER_TAIL_CHARS:])}],
                    self._config.verifier, True, VERDICT_TOKENS)
        return ([{"role": "system", "content": SAMPLE_INSTRUCTIONS},
                 {"role": "user", "content": prompt}],
                self._config.sampler, False, self._config.max_tokens)

    def _affordable(self, envelope: Envelope, calls: list[Attempt], ref: ModelRef,
                    messages: list[dict[str, str]], max_tokens: int) -> bool:
        """The call's worst-case price fits under the verification cap and the request's own
        budget."""
        bound = self._pricer.cost(ref, worst_case_input_tokens(m["content"] for m in messages),
                                  max_tokens)
        spent = sum(a.cost_usd for a in envelope.attempts if a.outcome == Outcome.VERIFY)
        spent += sum(a.cost_usd for a in calls)
        if spent + bound > self._config.max_cost_usd:
            return False
        ceiling = envelope.request.max_cost_usd
        return ceiling is None or envelope.cost_usd + spent + bound <= ceiling

def applies(signal: VerifySignal, prompt: str, answer: str) -> bool:
    """A second sample needs a final answer to compare; the verifier reads any answer."""
    return signal != "consistency" or final_answer(answer, task_type(prompt)) is not None


def _verdict(signal: VerifySignal, text: str, answer: str, kind: str) -> bool | None:
    """True when the signal finds the answer wrong, False when right, None when it cannot say."""
    if signal == "verifier":
        correct = json_verdict(text, "correct")
        return None if correct is None else not correct
    sampled = final_answer(text, kind)
    return None if sampled is None else sampled != final_answer(answer, kind)


def _reason(signal: VerifySignal, error: str, wrong: bool | None) -> str:
    if error:
        return f"{signal}: {error}"
    return f"{signal}: " + {True: "wrong", False: "right", None: "no verdict"}[wrong]

