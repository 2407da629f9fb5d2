"""RouteLLM's routing metrics (Ong et al., arXiv 2406.18665, section 3.2), from the definitions.

A router gives each prompt a score; a threshold sends the prompts scoring at or above it to the
strong model. The thresholds are the score's deciles, as in the paper's evaluation, plus one
above the highest score (no strong call). At each threshold:
- the strong share is the fraction of prompts sent up (the cost axis);
- the performance is the mean score of the answers the routing picks;
- PGR = (performance - weak's) / (strong's - weak's), the part of the gap recovered.
APGR is the area under PGR over the strong share (trapezoids between the thresholds' points, the
curve running from 0% to 100% of calls); a random router's expectation is 0.5. CPT(x) is the
smallest strong share at which the curve, joined point to point, reaches PGR = x.

Ties need no rule of their own: every prompt with the same score lands on the same side of a
threshold, so a router that scores everything alike has the two end points only (APGR 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .outcome_data import Outcomes

DECILES = np.linspace(0.0, 1.0, 11)
RANDOM_RUNS = 10


@dataclass(frozen=True)
class Curve:
    strong_share: np.ndarray  # increasing, from 0 to 1
    pgr: np.ndarray


@dataclass(frozen=True)
class Metrics:
    apgr: float
    cpt50: float
    cpt80: float

    def as_dict(self) -> dict:
        return {"apgr": round(self.apgr, 4), "cpt50": round(self.cpt50, 4),
                "cpt80": round(self.cpt80, 4)}


def curve(scores: np.ndarray, outcomes: Outcomes) -> Curve:
    weak_mean, strong_mean = outcomes.weak.mean(), outcomes.strong.mean()
    if strong_mean <= weak_mean:
        raise ValueError(f"'{outcomes.strong_key}' does not score above '{outcomes.weak_key}' on "
                         "average: there is no gap to recover")
    thresholds = np.quantile(scores, DECILES)
    up = [scores >= t for t in thresholds] + [np.zeros(len(scores), dtype=bool)]
    share = np.array([mask.mean() for mask in up])
    performance = np.array([np.where(mask, outcomes.strong, outcomes.weak).mean() for mask in up])
    order = np.argsort(share, kind="stable")
    return Curve(share[order], (performance[order] - weak_mean) / (strong_mean - weak_mean))


def metrics(scores: np.ndarray, outcomes: Outcomes) -> Metrics:
    c = curve(np.asarray(scores, dtype=np.float64), outcomes)
    return Metrics(float(np.trapezoid(c.pgr, c.strong_share)), cpt(c, 0.5), cpt(c, 0.8))


def cpt(c: Curve, target: float) -> float:
    """The smallest strong share at which PGR reaches `target` (1.0 if it never does)."""
    if c.pgr[0] >= target:
        return float(c.strong_share[0])
    for i in range(1, len(c.pgr)):
        if c.pgr[i] >= target:
            x0, x1, y0, y1 = c.strong_share[i - 1], c.strong_share[i], c.pgr[i - 1], c.pgr[i]
            return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))
    return 1.0


def random_router(outcomes: Outcomes, runs: int = RANDOM_RUNS) -> dict:
    """Mean and spread of `runs` seeded random routers (seeds 0..runs-1)."""
    results = [metrics(np.random.default_rng(seed).random(len(outcomes)), outcomes)
               for seed in range(runs)]
    summary = {}
    for name in ("apgr", "cpt50", "cpt80"):
        values = np.array([getattr(r, name) for r in results])
        summary[name] = round(float(values.mean()), 4)
        summary[f"{name}_sd"] = round(float(values.std()), 4)
    return summary


def report(outcomes: Outcomes, routers: dict[str, np.ndarray]) -> dict:
    """Each named router's metrics beside the random router's and the gap's ends."""
    return {
        "prompts": len(outcomes),
        "weak": {"key": outcomes.weak_key, "mean": round(float(outcomes.weak.mean()), 4)},
        "strong": {"key": outcomes.strong_key, "mean": round(float(outcomes.strong.mean()), 4)},
        "routers": {name: metrics(scores, outcomes).as_dict() for name, scores in routers.items()}
        | {"random": random_router(outcomes)},
    }


def render(r: dict) -> str:
    lines = [f"prompts {r['prompts']}   weak {r['weak']['key']} (mean {r['weak']['mean']})   "
             f"strong {r['strong']['key']} (mean {r['strong']['mean']})", "",
             f"{'router':<16} {'APGR':>7} {'CPT(50%)':>9} {'CPT(80%)':>9}"]
    for name, m in r["routers"].items():
        spread = f"  ±{m['apgr_sd']:.3f} over {RANDOM_RUNS} seeds" if "apgr_sd" in m else ""
        lines.append(f"{name:<16} {m['apgr']:>7.3f} {m['cpt50']:>9.1%} {m['cpt80']:>9.1%}{spread}")
    return "\n".join(lines)
