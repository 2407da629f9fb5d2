"""`smart-router classify` and `smart-router eval`: the classifier in this process, no NATS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from services.classifier.chain import Classifier, NoVerdict
from services.classifier.evaluate import report, score
from services.classifier.local_model import LocalModel
from shared import jsonl
from shared.config import DIFFICULTIES, ClassifierConfig, config

from .errors import CommandFailed

log = structlog.get_logger(__name__)

BACKENDS = ("ollama", "local", "rules")
# Long enough for a LAN host to accept; a refused local port answers in well under 1 ms.
OLLAMA_PROBE_TIMEOUT_S = 0.3


async def classify_lines(lines: list[tuple[int, str]], backend: str | None,
                         emit: Callable[[dict], None], router_model: Path | None = None) -> int:
    """Classify each numbered JSONL line; `index` is the 0-based line number in the file.
    With `router_model`, each result also has the learned strong_score and its routing row."""
    settings = config().classifier
    if router_model is not None:
        settings = settings.model_copy(update={"router_model": str(router_model)})
    classifier = await _classifier(settings, backend)
    # Loaded before the first prompt, so latency_ms is what each prompt costs: e5's lazy load
    # (about 1.6 s here) once counted in the first unsure prompt's figure.
    await asyncio.to_thread(classifier.warm_up)
    failures = 0
    for number, line in lines:
        result: dict = {"index": number - 1}
        try:
            row = _prompt_row(line)
        except ValueError as exc:
            failures += 1
            emit(result | {"error": {"code": "invalid_request", "message": str(exc)}})
            continue
        for passthrough in ("id", "request_id"):
            if passthrough in row:
                result[passthrough] = row[passthrough]
        try:
            verdict = await classifier.classify(row["prompt"])
        except NoVerdict as exc:
            failures += 1
            emit(result | {"error": {"code": "backend_failed", "message": str(exc)}})
            continue
        if verdict.strong_score is not None:
            result |= {"strong_score": round(verdict.strong_score, 4),
                       "routed_as": verdict.routed_as}
        emit(result | {"difficulty": verdict.difficulty, "confidence": round(verdict.confidence, 4),
                       "backend": verdict.backend, "latency_ms": round(verdict.latency_ms, 3)})
    return 1 if failures else 0


def _prompt_row(line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(row, dict) or "prompt" not in row:
        raise ValueError("each line needs a 'prompt'")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise ValueError("the prompt is empty")
    return row


async def _classifier(settings: ClassifierConfig, only: str | None) -> Classifier:
    """The configured chain, or `only` that backend with no rules standing in for it.

    Ollama is probed with one TCP connect first: when nothing listens, the chain goes on without
    it, instead of importing its SDK and trying a connection on the first prompt (300+ ms)."""
    if only is not None and only not in BACKENDS:
        raise ValueError(f"unknown backend {only!r}: use {', '.join(BACKENDS)}")
    backends: tuple[str, ...] = (only,) if only else settings.backends
    if "ollama" in backends:
        host, port = ollama_address(os.environ.get("OLLAMA_HOST"))
        problem = await _unreachable(host, port)
        if problem and only:
            raise CommandFailed(f"cannot reach Ollama at {host}:{port} ({problem}): "
                                "start it, or point OLLAMA_HOST at it")
        if problem:
            log.debug("classify.ollama_skipped", address=f"{host}:{port}", reason=problem)
            backends = tuple(b for b in backends if b != "ollama") or ("rules",)
    routing = config().routing
    return Classifier(settings.model_copy(update={"backends": backends}),
                      rules_fallback=only is None,
                      router_shares=(routing.strong_share, routing.medium_share))


def ollama_address(host: str | None) -> tuple[str, int]:
    """Where the ollama SDK connects for this OLLAMA_HOST: 127.0.0.1 by default, port 11434
    unless a scheme is given without one (then 80 or 443)."""
    raw = (host or "").strip()
    scheme, has_scheme, rest = raw.partition("://")
    if not has_scheme:
        scheme, rest = "http", raw
    url = urlsplit(f"{scheme}://{rest}")
    default_port = ({"https": 443}.get(scheme, 80)) if has_scheme else 11434
    return url.hostname or "127.0.0.1", url.port or default_port


async def _unreachable(host: str, port: int) -> str | None:
    """Why nothing accepts a TCP connection at host:port, or None when something does."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                           OLLAMA_PROBE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {OLLAMA_PROBE_TIMEOUT_S:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    return None


def evaluate_file(path: Path) -> dict:
    rows = jsonl.read_objects(path, _unlabelled)
    if not rows:
        raise CommandFailed(f"{path} has no labelled prompt")
    model = LocalModel()
    model.warm_up()
    print(f"evaluating the local classifier on {len(rows)} prompts …", file=sys.stderr)
    return report(score(model, rows), config())


def _unlabelled(row: dict) -> str | None:
    if isinstance(row.get("prompt"), str) and row.get("label") in DIFFICULTIES:
        return None
    return f"needs a 'prompt' and a 'label' ({', '.join(DIFFICULTIES)})"


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
    out += [f"  {lang:<4} {v['accuracy']:>6.1%}  ({v['prompts']})"
            for lang, v in r["per_language"].items()]
    lat = r["latency_ms"]
    out += ["", f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
                f"max {lat['max']}   stages {r['stages']}   max RSS {r['max_rss_mb']} MB",
            "", "bias  accuracy  under  complex->simple  over   $ per 1k requests"]
    out += [f"{b['bias']:<5} {b['accuracy']:>8.1%} {b['under_routed']:>6.1%} "
            f"{b['complex_tagged_simple']:>16.1%} {b['over_routed']:>5.1%} "
            f"{b['cost_per_1k_requests_usd']:>10.4f}" for b in r["bias_effect"]]
    return "\n".join(out)
