"""What a model says: a confident answer, a hedge, a refusal, nothing, or a classification.

Every answer is a pure function of the prompt and a seed (a hash of model and prompt), so a
benchmark run repeats exactly; the functions are cached because benchmarks repeat prompts.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .heuristics import PromptProfile, profile
from .language import FALLBACK_TERMS
from .templates import PHRASEBOOKS
from .tokens import split_tokens

WeakStyle = Literal["hedge", "refuse", "empty"]

LENGTHS = {1: (20, 60), 2: (80, 200), 3: (200, 400)}  # answer tokens by prompt difficulty
_SENTENCES_PER_PARAGRAPH = 4
_UNSPACED = frozenset(("zh", "ja"))

# Where a classification request puts the text to classify, if it delimits it at all.
_DELIMITED = re.compile(r"<prompt>(.*?)</prompt>|```[\w-]*\n?(.*?)```|\"\"\"(.*?)\"\"\"", re.S)
_LABELLED = re.compile(r"^(?:prompt|text|query|question|input)\s*:\s*(.+)", re.I | re.M | re.S)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tokens: tuple[str, ...]


def weak_style(seed: int) -> WeakStyle:
    """Mostly hedging, sometimes a refusal, occasionally nothing at all."""
    roll = seed % 10
    return "empty" if roll == 0 else "refuse" if roll <= 2 else "hedge"


@lru_cache(maxsize=4096)
def good_answer(prompt: str, seed: int) -> Answer:
    """Fluent, confident sentences about the prompt's own words, longer for harder prompts."""
    about = profile(prompt)
    book = PHRASEBOOKS[about.language]
    rng = random.Random(seed)
    shortest, longest = LENGTHS[about.difficulty]
    target = rng.randint(shortest, longest)
    opener = _fill(rng.choice(book.openers), about, 0)
    closer = _fill(rng.choice(book.closers), about, 0)
    sentences = [opener]
    length = len(split_tokens(opener)) + len(split_tokens(closer))
    body = list(book.body)
    index = 0
    while length < target:
        if index % len(body) == 0:
            rng.shuffle(body)
        sentence = _fill(body[index % len(body)], about, index + 1)
        sentence_length = len(split_tokens(sentence))
        if length + sentence_length > longest:
            break
        sentences.append(sentence)
        length += sentence_length
        index += 1
    sentences.append(closer)
    return _answer(_join(sentences, about.language))


@lru_cache(maxsize=4096)
def weak_answer(prompt: str, seed: int, style: WeakStyle) -> Answer:
    """What a model out of its depth says, in the prompt's language."""
    if style == "empty":
        return _answer("")
    about = profile(prompt)
    book = PHRASEBOOKS[about.language]
    rng = random.Random(seed)
    if style == "refuse":
        sentences = [rng.choice(book.refusals)]
    else:
        sentences = rng.sample(book.hedges, rng.randint(1, 3))
    filled = [_fill(sentence, about, index) for index, sentence in enumerate(sentences)]
    return _answer(_join(filled, about.language))


@lru_cache(maxsize=4096)
def classification(prompt: str) -> Answer:
    """The JSON a small local model returns when asked to rate a prompt's difficulty."""
    about = profile(_text_to_classify(prompt))
    return _answer(json.dumps({"difficulty": about.label, "confidence": about.confidence}))


def _text_to_classify(prompt: str) -> str:
    delimited = _DELIMITED.search(prompt)
    if delimited:
        return next(group for group in delimited.groups() if group is not None).strip()
    labelled = _LABELLED.search(prompt)
    return labelled.group(1).strip() if labelled else prompt


def _fill(template: str, about: PromptProfile, index: int) -> str:
    terms = about.terms
    topic = terms[index % len(terms)]
    other = terms[(index + 1) % len(terms)] if len(terms) > 1 else FALLBACK_TERMS[about.language][1]
    return template.format(t=topic, u=other)


def _join(sentences: list[str], language: str) -> str:
    glue = "" if language in _UNSPACED else " "
    paragraphs = [
        glue.join(sentences[start : start + _SENTENCES_PER_PARAGRAPH])
        for start in range(0, len(sentences), _SENTENCES_PER_PARAGRAPH)
    ]
    return "\n\n".join(paragraphs)


def _answer(text: str) -> Answer:
    return Answer(text, split_tokens(text))
