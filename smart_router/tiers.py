"""`smart-router tiers`: each tier's models in the order they are tried, priced.

A typical request ([pricing] typical_input_tokens / typical_output_tokens) is priced on every
model at list price (genai-prices or an override), and set beside the baseline model's price:
the share says what answering on that model costs next to always answering on the baseline.
"""

from __future__ import annotations

from shared.config import RouterConfig
from shared.pricing import Pricer
from shared.profiles import typical_cost


def describe(config: RouterConfig) -> dict:
    pricer = Pricer(config.pricing)
    baseline = typical_cost(pricer, config.baseline_model, config)

    def priced(ref) -> dict:
        cost = typical_cost(pricer, ref, config)
        share = cost / baseline if cost is not None and baseline else None
        return {"model": ref.key, "typical_cost_usd": cost,
                "share_of_baseline": None if share is None else round(share, 4)}

    return {
        "profile": config.profile,
        "typical_request": {"input_tokens": config.pricing.typical_input_tokens,
                            "output_tokens": config.pricing.typical_output_tokens},
        "baseline": {"model": config.baseline_model.key, "typical_cost_usd": baseline},
        "tiers": [{"name": t.name, "order": t.order, "models": [priced(m) for m in t.models]}
                  for t in config.tiers],
    }


def render(report: dict) -> str:
    typical, baseline = report["typical_request"], report["baseline"]
    lines = [f"profile {report['profile']}; a typical request: {typical['input_tokens']} input "
             f"and {typical['output_tokens']} output tokens; baseline {baseline['model']} "
             f"{_usd(baseline['typical_cost_usd'])}"]
    for tier in report["tiers"]:
        how = "cheapest first" if tier["order"] == "price" else "in the configured order"
        lines.append(f"{tier['name']} ({how})")
        for model in tier["models"]:
            share = model["share_of_baseline"]
            lines.append(f"  {model['model']:<38} {_usd(model['typical_cost_usd']):>11}  "
                         + ("no price" if share is None else f"{100 * share:5.1f}% of baseline"))
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "no price" if value is None else f"${value:.6f}"
