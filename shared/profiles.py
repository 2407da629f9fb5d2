"""Shipped tier profiles (profiles.toml) and the price order of a tier's models.

A profile is a set of tables laid under the user's file, so the user's own [[tiers]] (or
[pricing]) still win. Price order is applied once, when the configuration is loaded: the
dispatcher then simply tries a tier's models as listed.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from shared.config import ModelRef, RouterConfig, Tier
from shared.pricing import Pricer

PROFILES = Path(__file__).with_name("profiles.toml")


@cache
def shipped() -> dict[str, dict[str, Any]]:
    return tomllib.loads(PROFILES.read_text())


def tables(name: Any) -> dict[str, Any]:
    """The tables a profile contributes to the configuration."""
    profiles = shipped()
    if name not in profiles:
        raise ValueError(f"profile {name!r} is not one of {', '.join(sorted(profiles))}")
    return profiles[name]


def typical_cost(pricer: Pricer, ref: ModelRef, config: RouterConfig) -> float | None:
    """List price of a typical request on this model; None when it has no price."""
    if not pricer.is_priced(ref):
        return None
    pricing = config.pricing
    return pricer.cost(ref, pricing.typical_input_tokens, pricing.typical_output_tokens)


def price_ordered(config: RouterConfig) -> RouterConfig:
    """The configuration with each `order = "price"` tier's models cheapest first. The sort is
    stable (equal prices keep their written order), and a model with no price goes last:
    Pricer.check names it when a service starts."""
    pricer = Pricer(config.pricing)

    def ordered(tier: Tier) -> Tier:
        if tier.order != "price":
            return tier
        costs = {ref: typical_cost(pricer, ref, config) for ref in tier.models}
        models = sorted(tier.models, key=lambda ref: (costs[ref] is None, costs[ref] or 0.0))
        return tier.model_copy(update={"models": tuple(models)})

    return config.model_copy(update={"tiers": tuple(ordered(t) for t in config.tiers)})
