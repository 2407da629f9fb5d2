"""`smart-router eval-escalation`: the escalator's scorer in this process, no NATS."""

from __future__ import annotations

import os
from pathlib import Path

from services.escalator.evaluate import (
    report_correctness,
    report_labelled,
    report_market,
    report_market_correctness,
)
from services.escalator.scoring import Scorer
from services.escalator.verify import Verifier
from shared import jsonl
from shared.config import RouterConfig, config
from shared.pricing import Pricer
from shared.providers import Providers

DATA = Path(__file__).resolve().parent.parent / "services/escalator/data"
ANSWERS = DATA / "answers.jsonl"
CORRECTNESS = DATA / "correctness.jsonl"
PROMPTS = Path(__file__).resolve().parent.parent / "services/classifier/data/test.jsonl"


async def evaluate(file: Path | None, emulator: str | None, prompts: Path | None,
                   verify: bool = False) -> dict:
    """The labelled answers in `file` (weak|good, or right|wrong), or the emulator's market
    answering `prompts`; `verify` adds the paid checks of [escalation.verify], through the
    configured providers (the emulator's, with --emulator)."""
    settings = config()
    if emulator is not None:
        _use_emulator(emulator)
    providers = Providers()
    try:
        return await _evaluate(settings, providers, file, emulator, prompts, verify)
    finally:
        await providers.aclose()


async def _evaluate(settings: RouterConfig, providers: Providers, file: Path | None,
                    emulator: str | None, prompts: Path | None, verify: bool) -> dict:
    scorer = Scorer(settings.escalation)
    pricer = Pricer(settings.pricing)
    verifier = _verifier(settings, providers, pricer) if verify else None
    if emulator is None or file is not None:
        source = file or (CORRECTNESS if verify else ANSWERS)
        rows = jsonl.read_objects(source)
        if rows and rows[0]["label"] in ("right", "wrong"):
            return {"source": str(source), "through": _through(emulator, verify),
                    **await report_correctness(rows, settings, pricer, verifier)}
        return {"source": str(source),
                **report_labelled(scorer, rows, settings.escalation.threshold)}
    base = emulator.rstrip("/")
    if verify:
        texts = list(dict.fromkeys(row["prompt"]
                                   for row in jsonl.read_objects(prompts or CORRECTNESS)))
        return {"source": f"emulator {base}, {len(texts)} prompts",
                "through": _through(emulator, verify),
                **await report_market_correctness(texts, settings, pricer, providers,
                                                  verifier)}
    texts = [row["prompt"] for row in jsonl.read_objects(prompts or PROMPTS)]
    return {"source": f"emulator {base}, {len(texts)} prompts",
            **await report_market(scorer, texts, settings, providers)}


def _use_emulator(url: str) -> None:
    base = url.rstrip("/")
    for variable, value in {"OPENAI_BASE_URL": f"{base}/v1", "ANTHROPIC_BASE_URL": base,
                            "GROQ_BASE_URL": base, "OLLAMA_HOST": base,
                            "OPENAI_API_KEY": "emulated", "ANTHROPIC_API_KEY": "emulated",
                            "GROQ_API_KEY": "emulated"}.items():
        os.environ[variable] = value


def _verifier(settings: RouterConfig, providers: Providers, pricer: Pricer) -> Verifier:
    """The configured checks, on whether or not the router has them enabled."""
    return Verifier(settings.escalation.verify.model_copy(update={"enabled": True}),
                    providers, pricer)


def _through(emulator: str | None, verify: bool) -> str:
    if not verify:
        return "free signals only"
    if emulator is not None:
        return "paid checks answered by the emulator: these figures measure the emulator"
    return "paid checks answered by the configured providers"


def render(report: dict) -> str:
    if "cheap_model" in report:  # answers labelled right|wrong
        return render_correctness(report)
    lines = [
        f"{report['source']}: {report['answers']} answers "
        f"({report['weak']} weak, {report['good']} good)",
        f"weak verdict: precision {_pct(report['precision'])}  recall {_pct(report['recall'])}",
        f"weak answers escalated {_pct(report['recall'])}   "
        f"good answers escalated {_pct(report['good_escalated'])}",
    ]
    for title, key in (("by kind: share escalated", "escalated_by_kind"),
                       ("by language: verdicts right", "agreement_by_language")):
        if key in report:
            lines += ["", title] + [f"  {k:<22} {v:.1%}" for k, v in report[key].items()]
    if "by_model" in report:
        lines += ["", "by model"] + [
            f"  {m:<26} weak escalated {_pct(r['recall'])}  good escalated "
            f"{_pct(r['good_escalated'])}  ({r['weak']} weak, {r['good']} good)"
            for m, r in report["by_model"].items()
        ]
    return "\n".join(lines)


def render_correctness(report: dict) -> str:
    lines = [f"{report['source']}: {report['answers']} answers ({report['wrong']} wrong), "
             f"cheap answers priced as {report['cheap_model']}",
             f"({report['through']})", "",
             f"  {'signal':<14} {'recall':>8} {'false esc.':>11} {'$ per 1k':>10} {'added':>8}"]
    for name, row in report["signals"].items():
        added = "n/a" if row["added_cost_pct"] is None else f"{row['added_cost_pct']}%"
        lines.append(f"  {name:<14} {_pct(row['recall']):>8} "
                     f"{_pct(row['false_escalations']):>11} "
                     f"{row['added_cost_per_1000_usd']:>10.4f} {added:>8}")
    for task, row in report.get("by_task", {}).items():
        lines.append(f"  combined, {task:<9} recall {_pct(row['recall'])}  false escalations "
                     f"{_pct(row['false_escalations'])}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
