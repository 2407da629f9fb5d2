"""What `smart-router eval-escalation` reports: how well the scorer's "weak" verdict matches the
truth, on a labelled set of answers, or on the provider emulator's market of models (through
the real SDKs), whose every answer says whether the emulator made it good or weak.

On answers labelled right or wrong it reports each signal's recall of wrong answers, its false
escalations (right answers escalated) and what it adds to the cheap answers' cost, and the same
for the signals combined as the escalator runs them: the free signals first, then the paid
checks in order until one finds the answer wrong.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.config import ModelRef, RouterConfig, VerifySignal
from shared.messages import Answer
from shared.pricing import Pricer
from shared.providers import Completion, ProviderError, Providers

from .scoring import Scorer
from .verify import Verifier, applies, task_type

IN_FLIGHT = 64
FREE = "free signals"  # the scorer's signals other than arithmetic, which is reported apart


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
            asked = await _ask_emulator(providers, ref, prompt, config, want_logprobs)
        if asked is None:
            return None
        _, verdict, answer = asked
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


@dataclass
class Judged:
    """One answer: whether it is truly wrong, what each signal said and what each cost."""

    wrong: bool
    answer_cost: float
    flags: dict[str, bool] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)


def free_flags(scorer: Scorer, answer: Answer, threshold: float) -> dict[str, bool]:
    score = scorer.score(answer)
    others = [s for s in score.signals if s != "arithmetic"]
    return {FREE: bool(others) and score.weak(threshold),
            "arithmetic": "arithmetic" in score.signals}


def _scorer_with_arithmetic(config: RouterConfig) -> Scorer:
    """The configured scorer, with the arithmetic re-check measured whether or not it is on."""
    signals = tuple(dict.fromkeys((*config.escalation.signals, "arithmetic")))
    return Scorer(config.escalation.model_copy(update={"signals": signals}))


async def paid_flags(verifier: Verifier | None, signals: Iterable[VerifySignal], prompt: str,
                     answer: str, judged: Judged) -> None:
    """Each paid signal run on its own (None verdicts count as not flagged)."""
    if verifier is None:
        return
    for signal in signals:
        if not applies(signal, prompt, answer):
            judged.flags[signal], judged.costs[signal] = False, 0.0
            continue
        wrong, call = await verifier.run(signal, prompt, answer, n=1, hop=1, tier="eval")
        judged.flags[signal], judged.costs[signal] = bool(wrong), call.cost_usd


def signal_table(judged: list[Judged], paid: Sequence[str]) -> dict:
    """Per signal and combined: recall of wrong answers, share of right answers escalated,
    added cost per 1,000 answers and as a share of the cheap answers' own cost."""
    answer_cost = sum(j.answer_cost for j in judged)

    def row(flagged: list[bool], costs: list[float]) -> dict:
        wrong = [f for f, j in zip(flagged, judged, strict=True) if j.wrong]
        right = [f for f, j in zip(flagged, judged, strict=True) if not j.wrong]
        added = sum(costs)
        return {
            "recall": round(sum(wrong) / len(wrong), 4) if wrong else None,
            "false_escalations": round(sum(right) / len(right), 4) if right else None,
            "added_cost_per_1000_usd": round(1000 * added / len(judged), 6) if judged else 0.0,
            "added_cost_pct": round(100 * added / answer_cost, 2) if answer_cost else None,
        }

    table = {name: row([j.flags[name] for j in judged], [j.costs.get(name, 0.0) for j in judged])
             for name in (FREE, "arithmetic", *paid)}
    combined_flags, combined_costs = [], []
    for j in judged:  # as the escalator runs them: paid checks only when the free ones pass
        flagged, cost = j.flags[FREE] or j.flags["arithmetic"], 0.0
        for name in paid if not flagged else ():
            cost += j.costs[name]
            if j.flags[name]:
                flagged = True
                break
        combined_flags.append(flagged)
        combined_costs.append(cost)
    table["combined"] = row(combined_flags, combined_costs)
    return {"answers": len(judged), "wrong": sum(j.wrong for j in judged),
            "cheap_answer_cost_usd": round(answer_cost, 8), "signals": table}


