"""How confident an answer looks, from signals that need no model call.

Each signal that fires caps the answer's score; the lowest cap wins, and the names of the
fired signals become the attempt's reason. An answer is weak when its score is under
`escalation.threshold`. Hedging and refusal phrases, in the 17 languages the classifier
supports, come from phrases.toml and are matched as substrings of the lowercased answer, all at
once by an Aho-Corasick automaton (a regex alternation of 600 phrases cost a quarter of the
escalator's CPU).
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ahocorasick
import structlog

from shared.config import EscalationConfig, Signal
from shared.messages import Answer

log = structlog.get_logger(__name__)
PHRASES = Path(__file__).with_name("phrases.toml")

# The score each signal caps an answer at: with the default threshold (0.5) any one escalates;
# a lower threshold lets hedging or a low logprob alone through.
CAPS: dict[Signal, float] = {
    "truncation": 0.0, "empty": 0.0, "refusal": 0.1, "judge": 0.2, "verifier": 0.2,
    "consistency": 0.25, "arithmetic": 0.25, "hedging": 0.3, "logprob": 0.35}
REFUSAL_WINDOW = 300  # a refusal opens the answer; a quoted one deep inside is not a refusal
HEDGE_WINDOW = 250  # one hedge in the opening, or two anywhere, mark a hedged answer
SHORT_ANSWER = 400  # ...and in a short answer one is enough
_CONTENT = re.compile(r"\w", re.UNICODE)
# Possessive quantifiers (nothing given back) and no start inside a thousands group: with
# backtracking, a 128 KB run of "1,000,1,000,..." took 105 s of the escalator's event loop; now
# milliseconds. A stated result may give back its comma groups ("2+2=5,3+3=6").
_NUMBER = r"-?\d++(?:,\d{3})*+(?:\.\d++)?+"
_RESULT = r"-?\d++(?:,\d{3})*(?:\.\d++)?+"
_OPERATOR = "-+*/x\u00d7\u00f7\u2212"  # x, the multiplication and division signs, the minus
# "12 x 7 = 84", "80 x 20/100 = 16", "= 48 + 7 = 55" in a chain: a step that can be checked. It
# must stand alone: not the tail of a longer expression (a power, a variable, a term after an
# operator, a mixed number's fraction, a thousands group of a number), and its result not the
# head of one ("= 320 + 48", "= 7/8", "= 3x") nor cut inside a number ("= 488,868 (...").
_SPACE = r"[^\S\n]"  # within a line: a step never runs across lines (a list of bullets was
# read as one chain from every bullet on: quadratic, 33 s for 128 KB of "1\n- ")
_EQUATION = re.compile(
    # A start: a bullet, bold (not a power's **), or after a space or punctuation but not after an
    # operator and a space (a term's tail) nor inside a thousands group or a number's digits.
    rf"(?:(?<=^[-*] )|(?<=\*\*)(?<![\w)]\*\*)|(?<![^\s:;,(\[])(?<![{_OPERATOR}^\d]{_SPACE}))"
    rf"(?!(?<=\d,)(?:\d{{3}}(?!\d)|\d++,\d))"
    rf"((?:{_NUMBER}{_SPACE}*+[{_OPERATOR}]{_SPACE}*+)++{_NUMBER})\s*+=\s*+({_RESULT})"
    # The result not the head of a longer expression on its line (nor the next line's, unless
    # that line is a bullet), nor cut inside a number.
    rf"(?![\w^/(]|{_SPACE}*[{_OPERATOR}^(]\s*[\w(]|\n{_SPACE}*+(?![-*]{_SPACE})[{_OPERATOR}^(]"
    rf"\s*[\w(]|\s\d{{3}}\b|,\d{{3}}(?!\d))", re.M)
MAX_STEPS = 200  # steps checked in one answer
MAX_STEP_CHARS = 200  # a longer expression is no worked step (and could nest past the parser)
_STATED_FINAL = re.compile(rf"answer is\s*\$?({_RESULT})", re.I)
_SYMBOLS = str.maketrans({"x": "*", "\u00d7": "*", "\u00f7": "/", "\u2212": "-", ",": ""})
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    signals: tuple[Signal, ...]

    def weak(self, threshold: float) -> bool:
        return self.value < threshold


class Phrases:
    """Where any of a set of phrases starts in a text, in one pass."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self._automaton = ahocorasick.Automaton()
        for phrase in {_normal(p) for p in phrases if p.strip()}:
            self._automaton.add_word(phrase, len(phrase))
        self._automaton.make_automaton()

    def starts(self, text: str) -> Iterator[int]:
        for end, length in self._automaton.iter(text):
            yield end - length + 1


