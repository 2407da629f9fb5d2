"""The configured backends, tried in order: the first that answers decides."""

from __future__ import annotations

import time

from shared.config import ClassifierConfig

from . import rules
from .verdict import Verdict


class Classifier:
    def __init__(self, config: ClassifierConfig) -> None:
        self._backends = [rules.classify for _ in config.backends]

    async def classify(self, text: str) -> Verdict:
        started = time.perf_counter()
        verdict = self._backends[0](text)
        return Verdict(
            verdict.difficulty,
            verdict.confidence,
            verdict.backend,
            (time.perf_counter() - started) * 1000,
        )
