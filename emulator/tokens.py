"""Token arithmetic that looks like a real tokenizer's from the outside, at no real cost."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

# A word with its leading space is one token, so is each Chinese or Japanese character.
_CJK = r"\u3000-\u303f\u3040-\u30ff\u4e00-\u9fff\uff00-\uffef"
_TOKEN = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)|\s+")
_PER_MESSAGE = 4  # role and separators, as chat templates add


def split_tokens(text: str) -> tuple[str, ...]:
    """Pieces that concatenate back to `text`."""
    return tuple(_TOKEN.findall(text))


def estimate_prompt_tokens(texts: Iterable[str]) -> int:
    """About four UTF-8 bytes a token: chars/4 for English, more tokens for CJK and Cyrillic."""
    return sum(math.ceil(len(text.encode()) / 4) + _PER_MESSAGE for text in texts)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def make_logprobs(
    tokens: tuple[str, ...], mean: float, top_n: int, seed: int
) -> tuple[TokenLogprob, ...]:
    """Skewed log-probabilities (most near 0, a few far below) averaging `mean`, give or take 25%.

    Alternatives are other tokens of the same answer, so they are in the right language.
    """
    if not tokens:
        return ()
    rng = random.Random(seed)
    draws = [rng.expovariate(1.0) for _ in tokens]
    scale = mean * rng.uniform(0.75, 1.25) * len(draws) / sum(draws)
    count = len(tokens)
    result = []
    for index, (token, draw) in enumerate(zip(tokens, draws, strict=True)):
        logprob = round(min(draw * scale, -1e-4), 4)
        top: tuple[tuple[str, float], ...] = ()
        if top_n:
            rest = 1.0 - math.exp(logprob)
            candidates = [(token, logprob)]
            for rank in range(1, min(top_n, count)):
                alternative = tokens[(index + 7 * rank) % count]
                if alternative != token:
                    candidates.append((alternative, round(math.log(rest * 0.6**rank), 4)))
            top = tuple(sorted(candidates, key=lambda pair: pair[1], reverse=True))
        result.append(TokenLogprob(token, logprob, top))
    return tuple(result)
