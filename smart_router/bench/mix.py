"""`smart-router bench --mix 70/20/10`: what routing saves, set beside what it costs in quality.

Prompts of the classifier's test split, labelled simple/medium/complex, are drawn in the mix's
proportions and sent through the whole running pipeline twice: routed as usual, then pinned to
the top tier (what "always use the top tier" answers, in the same run). Cost, baseline and the
escalation split come from the replies, which carry what the ledger records. Quality is the share
of final answers the provider emulator's market counts as adequate: the bench asks the emulator's
control API for its verdict on each (provider, model, prompt) served, so the router, which only
sees answers, is judged by an opinion it never reads.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from nats.aio.client import Client

from shared import subjects
from shared.config import DIFFICULTIES, ModelRef, RouterConfig

REPLY_TIMEOUT_S = 120.0
OVERLOADED_TRIES = 20  # an `overloaded` refusal is asked again, after its retry hint
SAMPLE_SEED = 15
VERDICT_BATCH = 500


@dataclass(frozen=True)
class Mix:
    """Shares of simple, medium and complex prompts, e.g. 70/20/10."""

    shares: tuple[float, float, float]

    @classmethod
    def parse(cls, text: str) -> Mix:
        parts = text.split("/")
        try:
            shares = tuple(float(p) for p in parts)
        except ValueError:
            shares = ()
        if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"--mix {text!r}: give three non-negative shares of simple/medium/"
                             "complex prompts, e.g. 70/20/10")
        return cls(shares)

    def counts(self, total: int) -> dict[str, int]:
        """`total` split in these proportions, rounded so that the counts add up to it."""
        exact = [total * s / sum(self.shares) for s in self.shares]
        counts = [int(x) for x in exact]
        by_remainder = sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in by_remainder[: total - sum(counts)]:
            counts[i] += 1
        return dict(zip(DIFFICULTIES, counts, strict=True))

    def label(self) -> str:
        return "/".join(f"{s:g}" for s in self.shares)


def draw(path: Path, counts: dict[str, int]) -> list[tuple[str, str]]:
    """(label, prompt) pairs: each label's prompts in a fixed shuffled order, reused from the
    start when the run wants more than the split holds."""
    by_label: dict[str, list[str]] = {label: [] for label in DIFFICULTIES}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                by_label[row["label"]].append(row["prompt"])
    rng = random.Random(SAMPLE_SEED)
    drawn = []
    for label, wanted in counts.items():
        pool = by_label[label]
        if wanted and not pool:
            raise ValueError(f"{path} has no {label} prompt")
        rng.shuffle(pool)
        drawn += [(label, pool[i % len(pool)]) for i in range(wanted)]
    rng.shuffle(drawn)
    return drawn


async def ask_all(nc: Client, prompts: list[str], tenant: str, concurrency: int,
                  tier: str | None = None) -> list[dict]:
    """Each prompt on router.v1.chat, `concurrency` at a time; the replies in prompt order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> dict:
        body = {"prompt": prompt, "tenant": tenant, **({"tier": tier} if tier else {})}
        async with gate:
            for _ in range(OVERLOADED_TRIES):
                msg = await nc.request(subjects.CHAT, json.dumps(body).encode(),
                                       timeout=REPLY_TIMEOUT_S)
                reply = json.loads(msg.data)
                error = reply.get("error") or {}
                if error.get("code") != "overloaded":
                    return reply
                await asyncio.sleep(error.get("retry_after_s") or 1.0)
            return reply

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def market_verdicts(emulator: str, prompts: list[str], replies: list[dict]
                          ) -> list[str | None]:
    """The emulator's verdict on each reply's final answer; None for an error reply or a model
    the emulator does not serve (a real provider's answer cannot be judged here)."""
    answers = [{"provider": r.get("provider"), "model": r.get("model_used"), "prompt": p}
               for p, r in zip(prompts, replies, strict=True)]
    found = await _ask_verdicts(emulator, answers)
    return [v if "error" not in r else None for v, r in zip(found, replies, strict=True)]


