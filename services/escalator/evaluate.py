"""What `smart-router eval-escalation` reports: how well the scorer's "weak" verdict matches the
truth, on a labelled set of answers, or on the provider emulator's market of models (through
the real SDKs), whose every answer says whether the emulator made it good or weak."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable

from shared.config import RouterConfig
from shared.messages import Answer
from shared.providers import ProviderError, Providers

from .scoring import Scorer

IN_FLIGHT = 64


def report_labelled(scorer: Scorer, rows: list[dict], threshold: float) -> dict:
    """Rows: prompt, answer, finish_reason, label (weak|good), optional kind and lang."""
    results = []
    for row in rows:
        answer = Answer(text=row["answer"], attempt=1, tier_index=0,
                        finish_reason=row.get("finish_reason", "stop"),
                        logprob_mean=row.get("logprob_mean"))
        score = scorer.score(answer)
        results.append((row, score.weak(threshold), score.signals))
    summary = _confusion((row["label"] == "weak", flagged) for row, flagged, _ in results)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_lang: dict[str, list[bool]] = defaultdict(list)
    for row, flagged, _ in results:
        by_kind[row.get("kind", row["label"])].append(flagged)
        by_lang[row.get("lang", "und")].append(flagged == (row["label"] == "weak"))
    return {
        "answers": len(rows),
        **summary,
        "escalated_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())},
        "agreement_by_language": {k: round(sum(v) / len(v), 4)
                                  for k, v in sorted(by_lang.items())},
        "signals": dict(Counter(s for _, _, signals in results for s in signals)),
    }


async def report_market(scorer: Scorer, prompts: list[str], config: RouterConfig,
                        providers: Providers) -> dict:
    """Every prompt to each tier's first model; truth is the emulator's own verdict."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    models = [tier.models[0] for tier in config.tiers]
    want_logprobs = "logprob" in config.escalation.signals

    async def one(prompt: str, ref) -> tuple[str, bool, bool] | None:
        async with gate:
            try:
                completion = await providers.get(ref.provider).complete(
                    ref.model, [{"role": "user", "content": prompt}],
                    max_tokens=config.limits.default_max_tokens, temperature=None,
                    timeout=config.limits.provider_timeout_s, logprobs=want_logprobs)
            except ProviderError:
                return None
        verdict = completion.extra.get("emulator_verdict")
        if verdict is None:
            raise RuntimeError("this provider is not the emulator: its answers carry no verdict")
        answer = Answer(text=completion.text, attempt=1, tier_index=0,
                        finish_reason=completion.finish_reason,
                        logprob_mean=completion.logprob_mean)
        weak = scorer.score(answer).weak(config.escalation.threshold)
        return ref.model, verdict != "good", weak

    outcomes = [r for r in await asyncio.gather(*(one(p, m) for p in prompts for m in models))
                if r is not None]
    by_model = {
        ref.model: _confusion((truth, flagged) for model, truth, flagged in outcomes
                              if model == ref.model)
        for ref in models
    }
    return {"answers": len(outcomes), **_confusion((t, f) for _, t, f in outcomes),
            "by_model": by_model}


def _confusion(pairs: Iterable[tuple[bool, bool]]) -> dict:
    """(truly weak, flagged weak) pairs -> precision and recall of the weak verdict."""
    counts = Counter(pairs)
    tp, fp = counts[(True, True)], counts[(False, True)]
    fn, tn = counts[(True, False)], counts[(False, False)]
    return {
        "weak": tp + fn,
        "good": fp + tn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,  # = weak answers escalated
        "good_escalated": round(fp / (fp + tn), 4) if fp + tn else None,
    }
