"""The learned router: `strong_score`, how likely the cheap side's answer falls short, from
features the classifier already computes.

Two kinds of model, chosen by cross-validated APGR on the training data (router_train.py):
- "ridge": a linear score over a feature set, fitted by ridge regression to the strong model's
  gain (strong - weak) on each prompt: the ranking APGR rewards is the ranking by expected gain;
- "neighbours": RouteLLM's similarity-weighted ranking, the mean gain of the most similar
  training prompts (e5 cosine), weighted by similarity.
Either raw score goes through a logistic calibration fitted on out-of-fold predictions, so
`strong_score` reads as the probability that the strong model answers better; the ranking is the
raw score's. The file also keeps the quantiles of the training prompts' out-of-fold raw scores,
from which a target share of traffic becomes a threshold (`thresholds`). Thresholds apply to the
raw score: on well-separated data the calibrated one saturates near 0 and 1, where quantiles
would tie.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache

from shared.messages import FeatureSet

from . import features
from .encoder import Encoder
from .local_model import MODEL_PATH as LOCAL_MODEL_PATH

FORMAT = "smart-router/router-model"
FORMAT_VERSION = 1
SHIPPED_PATH = Path(__file__).with_name("model") / "router.npz"
LEXICAL_BUCKETS = 1 << 12  # the classifier's hashed n-grams, folded
FEATURE_SETS: dict[FeatureSet, tuple[str, ...]] = {
    "embedding": ("embedding", "structure"),
    "lexical": ("lexical", "structure"),
    "both": ("embedding", "lexical", "structure"),
}
QUANTILES = np.linspace(0.0, 1.0, 101)
# What the ledger keeps of a prompt (ledger.store_features): float16, about 3 significant
# digits, enough for features that are unit-scale by construction.
STORED_DTYPE = np.dtype("<f2")


def feature_set_of(parts: tuple[str, ...]) -> FeatureSet:
    return next(name for name, ps in FEATURE_SETS.items() if ps == tuple(parts))


class MemoEncoder(Encoder):
    """e5 with a memory of its last few prompts: the classifier's full stage and the router
    score the same prompt one after the other, and pay for one embedding."""

    SIZE = 8

    def __init__(self) -> None:
        self._recent: LRUCache[str, np.ndarray] = LRUCache(self.SIZE)

    def embed(self, text: str) -> np.ndarray:
        vector = self._recent.get(text)
        if vector is None:
            vector = self._recent[text] = super().embed(text)
        return vector


class Featurizer:
    """The router's view of a prompt, built by the classifier's own code."""

    def __init__(self, encoder: Encoder | None = None) -> None:
        self.encoder = encoder or MemoEncoder()
        with np.load(LOCAL_MODEL_PATH) as weights:
            self._vectorize = features.Vectorizer(weights["idf"].astype(np.float32))

    def __call__(self, text: str, parts: tuple[str, ...]) -> np.ndarray:
        return np.concatenate([getattr(self, f"_{part}")(text) for part in parts])

    def _embedding(self, text: str) -> np.ndarray:
        return self.encoder.embed(text).astype(np.float64)

    def _structure(self, text: str) -> np.ndarray:
        return np.asarray(features.structure(text), dtype=np.float64)

    def _lexical(self, text: str) -> np.ndarray:
        idx, val = self._vectorize(text)
        grams = idx < features.SPACES * features.BUCKETS  # the structure cues come separately
        return np.bincount(idx[grams] % LEXICAL_BUCKETS, weights=val[grams],
                           minlength=LEXICAL_BUCKETS) / np.sqrt(features.SPACES)


@dataclass
class Ridge:
    """w.x + b over standardised features."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float

    @classmethod
    def fit(cls, x: np.ndarray, gain: np.ndarray, alpha: float) -> Ridge:
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        target = gain - gain.mean()
        # The smaller of the two systems: n x n (the dual) when there are fewer prompts than
        # features, as in a prompt file, else d x d, as with a ledger's many rows.
        n, d = z.shape
        if n <= d:
            w = z.T @ np.linalg.solve(z @ z.T + alpha * n * np.eye(n), target)
        else:
            w = np.linalg.solve((z.T @ z).astype(np.float64) + alpha * n * np.eye(d),
                                z.T @ target)
        return cls(mean, scale, w, float(gain.mean()))

    def raw(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.w + self.b

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "w": self.w, "b": np.array(self.b)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Ridge:
        return cls(a["mean"], a["scale"], a["w"], float(a["b"]))


@dataclass
class Neighbours:
    """Similarity-weighted mean gain of the k most similar training prompts."""

    keys: np.ndarray  # unit rows
    gain: np.ndarray
    k: int

    @classmethod
    def fit(cls, x: np.ndarray, gain: np.ndarray, k: int) -> Neighbours:
        return cls((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32),
                   gain.astype(np.float32), k)

    def raw(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        similarity = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ self.keys.T
        k = min(self.k, similarity.shape[1])
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weight = np.exp(10.0 * np.take_along_axis(similarity, top, axis=1))
        return (weight * self.gain[top]).sum(axis=1) / weight.sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys.astype(np.float16), "gain": self.gain, "k": np.array(self.k)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Neighbours:
        return cls(a["keys"].astype(np.float32), a["gain"], int(a["k"]))


KINDS: dict[str, type[Ridge] | type[Neighbours]] = {"ridge": Ridge, "neighbours": Neighbours}


@dataclass
class RouterModel:
    kind: str
    parts: tuple[str, ...]
    scorer: Ridge | Neighbours
    calibration: tuple[float, float]  # strong_score = sigmoid(a * raw + b)
    raw_quantiles: np.ndarray  # the training prompts' out-of-fold raw score at QUANTILES
    meta: dict

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.atleast_1d(self.scorer.raw(x))

    def strong_scores(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * raw + b)))

    def thresholds(self, shares: tuple[float, ...]) -> tuple[float, ...]:
        """The raw score above which `share` of the training prompts lie, for each share: a
        target share of traffic sent up, calibrated as RouteLLM calibrates its threshold."""
        return tuple(float(np.interp(1.0 - share, QUANTILES, self.raw_quantiles))
                     for share in shares)

    def save(self, path: Path) -> None:
        # Any: numpy's stub takes a **dict of arrays for one that may hold allow_pickle too.
        arrays: dict[str, Any] = {f"scorer_{k}": v for k, v in self.scorer.arrays().items()}
        meta = self.meta | {"format": FORMAT, "format_version": FORMAT_VERSION,
                            "kind": self.kind, "features": list(self.parts)}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            with partial.open("wb") as out:  # np.savez would add ".npz" to a name without it
                np.savez_compressed(out, calibration=np.array(self.calibration),
                                    raw_quantiles=self.raw_quantiles,
                                    meta=np.array(json.dumps(meta)), **arrays)
            RouterModel.load(partial)  # what a classifier would refuse is never written
            os.replace(partial, path)  # a running classifier never reads half a file
        finally:
            partial.unlink(missing_ok=True)  # a failed write leaves nothing behind

    @staticmethod
    def check_writable(path: Path) -> None:
        """Before the work: an --out whose folder cannot be made or written to is refused at
        once, not after the training."""
        folder = path.parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if path.is_dir() or (existing is not None and not existing.is_dir()):
            raise ValueError(f"cannot write the model to {path}: {existing} is not a folder"
                             if not path.is_dir() else f"{path} is a folder")
        if existing is not None and not os.access(existing, os.W_OK):
            raise ValueError(f"cannot write the model to {path}: {existing} is not writable")

    @classmethod
    def load(cls, path: Path) -> RouterModel:
        """The model in `path`, checked whole: ValueError says what is wrong with a file that
        is not one (truncated, another format, numbers that are not finite...)."""
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
                    raise ValueError(f"not a router model of format {FORMAT_VERSION}")
                arrays = {k.removeprefix("scorer_"): data[k] for k in data.files
                          if k.startswith("scorer_")}
                model = cls(meta["kind"], tuple(meta["features"]),
                            KINDS[meta["kind"]].from_arrays(arrays),
                            tuple(data["calibration"].tolist()), data["raw_quantiles"], meta)
                model._check(arrays)
                return model
        except Exception as exc:  # np.load alone raises half a dozen kinds on a bad file
            raise ValueError(f"cannot load the router model {path}: "
                             f"{type(exc).__name__}: {exc}") from None

    def _check(self, arrays: dict[str, np.ndarray]) -> None:
        if len(self.calibration) != 2 or len(self.raw_quantiles) != len(QUANTILES):
            raise ValueError("its calibration or quantiles have the wrong shape")
        for name, values in [("calibration", np.array(self.calibration)),
                             ("raw_quantiles", self.raw_quantiles), *arrays.items()]:
            if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
                raise ValueError(f"its {name} holds a number that is not finite")
        if np.any(np.diff(self.raw_quantiles) < 0):
            raise ValueError("its raw_quantiles are not in order")
        if tuple(self.parts) not in FEATURE_SETS.values():
            raise ValueError(f"unknown features {list(self.parts)}")


class Router:
    """A model and the featurizer it reads: text in, strong_score out."""

    def __init__(self, model: RouterModel, featurizer: Featurizer) -> None:
        self.model = model
        self._featurizer = featurizer

    def raw(self, text: str) -> float:
        return float(self.model.raw(self._featurizer(text, self.model.parts))[0])

    def strong_score(self, text: str) -> float:
        return float(self.model.strong_scores(np.array([self.raw(text)]))[0])
