"""What a call cost, from its real token usage, and what it could cost at most, before it is made.

Prices come from the genai-prices table (maintained, offline), overridable per model in the TOML.
They are never guessed: a paid model with neither a table price nor an override is an error, and
`Pricer.check` stops a service at start when its configuration names one. Local models (Ollama)
and explicit zero overrides are the only models that cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from genai_prices import Usage, calc_price

from shared.config import ModelRef, PricingConfig, RouterConfig

# Tokens a chat template adds around each message, beyond its text. OpenAI counts 3 per message
# ("How to count tokens with tiktoken", the OpenAI cookbook); Llama 3's template wraps each in
# <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>, 5 tokens; the emulator charges 4
# (emulator/tokens.py). Anthropic does not publish its markup: 8 leaves room for it.
PER_MESSAGE_OVERHEAD_TOKENS = 8
# Tokens a template adds once per request: OpenAI primes the reply with 3; Llama 3.1's template
# starts with <|begin_of_text|> and a default system header with a knowledge-cutoff and date line
# (about 30 tokens), then the assistant header (4).
PER_REQUEST_OVERHEAD_TOKENS = 64


class UnpricedModelError(LookupError):
    """A paid model with no price in the table and no [pricing.overrides] entry."""


class Pricer:
    def __init__(self, pricing: PricingConfig) -> None:
        self._overrides = pricing.overrides

    @classmethod
    def check(cls, config: RouterConfig) -> None:
        """Stop at start-up, naming every configured model that has no price, rather than
        record its calls at a guessed $0 (which would inflate savings and slip past budgets)."""
        pricer = cls(config.pricing)
        unpriced = [f"{ref.key} ({role})" for ref, role in configured_models(config).items()
                    if not pricer.is_priced(ref)]
        if unpriced:
            raise UnpricedModelError(
                f"no price for {', '.join(unpriced)}: genai-prices does not know "
                f"{'it' if len(unpriced) == 1 else 'them'} and [pricing.overrides] has no entry. "
                'Add one per model, in USD per million tokens, e.g. "openai:my-model" = '
                "{ input = 2.5, output = 10.0 }, or configure a priced model."
            )

    def cost(self, ref: ModelRef, input_tokens: int, output_tokens: int) -> float:
        """USD for this usage; raises UnpricedModelError for a model with no known price."""
        if ref.provider == "ollama":
            return 0.0
        override = self._overrides.get(ref.key)
        if override is not None:
            return (input_tokens * override.input + output_tokens * override.output) / 1e6
        return _table_price(ref.provider, ref.model, input_tokens, output_tokens)

    def is_priced(self, ref: ModelRef) -> bool:
        try:
            self.cost(ref, 1, 1)
        except UnpricedModelError:
            return False
        return True


def configured_models(config: RouterConfig) -> dict[ModelRef, str]:
    """Every model the router may pay for, with the role that names it: the tiers' models, the
    judge and verifiers when enabled, and the baseline the savings are measured against."""
    models: dict[ModelRef, str] = {}
    for tier in config.tiers:
        for ref in tier.models:
            models.setdefault(ref, f"tier {tier.name}")
    judge = config.escalation.judge
    if judge.enabled or config.escalation.sampling.share > 0:
        models.setdefault(ModelRef(provider=judge.provider, model=judge.model), "judge")
    verify = config.escalation.verify
    if verify.enabled:
        if "verifier" in verify.signals:
            models.setdefault(verify.verifier, "verifier")
        if "consistency" in verify.signals:
            models.setdefault(verify.sampler, "consistency sample")
    models.setdefault(config.baseline_model, "baseline")
    return models


def worst_case_input_tokens(contents: Iterable[str]) -> int:
    """An upper bound on the input tokens any provider charges for these messages.

    Every tokenizer these providers use is byte-level BPE (or SentencePiece with byte fallback):
    each token of text covers at least one UTF-8 byte, so a message's text is at most as many
    tokens as it has bytes. The chat template's markup (and SentencePiece's leading space marker)
    comes on top, per message and per request (the constants above). Real counts are far lower
    (about 4 bytes a token in English), so the bound refuses some calls that would have fitted
    and never admits one that would not.
    """
    return PER_REQUEST_OVERHEAD_TOKENS + sum(
        len(text.encode()) + PER_MESSAGE_OVERHEAD_TOKENS for text in contents
    )


@lru_cache(maxsize=65_536)
def _table_price(provider: str, model: str, input_tokens: int, output_tokens: int) -> float:
    try:
        price = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError as exc:
        raise UnpricedModelError(
            f"no price for {provider}:{model}: add it under [pricing.overrides] ({exc})"
        ) from None
    return float(price.total_price)
