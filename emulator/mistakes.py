"""Confident mistakes: answers that sound sure and are wrong, which no hedge phrase reveals.

A prompt is checkable when it asks for a number or offers lettered options; the market then
holds its true final answer (computed for plain arithmetic, a fixed lot of the prompt
otherwise). A model that masters the prompt still states a plausible wrong value now and then:
its `mistakes` rate at its own strength, doubled for each level of difficulty above, halved for
each below. A verifier request (JSON asked for, the question and answer in tags) is answered
from the same truth, wrong as often as the verifier model's own strength makes it.
"""

from __future__ import annotations

import json
import operator
import re
import zlib
from functools import lru_cache

from .heuristics import profile
from .scenario import ModelSpec

FINAL_PREFIX = "Final answer: "
_OPTION = re.compile(r"^[^\S\n]*+\(?([A-H])[).:]\s+\S", re.M)  # \s* ran across blank lines
_ARITHMETIC = re.compile(  # possessive, and no start inside a number: a run of digits was quadratic
    r"(-?(?<!\d)\d++(?:\.\d++)?+)\s*+([-+*/\u00d7x\u00f7])\s*+(-?\d++(?:\.\d++)?+)")
_QUANTITY = re.compile(
    r"\b(how many|how much|how long|how far|how old|calculate|compute|total|sum|average|"
    r"percent|what is|what's|in what year|which year)\b|\d\s*%", re.I)
_OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "x": operator.mul,
               "\u00d7": operator.mul, "/": operator.truediv, "\u00f7": operator.truediv}
# Atomic: only the first <question> can give the match (the lazy scans backtracked quartically).
_VERIFY = re.compile(r"\A(?>.*?<question>)(?>(.*?)</question>)(?>.*?<answer>)(?>(.*?)</answer>)",
                     re.S)
_STATED = re.compile(r"final answer\s*[:=]\s*\(?([A-H]|-?[\d,]*\.?\d+)\)?", re.I)
_VERIFIER_ERROR = 0.05  # a verifier's error rate on prompts at its own strength


def options(prompt: str) -> tuple[str, ...]:
    """The option letters a multiple-choice prompt offers (two or more), else none."""
    letters = tuple(dict.fromkeys(_OPTION.findall(prompt)))
    return letters if len(letters) >= 2 else ()


def checkable(prompt: str) -> bool:
    if options(prompt):
        return True
    asks = _QUANTITY.search(prompt) or _ARITHMETIC.search(prompt)
    return asks is not None and any(c.isdigit() for c in prompt)


@lru_cache(maxsize=4096)
def truth(prompt: str) -> str | None:
    """The market's true final answer to a checkable prompt, None for any other."""
    if not checkable(prompt):
        return None
    letters = options(prompt)
    if letters:
        return letters[zlib.crc32(f"option\x00{prompt}".encode()) % len(letters)]
    sums = _ARITHMETIC.findall(prompt)
    if len(sums) == 1:  # one plain sum: its real result
        left, sign, right = float(sums[0][0]), sums[0][1], float(sums[0][2])
        if not (sign in "/\u00f7" and right == 0):
            return _number(_OPERATIONS[sign](left, right))
    return str(10 + zlib.crc32(f"number\x00{prompt}".encode()) % 990)


def wrong_value(prompt: str, model: str) -> str:
    """A plausible wrong final answer: a neighbouring option, or a number off by a slip."""
    right = truth(prompt)
    assert right is not None
    lot = zlib.crc32(f"slip\x00{model}\x00{prompt}".encode())
    letters = options(prompt)
    if letters:
        others = [letter for letter in letters if letter != right]
        return others[lot % len(others)]
    value = float(right)
    slips = (value + 1, value - 1, value * 2, value / 2, value + 10, value - 10, value * 1.5)
    candidates = [_number(s) for s in slips if _number(s) != right]
    return candidates[lot % len(candidates)]


def mistake_rate(spec: ModelSpec, difficulty: int) -> float:
    return min(0.5, spec.mistakes * 2.0 ** (difficulty - spec.strength))


def confidently_wrong(spec: ModelSpec, model: str, prompt: str) -> bool:
    """Whether this model, answering this checkable prompt well enough to sound sure, errs."""
    if truth(prompt) is None or not spec.mistakes:
        return False
    lot = zlib.crc32(f"mistake\x00{model}\x00{prompt}".encode()) / 2**32
    return lot < mistake_rate(spec, profile(prompt).difficulty)


def final_line(value: str) -> str:
    return f"{FINAL_PREFIX}{value}."


def is_verification(prompt: str) -> bool:
    return _VERIFY.search(prompt) is not None


def verification(spec: ModelSpec, model: str, prompt: str) -> str:
    """A verifier's JSON verdict on the tagged answer: right when the answer's final value is
    the market's truth (or, for an unchecked prompt, when it says anything), flipped as often
    as the verifier's strength against the question's difficulty makes it err."""
    tagged = _VERIFY.search(prompt)
    if tagged is None:
        raise ValueError("not a verifier's prompt (see is_verification)")
    question, answer = (part.strip() for part in tagged.groups())
    right = truth(question)
    stated = _STATED.search(answer)
    if right is None:
        correct = bool(answer.strip())
    else:
        correct = stated is not None and _same(stated.group(1), right)
    error = min(0.45, _VERIFIER_ERROR * 2.0 ** (profile(question).difficulty - spec.strength))
    lot = zlib.crc32(f"verify\x00{model}\x00{question}\x00{answer}".encode()) / 2**32
    if lot < error:
        correct = not correct
    return json.dumps({"correct": correct, "addresses": correct})


def _same(stated: str, right: str) -> bool:
    try:
        return float(stated.replace(",", "")) == float(right)
    except ValueError:
        return stated.upper() == right.upper()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0")