class Lexicon:
    def __init__(self, path: Path = PHRASES) -> None:
        table = tomllib.loads(path.read_text())
        self.languages = sorted(table)
        self.hedges = Phrases(p for lang in table.values() for p in lang["hedges"])
        self.refusals = Phrases(p for lang in table.values() for p in lang["refusals"])


class Scorer:
    def __init__(self, config: EscalationConfig, lexicon: Lexicon | None = None) -> None:
        self._enabled = set(config.signals)
        self._logprob_floor = config.logprob_floor
        self._lexicon = lexicon or Lexicon()

    def score(self, answer: Answer) -> Score:
        text = _normal(answer.text)
        fired = tuple(
            name for name, fires in (
                ("truncation", lambda: answer.finish_reason == "length"),
                ("empty", lambda: not _CONTENT.search(text)),
                ("refusal", lambda: answer.finish_reason == "refusal"
                 or next(self._lexicon.refusals.starts(text[:REFUSAL_WINDOW]), None) is not None),
                ("hedging", lambda: self._hedged(text)),
                ("logprob", lambda: answer.logprob_mean is not None
                 and answer.logprob_mean < self._logprob_floor),
                ("arithmetic", lambda: arithmetic_slip(answer.text)),
            )
            if name in self._enabled and _fired(name, fires)
        )
        return Score(min((CAPS[name] for name in fired), default=1.0), fired)

    def _hedged(self, text: str) -> bool:
        hedges = self._lexicon.hedges.starts(text)
        first = next(hedges, None)
        if first is None:
            return False
        return (len(text) < SHORT_ANSWER or first < HEDGE_WINDOW
                or next(hedges, None) is not None)


def _fired(name: Signal, check: Callable[[], bool]) -> bool:
    """A signal's check, as not fired if it fails (logged): a crash here would fail the hop,
    and its paid answer would be redelivered until it is dead-lettered."""
    try:
        return check()
    except Exception as exc:
        log.error("signal.failed", signal=name, error=type(exc).__name__)
        return False


def _normal(text: str) -> str:
    return text.lower().replace("\u2019", "'").replace("\u2018", "'")


def arithmetic_slip(text: str) -> bool:
    """Whether a worked answer gets a step's arithmetic wrong, or states a final number that
    none of its steps reached: a calculator's re-check, at no model call."""
    results = []
    for step in itertools.islice(_EQUATION.finditer(text), MAX_STEPS):
        expression, stated = step.groups()
        if len(expression) > MAX_STEP_CHARS:
            continue
        value = _evaluate(expression.translate(_SYMBOLS))
        if value is None:
            continue
        claimed = float(stated.replace(",", ""))
        if not (math.isfinite(value) and math.isfinite(claimed)):
            continue
        decimals = len(stated.partition(".")[2])
        if abs(value - claimed) > 0.5 * 10.0 ** -decimals + 1e-9:  # beyond the stated rounding
            return True
        results += [claimed, math.floor(claimed), math.ceil(claimed)]
    final = _STATED_FINAL.findall(text)
    return bool(results and final) and float(final[-1].replace(",", "")) not in results


def _evaluate(expression: str) -> float | None:
    """The value of + - * / over numbers, None for anything else (a division by zero, a number
    past a float's range)."""
    try:
        return _value(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")
