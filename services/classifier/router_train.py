"""Training the learned router (`smart-router train-router`), with every choice made by
cross-validation on the training data alone.

1. Each prompt's features are computed once (e5 pooled layers, folded n-grams, structure cues).
2. Every candidate (a model kind, a feature set, a regularisation) is scored by its APGR on the
   held-out folds of repeated K-fold cross-validation; the best one is kept.
3. The figure reported as the estimate is nested: an outer K-fold in which the choice of step 2
   is made again on each outer training part, so the number does not flatter the choice.
4. The chosen candidate's out-of-fold raw scores calibrate strong_score (a logistic fit to "the
   strong model answered better") and give the score quantiles the routing thresholds come from.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.messages import FeatureSet

from .outcome_data import Outcomes, read_outcomes
from .router_eval import Metrics, metrics
from .router_model import FEATURE_SETS, QUANTILES, Featurizer, Neighbours, Ridge, RouterModel

FOLDS = 5
REPEATS = 3
MIN_PROMPTS = 20
PROGRESS_EVERY = 1000  # prompts between two progress lines while features are computed


@dataclass(frozen=True)
class Candidate:
    kind: str
    features: FeatureSet
    setting: float  # ridge's alpha, or the neighbours' k
    label: str = "pair"  # what is learned: strong - weak, or strong - the crowd's mean

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.features}/{self.setting:g}/{self.label}"

    def target(self, outcomes: Outcomes) -> np.ndarray:
        return outcomes.strong - (outcomes.crowd if self.label == "crowd" else outcomes.weak)

    def fit(self, x: np.ndarray, gain: np.ndarray) -> Ridge | Neighbours:
        if self.kind == "ridge":
            return Ridge.fit(x, gain, self.setting)
        return Neighbours.fit(x, gain, int(self.setting))


CANDIDATES = tuple(
    [Candidate("ridge", f, alpha, label) for label in ("pair", "crowd") for f in FEATURE_SETS
     for alpha in (0.3, 3.0, 30.0, 300.0)]
    + [Candidate("neighbours", "embedding", k, label) for label in ("pair", "crowd")
       for k in (10, 30, 100)]
)


def candidates(outcomes: Outcomes, features: str = "any") -> tuple[Candidate, ...]:
    """Those reading `features` ("any": all); the crowd's label only when lines hold more than
    the two compared scores."""
    pool = [c for c in CANDIDATES if features in ("any", c.features)]
    if np.array_equal(outcomes.crowd, outcomes.weak):
        pool = [c for c in pool if c.label == "pair"]
    return tuple(pool)


def feature_matrices(prompts: list[str], featurizer: Featurizer,
                     sets: Mapping[FeatureSet, tuple[str, ...]] = FEATURE_SETS,
                     progress: Callable[[int], None] = lambda done: None
                     ) -> dict[str, np.ndarray]:
    """Each of `sets`' matrix, every part they need computed once per prompt (and no other:
    e5 is most of the cost, and the lexical set needs none of it)."""
    parts = sorted({p for ps in sets.values() for p in ps})
    columns: dict[str, list[np.ndarray]] = {p: [] for p in parts}
    for i, text in enumerate(prompts):
        for part in parts:
            columns[part].append(featurizer(text, (part,)))
        progress(i + 1)
    stacked = {p: np.vstack(v) for p, v in columns.items()}
    return {name: np.hstack([stacked[p] for p in ps]) for name, ps in sets.items()}


def _every(step: int, total: int) -> Callable[[int], None]:
    def report(done: int) -> None:
        if done % step == 0 and done < total:
            print(f"features of {done:,}/{total:,} prompts", file=sys.stderr)
    return report


def folds(n: int, seed: int, k: int = FOLDS) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def out_of_fold(candidate: Candidate, x: np.ndarray, outcomes: Outcomes, seed: int
                ) -> np.ndarray:
    """Raw scores of each prompt by a model that did not see it."""
    target, raw = candidate.target(outcomes), np.empty(len(outcomes))
    for held in folds(len(outcomes), seed):
        train = np.setdiff1d(np.arange(len(outcomes)), held)
        raw[held] = candidate.fit(x[train], target[train]).raw(x[held])
    return raw


def held_out_metrics(raw: np.ndarray, outcomes: Outcomes, parts: list[np.ndarray]
                     ) -> list[Metrics]:
    """Each part's metrics; a part with no gap to recover (it can happen in a small fold) has
    none to give."""
    subsets = [(held, outcomes.subset(held)) for held in parts]
    return [metrics(raw[held], subset) for held, subset in subsets if subset.has_gap]


def cross_validated(candidate: Candidate, xs: dict[str, np.ndarray], outcomes: Outcomes,
                    seeds: range) -> tuple[float, float]:
    """Mean APGR and CPT(50%) over the held-out folds of REPEATS K-fold splits."""
    results = []
    for seed in seeds:
        raw = out_of_fold(candidate, xs[candidate.features], outcomes, seed)
        results += held_out_metrics(raw, outcomes, folds(len(outcomes), seed))
    return (float(np.mean([r.apgr for r in results])),
            float(np.mean([r.cpt50 for r in results])))


def choose(xs: dict[str, np.ndarray], outcomes: Outcomes, seeds: range, features: str = "any"
           ) -> tuple[Candidate, dict]:
    pool = candidates(outcomes, features)
    table = {c.name: cross_validated(c, xs, outcomes, seeds) for c in pool}
    best = max(pool, key=lambda c: table[c.name][0])
    return best, table


def nested_estimate(xs: dict[str, np.ndarray], outcomes: Outcomes, features: str) -> dict:
    """APGR and CPT(50%) of the whole procedure (choice included) on outer folds it never saw."""
    results = []
    for held in folds(len(outcomes), seed=1000):
        train = np.setdiff1d(np.arange(len(outcomes)), held)
        inner = {name: x[train] for name, x in xs.items()}
        best, _ = choose(inner, outcomes.subset(train), range(1), features)
        model = best.fit(inner[best.features], best.target(outcomes.subset(train)))
        raw = np.zeros(len(outcomes))
        raw[held] = model.raw(xs[best.features][held])
        results += held_out_metrics(raw, outcomes, [held])
    return {"apgr": round(float(np.mean([r.apgr for r in results])), 4),
            "apgr_sd": round(float(np.std([r.apgr for r in results])), 4),
            "cpt50": round(float(np.mean([r.cpt50 for r in results])), 4),
            "cpt80": round(float(np.mean([r.cpt80 for r in results])), 4)}


def calibrate(raw: np.ndarray, better: np.ndarray) -> tuple[float, float]:
    """A 1-d logistic fit (Newton, a little L2 so a separable set stays finite)."""
    scale = raw.std() or 1.0
    z = np.column_stack([raw / scale, np.ones_like(raw)])
    theta = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ theta)))
        hessian = z.T @ (z * (p * (1 - p))[:, None]) + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, z.T @ (p - better) + 1e-3 * theta)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(theta[0] / scale), float(theta[1])


def train(path: Path, weak: str | None = None, strong: str | None = None,
          featurizer: Featurizer | None = None, features: str = "any"
          ) -> tuple[RouterModel, dict]:
    """`features` limits the choice to one feature set: "lexical" needs no e5 embedding, so it
    adds well under a millisecond to a prompt the classifier's fast stage answered."""
    if features != "any" and features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}: use any, "
                         f"{', '.join(FEATURE_SETS)}")
    outcomes = read_outcomes(path, weak, strong)
    if len(outcomes) < MIN_PROMPTS:
        raise ValueError(f"{path} has {len(outcomes)} prompts; training needs {MIN_PROMPTS} "
                         "or more")
    featurizer = featurizer or Featurizer()
    print(f"features of {len(outcomes)} prompts …", file=sys.stderr)
    sets = {name: ps for name, ps in FEATURE_SETS.items() if features in ("any", name)}
    xs = feature_matrices(outcomes.prompts, featurizer, sets, _every(PROGRESS_EVERY,
                                                                     len(outcomes)))
    print("cross-validating …", file=sys.stderr)
    return fit(xs, outcomes, features, {
        "data": path.name, "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def fit(xs: dict[str, np.ndarray], outcomes: Outcomes, features: str, source: dict
        ) -> tuple[RouterModel, dict]:
    """Choose, estimate, calibrate and fit on feature matrices already computed (from prompts,
    or from the ledger's stored vectors); `source` says what the data was, in the model's
    meta."""
    best, table = choose(xs, outcomes, range(REPEATS), features)
    x = xs[best.features]
    oof = out_of_fold(best, x, outcomes, seed=0)
    calibration = calibrate(oof, (outcomes.gain > 0).astype(np.float64))
    report = {
        "prompts": len(outcomes),
        "weak": outcomes.weak_key,
        "strong": outcomes.strong_key,
        "chosen": best.name,
        "cross_validated": {"apgr": round(table[best.name][0], 4),
                            "cpt50": round(table[best.name][1], 4)},
        "nested": nested_estimate(xs, outcomes, features),
        "candidates": {name: {"apgr": round(v[0], 4), "cpt50": round(v[1], 4)}
                       for name, v in table.items()},
    }
    meta = {
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    } | source | {k: report[k] for k in ("prompts", "weak", "strong", "chosen",
                                          "cross_validated", "nested")}
    model = RouterModel(best.kind, FEATURE_SETS[best.features],
                        best.fit(x, best.target(outcomes)),
                        calibration, np.quantile(oof, QUANTILES), meta)
    return model, report
