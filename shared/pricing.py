"""What a call cost, from its real token usage: the genai-prices table (maintained, offline),
overridable per model in the TOML. Local models (Ollama) cost nothing."""

from __future__ import annotations

from functools import cache, lru_cache

import structlog
from genai_prices import Usage, calc_price

from shared.config import ModelRef, PricingConfig

log = structlog.get_logger(__name__)


class Pricer:
    def __init__(self, pricing: PricingConfig) -> None:
        self._overrides = pricing.overrides

    def cost(self, ref: ModelRef, input_tokens: int, output_tokens: int) -> float:
        if ref.provider == "ollama":
            return 0.0
        override = self._overrides.get(ref.key)
        if override is not None:
            return (input_tokens * override.input + output_tokens * override.output) / 1e6
        return _table_price(ref.provider, ref.model, input_tokens, output_tokens)


@lru_cache(maxsize=65_536)
def _table_price(provider: str, model: str, input_tokens: int, output_tokens: int) -> float:
    try:
        price = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        # Unknown to the table and not overridden: record zero and say which model, once.
        _warn_unpriced(provider, model)
        return 0.0
    return float(price.total_price)


@cache
def _warn_unpriced(provider: str, model: str) -> None:
    log.warning("pricing.unknown_model", provider=provider, model=model,
                hint="add it under [pricing.overrides] in the config")
