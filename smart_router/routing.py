"""`smart-router eval-router` and `train-router`: the learned router, measured and trained here,
without the router running."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from services.classifier.ledger_outcomes import MAX_ROWS, read_ledger
from services.classifier.local_model import LocalModel
from services.classifier.outcome_data import read_outcomes
from services.classifier.router_eval import report
from services.classifier.router_model import Featurizer, MemoEncoder, Router, RouterModel
from services.classifier.router_train import MIN_PROMPTS, fit, train


def tag_scores(model: LocalModel, prompts: list[str]) -> np.ndarray:
    """The difficulty tag's own ranking: the classifier's expected tier, 0 (simple) to 1."""
    return np.array([model.predict(text).probabilities @ np.array([0.0, 0.5, 1.0])
                     for text in prompts])


def evaluate(path: Path, router_model: Path | None, weak: str | None, strong: str | None
             ) -> dict:
    outcomes = read_outcomes(path, weak, strong)
    encoder = MemoEncoder()
    print(f"scoring {len(outcomes)} prompts …", file=sys.stderr)
    routers = {"difficulty": tag_scores(LocalModel(encoder=encoder), outcomes.prompts)}
    if router_model is not None:
        router = Router(RouterModel.load(router_model), Featurizer(encoder))
        routers["router_model"] = np.array([router.strong_score(t) for t in outcomes.prompts])
    routers["oracle"] = outcomes.gain  # the best any router can do on these prompts
    return report(outcomes, routers)


def train_and_write(path: Path, out: Path, weak: str | None, strong: str | None,
                    features: str = "any") -> dict:
    model, result = train(path, weak, strong, features=features)
    model.save(out)
    return result | {"written": str(out)}


def train_from_ledger_and_write(database_url: str, top_tier: str, days: int, out: Path) -> dict:
    """Learn from production's labels (escalations, feedback) on the feature vectors the
    ledger kept; refused, saying why, when they cannot train a model."""
    data = read_ledger(database_url, top_tier, days)
    found = data.report
    if found["labelled"] < MIN_PROMPTS:
        raise ValueError(
            f"the ledger has {found['labelled']} labelled requests in the last {days} days "
            f"({found['rows']} answered below the top tier with stored features); training "
            f"needs {MIN_PROMPTS} or more: set ledger.store_features = true and let "
            "escalations and feedback accumulate, or widen --since")
    if not data.outcomes.has_gap:
        raise ValueError(
            f"none of the ledger's {found['labelled']} labelled requests says the cheap side "
            "fell short (no weak verdict, no feedback score below 1): nothing to learn yet")
    model, result = fit({data.feature_set: data.x}, data.outcomes, data.feature_set,
                        {"data": "ledger", "since_days": days, "ledger": found})
    model.save(out)
    return result | {"ledger": found, "written": str(out)}


def render_training(r: dict) -> str:
    cv, nested = r["cross_validated"], r["nested"]
    lines = [f"prompts {r['prompts']}   weak {r['weak']}   strong {r['strong']}",
             f"chosen by cross-validation: {r['chosen']}",
             f"cross-validated APGR {cv['apgr']:.3f}   CPT(50%) {cv['cpt50']:.1%}",
             f"nested estimate (choice included): APGR {nested['apgr']:.3f} "
             f"±{nested['apgr_sd']:.3f}   CPT(50%) {nested['cpt50']:.1%}   "
             f"CPT(80%) {nested['cpt80']:.1%}",
             f"written to {r['written']}"]
    if "ledger" in r:
        found = r["ledger"]
        skipped = [f"{found[k]} {what}" for k, what in (
            ("left_out", f"older labelled ones left out (the {MAX_ROWS:,} most recent read)"),
            ("malformed", "malformed vectors skipped")) if found[k]]
        lines.insert(1, f"from the ledger: {found['labelled']} labelled of {found['rows']} "
                     f"requests ({found['weak_verdicts']} weak verdicts, "
                     f"{found['with_feedback']} with feedback), features {found['feature_set']}"
                     + "".join(f"; {line}" for line in skipped))
    return "\n".join(lines)
