"""The offline classifier: a cascade of two linear models trained on the project's labelled data.

The fast model reads the lexical features only and answers when it is sure (most prompts, well
under a millisecond). Otherwise the full model adds the prompt's e5 embedding, which carries
meaning across languages. Weights live in model/local.npz, written by `train.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import features
from .encoder import Encoder

MODEL_PATH = Path(__file__).with_name("model") / "local.npz"


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # simple, medium, complex
    stage: str  # "fast" or "full"


class LocalModel:
    def __init__(self, path: Path = MODEL_PATH, encoder: Encoder | None = None) -> None:
        with np.load(path) as weights:
            self._fast_w = weights["fast_w"].astype(np.float32)
            self._fast_b = weights["fast_b"].astype(np.float32)
            self._full_w = weights["full_w"].astype(np.float32)
            self._full_b = weights["full_b"].astype(np.float32)
            self._vectorize = features.Vectorizer(weights["idf"].astype(np.float32))
            self.meta = json.loads(str(weights["meta"]))
        self.threshold: float = self.meta["threshold"]
        self._embedding_scale: float = self.meta["embedding_scale"]
        self._encoder = encoder or Encoder()

    def predict(self, text: str) -> Prediction:
        idx, val = self._vectorize(text)
        fast = _softmax(val @ self._fast_w[idx] + self._fast_b)
        if fast.max() >= self.threshold:
            return Prediction(fast, "fast")
        embedding = self._encoder.embed(text) * self._embedding_scale
        logits = (val @ self._full_w[idx] + embedding @ self._full_w[features.DIMENSIONS:]
                  + self._full_b)
        return Prediction(_softmax(logits), "full")

    def warm_up(self) -> None:
        """Load the embedding engine now rather than on the first unsure prompt."""
        self._encoder.embed("warm up")


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()
