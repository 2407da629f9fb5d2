"""What `smart-router eval` reports for a labelled JSONL (`prompt`, `label`, optional `lang`):
accuracy, the confusion matrix, per-language accuracy, latency, memory, and how the cost/quality
knob (`classifier.bias`) moves accuracy, under-routing and cost."""

from __future__ import annotations

import resource
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from shared.config import DIFFICULTIES, Difficulty, RouterConfig
from shared.pricing import Pricer

from .decision import decide
from .local_model import LocalModel

BIAS_VALUES = (0.0, 0.1, 0.2, 0.3, 0.5)
# The token mix behind the cost column: a typical chat turn.
INPUT_TOKENS, OUTPUT_TOKENS = 400, 300


@dataclass
class Scored:
    label: Difficulty
    lang: str
    probabilities: np.ndarray
    stage: str
    latency_ms: float


def score(model: LocalModel, rows: list[dict]) -> list[Scored]:
    scored = []
    for row in rows:
        started = time.perf_counter()
        prediction = model.predict(row["prompt"])
        latency = (time.perf_counter() - started) * 1000
        scored.append(Scored(row["label"], row.get("lang", "und"), prediction.probabilities,
                             prediction.stage, latency))
    return scored


def report(scored: list[Scored], config: RouterConfig) -> dict:
    bias = config.classifier.bias
    labels = [s.label for s in scored]
    predicted = [decide(s.probabilities, bias)[0] for s in scored]
    latencies = np.array([s.latency_ms for s in scored])
    by_lang: dict[str, list[bool]] = defaultdict(list)
    for s, p in zip(scored, predicted, strict=True):
        by_lang[s.lang].append(s.label == p)
    return {
        "prompts": len(scored),
        "bias": bias,
        **_routing(labels, predicted),
        "confusion": {
            label: {p: sum(1 for t, q in zip(labels, predicted, strict=True)
                           if t == label and q == p) for p in DIFFICULTIES}
            for label in DIFFICULTIES
        },
        "per_language": {
            lang: {"prompts": len(hits), "accuracy": round(sum(hits) / len(hits), 4)}
            for lang, hits in sorted(by_lang.items())
        },
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 3),
            "p90": round(float(np.percentile(latencies, 90)), 3),
            "p99": round(float(np.percentile(latencies, 99)), 3),
            "max": round(float(latencies.max()), 3),
        },
        "stages": dict(Counter(s.stage for s in scored)),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bias_effect": [
            {"bias": b, **_routing(labels, [decide(s.probabilities, b)[0] for s in scored]),
             "cost_per_1k_requests_usd": _cost_per_1k(
                 [decide(s.probabilities, b)[0] for s in scored], config)}
            for b in BIAS_VALUES
        ],
    }


def _routing(labels: list[Difficulty], predicted: list[Difficulty]) -> dict:
    n = len(labels)
    rank = {d: i for i, d in enumerate(DIFFICULTIES)}
    complex_total = sum(1 for t in labels if t == "complex")
    return {
        "accuracy": round(sum(t == p for t, p in zip(labels, predicted, strict=True)) / n, 4),
        "under_routed": round(sum(rank[p] < rank[t]
                                  for t, p in zip(labels, predicted, strict=True)) / n, 4),
        "over_routed": round(sum(rank[p] > rank[t]
                                 for t, p in zip(labels, predicted, strict=True)) / n, 4),
        "complex_tagged_simple": round(
            sum(t == "complex" and p == "simple" for t, p in zip(labels, predicted, strict=True))
            / max(complex_total, 1), 4),
    }


def _cost_per_1k(predicted: list[Difficulty], config: RouterConfig) -> float:
    """What 1,000 such requests cost at their starting tiers' first models."""
    pricer = Pricer(config.pricing)
    each = {d: pricer.cost(config.tiers[config.start_tier(d)].models[0], INPUT_TOKENS,
                           OUTPUT_TOKENS) for d in DIFFICULTIES}
    return round(sum(each[p] for p in predicted) / len(predicted) * 1000, 4)
