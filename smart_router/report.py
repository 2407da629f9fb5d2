"""`smart-router report`: the README's classifier, escalation and routing figures, computed
again from the project's own data and models in this process, so the README can quote what
this printed. Speed and savings need the running stack: `smart-router bench`. Not here: the
escalation rows that need a data set the project does not ship (HaluEval) or another
configuration than the one in use (other verifiers, the seed profile)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from services.classifier.router_eval import render as render_routers
from services.classifier.router_model import SHIPPED_PATH, RouterModel
from services.classifier.router_train import train

from . import escalation
from .classify import evaluate_file, render_report
from .routing import evaluate as evaluate_routers

DATA = Path(__file__).resolve().parent.parent / "services/classifier/data"
TEST_SPLIT = DATA / "test.jsonl"
OUTCOMES = DATA / "outcomes"
# What train-router chooses from: the shipped model's own feature set, and any.
FEATURE_CHOICES = ("lexical", "any")
NOT_HERE = ("speed (throughput, latency, overhead, ledger lag) and savings: `smart-router bench`"
            " on the running stack (`up`)")


async def build(emulator: str | None = None) -> dict:
    """The classifier first, so its peak memory is the classifier's and not the report's."""
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "classifier": classifier(),
        "escalation": await escalation_figures(emulator),
        "routing": routing(),
        "not_here": NOT_HERE,
    }


def classifier() -> dict:
    """`smart-router eval` on the test split at the configured bias."""
    return evaluate_file(TEST_SPLIT)


async def escalation_figures(emulator: str | None = None) -> dict:
    """The weak verdict on the independent labelled answers, each free signal's recall of wrong
    answers on the right|wrong set, and with an emulator its market, paid checks included."""
    figures = {"answers": await escalation.evaluate(None, None, None),
               "correctness": await escalation.evaluate(escalation.CORRECTNESS, None, None)}
    if emulator is not None:
        figures |= {"market": await escalation.evaluate(None, emulator, None),
                    "market_verify": await escalation.evaluate(None, emulator, None, True)}
    return figures


def routing() -> dict:
    """RouteLLM's metrics on the shipped model's outcome data and pair, and what train-router's
    cross-validation and nested estimate say of the learned router, per feature choice."""
    meta = RouterModel.load(SHIPPED_PATH).meta
    data, weak, strong = OUTCOMES / meta["data"], meta["weak"], meta["strong"]
    learned = {}
    for features in FEATURE_CHOICES:
        _, result = train(data, weak, strong, features=features)
        learned[features] = {k: result[k] for k in ("chosen", "cross_validated", "nested")}
    return {"data": meta["data"], **evaluate_routers(data, SHIPPED_PATH, weak, strong),
            "learned": learned}


def render(r: dict) -> str:
    c, routing_, m = r["classifier"], r["routing"], r["machine"]
    lines = [f"smart-router report, {r['date']}, {m['cpus']} CPUs, Python {m['python']}", "",
             f"== classifier on the test split ({TEST_SPLIT.name}, local backend)",
             render_report(c), "",
             "== escalation", escalation.render(r["escalation"]["answers"]), "",
             escalation.render(r["escalation"]["correctness"])]
    for key in ("market", "market_verify"):
        if key in r["escalation"]:
            lines += ["", escalation.render(r["escalation"][key])]
    lines += ["", f"== routing on {routing_['data']}", render_routers(routing_)]
    for features, t in routing_["learned"].items():
        cv, nested = t["cross_validated"], t["nested"]
        lines.append(f"learned ({features} features; chose {t['chosen']}): cross-validated "
                     f"APGR {cv['apgr']:.3f}, CPT(50%) {cv['cpt50']:.1%}; nested APGR "
                     f"{nested['apgr']:.3f} ±{nested['apgr_sd']:.3f}, CPT(50%) "
                     f"{nested['cpt50']:.1%}, CPT(80%) {nested['cpt80']:.1%}")
    lines += ["", f"not here: {r['not_here']}"]
    return "\n".join(lines)