async def baseline_quality(emulator: str, prompts: list[str], model: ModelRef) -> float | None:
    """The share of the prompts the market counts as answered well by the baseline model (its
    verdict, no call made): what "every request on the baseline model" would have delivered,
    whatever the top tier's first model is. None when the emulator does not serve it."""
    answers = [{"provider": model.provider, "model": model.model, "prompt": p} for p in prompts]
    verdicts = await _ask_verdicts(emulator, answers)
    if not verdicts or None in verdicts:
        return None
    return round(verdicts.count("good") / len(verdicts), 4)


async def _ask_verdicts(emulator: str, answers: list[dict]) -> list[str | None]:
    url = f"{emulator.rstrip('/')}/_emulator/verdicts"
    found: list[str | None] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for start in range(0, len(answers), VERDICT_BATCH):
            batch = answers[start:start + VERDICT_BATCH]
            async with http.post(url, json={"answers": batch}) as response:
                if response.status != 200:
                    raise RuntimeError(f"the emulator at {emulator} gave no verdicts "
                                       f"(HTTP {response.status}): {await response.text()}")
                found += (await response.json())["verdicts"]
    return found


def tally(replies: list[dict], verdicts: list[str | None]) -> dict:
    """Cost, baseline, escalations and quality of one run, as the ledger counts them: cost and
    baseline over answered requests; escalation cost is what the answers not served cost, the
    checks' (judge, verify) apart."""
    ok = [r for r in replies if "error" not in r]
    cost = sum(r["cost_usd"] for r in ok)
    baseline = sum(r["baseline_cost_usd"] for r in ok)
    served = sum(_served_cost(r) for r in ok)
    checks = sum(a["cost_usd"] for r in ok for a in r["attempts"]
                 if a["outcome"] in ("judge", "verify"))
    escalated = sum(1 for r in ok if r["escalated"])
    good = sum(1 for v in verdicts if v == "good")
    return {
        "requests": len(replies),
        "answered": len(ok),
        "errors": dict(Counter(r["error"]["code"] for r in replies if "error" in r)),
        "cost_usd": round(cost, 10),
        "baseline_usd": round(baseline, 10),
        "savings_pct": round(100 * (baseline - cost) / baseline, 2) if baseline else None,
        "answer_cost_usd": round(served, 10),
        "escalation_cost_usd": round(cost - served - checks, 10),
        "checks_cost_usd": round(checks, 10),
        "escalated": escalated,
        "escalation_rate": round(escalated / len(ok), 4) if ok else None,
        "good_answers": good,
        "unjudged": sum(1 for v, r in zip(verdicts, replies, strict=True)
                        if v is None and "error" not in r),
        "quality": round(good / len(replies), 4) if replies else None,
        "models": dict(Counter(_served_by(r) for r in ok).most_common()),
    }


def _served_cost(reply: dict) -> float:
    """What the answer returned cost: the last paid answer of its tier and model."""
    answered = [a for a in reply["attempts"] if a["outcome"] in ("ok", "weak")
                and a["model"] == reply["model_used"] and a["tier"] == reply["tier"]]
    return answered[-1]["cost_usd"] if answered else 0.0


