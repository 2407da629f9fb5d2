"""`smart-router classify` and `smart-router eval`: the classifier in this process, no NATS."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from services.classifier.chain import Classifier
from services.classifier.evaluate import report, score
from services.classifier.local_model import LocalModel
from shared.config import config


async def classify_lines(lines: list[str], backend: str | None,
                         emit: Callable[[dict], None]) -> int:
    settings = config().classifier
    if backend is not None:
        if backend not in ("ollama", "local", "rules"):
            raise ValueError(f"unknown backend {backend!r}: use ollama, local or rules")
        settings = settings.model_copy(update={"backends": (backend,)})
    classifier = Classifier(settings)
    failures = 0
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        result: dict = {"index": index}
        try:
            row = json.loads(line)
            text = row["prompt"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the prompt is empty")
        except (ValueError, KeyError, TypeError) as exc:
            failures += 1
            reason = str(exc) if isinstance(exc, ValueError) else "each line needs a 'prompt'"
            emit(result | {"error": {"code": "invalid_request", "message": reason}})
            continue
        for passthrough in ("id", "request_id"):
            if passthrough in row:
                result[passthrough] = row[passthrough]
        verdict = await classifier.classify(text)
        emit(result | {"difficulty": verdict.difficulty, "confidence": round(verdict.confidence, 4),
                       "backend": verdict.backend, "latency_ms": round(verdict.latency_ms, 3)})
    return 1 if failures else 0


def evaluate_file(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    model = LocalModel()
    model.warm_up()
    print(f"evaluating the local classifier on {len(rows)} prompts …", file=sys.stderr)
    return report(score(model, rows), config())


def render_report(r: dict) -> str:
    out = [
        f"prompts {r['prompts']}   bias {r['bias']}",
        f"accuracy {r['accuracy']:.1%}   complex tagged simple {r['complex_tagged_simple']:.1%}"
        f"   under-routed {r['under_routed']:.1%}   over-routed {r['over_routed']:.1%}",
        "",
        "confusion (rows: label, columns: predicted)",
        f"{'':>10} {'simple':>8} {'medium':>8} {'complex':>8}",
    ]
    for label, row in r["confusion"].items():
        out.append(f"{label:>10} {row['simple']:>8} {row['medium']:>8} {row['complex']:>8}")
    out += ["", "per language"]
    out += [f"  {lang:<4} {v['accuracy']:.1%}  ({v['prompts']})"
            for lang, v in r["per_language"].items()]
    lat = r["latency_ms"]
    out += ["", f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
                f"max {lat['max']}   stages {r['stages']}   max RSS {r['max_rss_mb']} MB",
            "", "bias  accuracy  under  complex->simple  over   $ per 1k requests"]
    out += [f"{b['bias']:<5} {b['accuracy']:>8.1%} {b['under_routed']:>6.1%} "
            f"{b['complex_tagged_simple']:>16.1%} {b['over_routed']:>5.1%} "
            f"{b['cost_per_1k_requests_usd']:>10.4f}" for b in r["bias_effect"]]
    return "\n".join(out)
