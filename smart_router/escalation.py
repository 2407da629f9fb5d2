"""`smart-router eval-escalation`: the escalator's scorer in this process, no NATS."""

from __future__ import annotations

import os
from pathlib import Path

from services.escalator.evaluate import report_labelled, report_market
from services.escalator.scoring import Scorer
from shared import jsonl
from shared.config import config
from shared.providers import Providers

ANSWERS = Path(__file__).resolve().parent.parent / "services/escalator/data/answers.jsonl"
PROMPTS = Path(__file__).resolve().parent.parent / "services/classifier/data/test.jsonl"


async def evaluate(file: Path | None, emulator: str | None, prompts: Path | None) -> dict:
    settings = config()
    scorer = Scorer(settings.escalation)
    if emulator is None:
        rows = jsonl.read_objects(file or ANSWERS)
        return {"source": str(file or ANSWERS),
                **report_labelled(scorer, rows, settings.escalation.threshold)}
    base = emulator.rstrip("/")
    for variable, value in {"OPENAI_BASE_URL": f"{base}/v1", "ANTHROPIC_BASE_URL": base,
                            "GROQ_BASE_URL": base, "OPENAI_API_KEY": "emulated",
                            "ANTHROPIC_API_KEY": "emulated", "GROQ_API_KEY": "emulated"}.items():
        os.environ[variable] = value
    texts = [row["prompt"] for row in jsonl.read_objects(prompts or PROMPTS)]
    return {"source": f"emulator {base}, {len(texts)} prompts",
            **await report_market(scorer, texts, settings, Providers())}


def render(report: dict) -> str:
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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