async def run(nc: Client, prompts_path: Path, mix: Mix, requests: int, concurrency: int,
              emulator: str, config: RouterConfig) -> dict:
    drawn = draw(prompts_path, mix.counts(requests))
    labels, prompts = [label for label, _ in drawn], [prompt for _, prompt in drawn]
    top = config.tiers[config.top_tier_index].name
    run_id = uuid.uuid4().hex[:8]
    routed_tenant, top_tenant = f"savings-{run_id}", f"savings-{run_id}-top"
    routed = await ask_all(nc, prompts, routed_tenant, concurrency)
    # Before the second pass: a report of another configuration is not worth its requests.
    _same_configuration(config, {_served_by(r) for r in routed if "error" not in r})
    pinned = await ask_all(nc, prompts, top_tenant, concurrency, tier=top)
    _same_configuration(config, {_served_by(r) for r in pinned if "error" not in r})
    routed_verdicts = await market_verdicts(emulator, prompts, routed)
    pinned_verdicts = await market_verdicts(emulator, prompts, pinned)
    on_baseline = await baseline_quality(emulator, prompts, config.baseline_model)

    report = tally(routed, routed_verdicts)
    top_tally = tally(pinned, pinned_verdicts)
    by_label = {}
    for label in DIFFICULTIES:
        mine = [i for i, x in enumerate(labels) if x == label]
        if mine:
            part = tally([routed[i] for i in mine], [routed_verdicts[i] for i in mine])
            part["top_tier_quality"] = tally([pinned[i] for i in mine],
                                             [pinned_verdicts[i] for i in mine])["quality"]
            by_label[label] = {k: part[k] for k in (
                "requests", "cost_usd", "baseline_usd", "savings_pct", "escalation_rate",
                "quality", "top_tier_quality")}
    return {
        "mix": mix.label(),
        "profile": config.profile,
        "baseline_model": config.baseline_model.key,
        "tiers": {t.name: [m.key for m in t.models] for t in config.tiers},
        "distinct_prompts": len(set(prompts)),
        **report,
        "top_tier_quality": top_tally["quality"],
        "quality_vs_top_tier": (round(report["quality"] / top_tally["quality"], 4)
                                if top_tally["quality"] else None),
        "baseline_quality": on_baseline,
        "quality_vs_baseline": (round(report["quality"] / on_baseline, 4)
                                if on_baseline else None),
        "top_tier": {"tier": top, **{k: top_tally[k] for k in (
            "answered", "errors", "cost_usd", "good_answers", "unjudged", "models")}},
        "by_label": by_label,
        "tenants": {"routed": routed_tenant, "top_tier": top_tenant},
    }


def render(report: dict) -> str:
    """The report as a short table for a terminal."""
    top = report["top_tier"]
    lines = [
        f"savings report: mix {report['mix']} (simple/medium/complex), {report['requests']} "
        f"requests, profile {report['profile']}",
        f"  cost           ${report['cost_usd']:.6f}  (answers ${report['answer_cost_usd']:.6f}"
        f" + escalations ${report['escalation_cost_usd']:.6f}"
        + (f" + checks ${report['checks_cost_usd']:.6f})" if report.get("checks_cost_usd")
           else ")"),
        f"  baseline       ${report['baseline_usd']:.6f}  (every answer on "
        f"{report['baseline_model']})",
        f"  savings        {_pct(report['savings_pct'], 100)}",
        f"  escalations    {report['escalated']} ({_pct(report['escalation_rate'])})",
        f"  quality        {_pct(report['quality'])} of answers adequate; always-"
        f"{top['tier']}: {_pct(report['top_tier_quality'])} (ratio "
        f"{_pct(report['quality_vs_top_tier'])}), costing ${top['cost_usd']:.6f}",
        f"                 every answer on {report['baseline_model']} (the market's verdict, "
        f"no call): {_pct(report['baseline_quality'])} (ratio "
        f"{_pct(report['quality_vs_baseline'])})",
    ]
    if report["errors"] or top["errors"]:
        lines.append(f"  errors         routed {report['errors']}, top tier {top['errors']}")
    if report["unjudged"] or top["unjudged"]:
        lines.append(f"  unjudged       {report['unjudged']} routed and {top['unjudged']} "
                     "top-tier answers came from models the emulator does not serve")
    lines.append("  by label       requests  savings  escalated  quality  top tier")
    for label, part in report["by_label"].items():
        lines.append(f"    {label:<12} {part['requests']:>8}  {_pct(part['savings_pct'], 100):>7}"
                     f"  {_pct(part['escalation_rate']):>9}  {_pct(part['quality']):>7}"
                     f"  {_pct(part['top_tier_quality']):>8}")
    return "\n".join(lines)


def _pct(value: float | None, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{100 * value / scale:.1f}%"


def _served_by(reply: dict) -> str:
    return f"{reply['provider']}:{reply['model_used']}"


class OtherConfiguration(ValueError):
    """The stack answered with models this command's configuration does not name."""


def _same_configuration(config: RouterConfig, served: set[str]) -> None:
    """The report names the profile and tiers this command reads (ROUTER_CONFIG): they must be
    the stack's, or the report would name a configuration that did not answer."""
    configured = {m.key for t in config.tiers for m in t.models}
    if served - configured:
        raise OtherConfiguration(
            f"the stack answered with {', '.join(sorted(served - configured))}, which this "
            f"command's configuration (profile '{config.profile}') does not name: run bench "
            "with the stack's ROUTER_CONFIG (the file given to `up --config`)")