async def report_correctness(rows: list[dict], config: RouterConfig, pricer: Pricer,
                             verifier: Verifier | None) -> dict:
    """Rows: prompt, answer, label right|wrong, optional kind/task. The answers are priced as
    the cheapest tier's first model would bill them (about four bytes a token)."""
    cheap = config.tiers[0].models[0]
    gate = asyncio.Semaphore(IN_FLIGHT)
    scorer = _scorer_with_arithmetic(config)
    paid = list(config.escalation.verify.signals) if verifier is not None else []

    async def one(row: dict) -> Judged:
        answer = Answer(text=row["answer"], attempt=1, tier_index=0,
                        finish_reason=row.get("finish_reason", "stop"),
                        logprob_mean=row.get("logprob_mean"))
        judged = Judged(wrong=row["label"] == "wrong",
                        answer_cost=_estimated_cost(pricer, cheap, row["prompt"], row["answer"]),
                        flags=free_flags(scorer, answer, config.escalation.threshold))
        async with gate:
            await paid_flags(verifier, paid, row["prompt"], row["answer"], judged)
        return judged

    judged = await asyncio.gather(*(one(row) for row in rows))
    by_task: dict[str, list[Judged]] = defaultdict(list)
    for row, j in zip(rows, judged, strict=True):
        by_task[row.get("task") or task_type(row["prompt"])].append(j)
    return {**signal_table(judged, paid), "cheap_model": cheap.key,
            "by_task": {task: signal_table(js, paid)["signals"]["combined"]
                        for task, js in sorted(by_task.items())}}


async def report_market_correctness(prompts: list[str], config: RouterConfig, pricer: Pricer,
                                    providers: Providers, verifier: Verifier | None) -> dict:
    """The cheapest tier's first model answers each prompt on the emulator; the truth is the
    market's own verdict (good, or weak/wrong), which the signals never see."""
    cheap = config.tiers[0].models[0]
    gate = asyncio.Semaphore(IN_FLIGHT)
    scorer = _scorer_with_arithmetic(config)
    paid = list(config.escalation.verify.signals) if verifier is not None else []

    async def one(prompt: str) -> Judged | None:
        async with gate:
            asked = await _ask_emulator(providers, cheap, prompt, config, True)
            if asked is None:
                return None
            completion, verdict, answer = asked
            judged = Judged(wrong=verdict != "good",
                            answer_cost=pricer.cost(cheap, completion.input_tokens,
                                                    completion.output_tokens),
                            flags=free_flags(scorer, answer, config.escalation.threshold))
            await paid_flags(verifier, paid, prompt, completion.text, judged)
            return judged

    judged = [j for j in await asyncio.gather(*(one(p) for p in prompts)) if j is not None]
    return {**signal_table(judged, paid), "cheap_model": cheap.key}


async def _ask_emulator(
    providers: Providers, ref: ModelRef, prompt: str, config: RouterConfig, logprobs: bool,
) -> tuple[Completion, str, Answer] | None:
    """One answer from the emulator with its market's verdict, as the escalator would see it;
    None when the call failed."""
    try:
        completion = await providers.get(ref.provider).complete(
            ref.model, [{"role": "user", "content": prompt}],
            max_tokens=config.limits.default_max_tokens, temperature=None,
            timeout=config.limits.provider_timeout_s, logprobs=logprobs)
    except ProviderError:
        return None
    verdict = completion.extra.get("emulator_verdict")
    if verdict is None:
        raise RuntimeError("this provider is not the emulator: its answers carry no verdict")
    answer = Answer(text=completion.text, attempt=1, tier_index=0,
                    finish_reason=completion.finish_reason, logprob_mean=completion.logprob_mean)
    return completion, verdict, answer


def _estimated_cost(pricer: Pricer, ref: ModelRef, prompt: str, answer: str) -> float:
    return pricer.cost(ref, len(prompt.encode()) // 4 + 8, len(answer.encode()) // 4 + 1)
