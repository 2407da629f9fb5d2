"""Configuration: one TOML file for what the router does, the environment for where it runs.

The packaged defaults (default_config.toml) are always loaded first; a user's file given by
ROUTER_CONFIG is merged over them table by table, so it only needs the parts it changes.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")

Provider = Literal["anthropic", "openai", "groq", "ollama"]
Difficulty = Literal["simple", "medium", "complex"]
# What can mark an answer weak (services/escalator): signals read off the answer at no cost, and
# "judge", a cheap model asked whether the answer addresses the prompt...
AnswerSignal = Literal["truncation", "empty", "refusal", "hedging", "logprob", "judge",
                       "arithmetic"]
# ...then, on answers none of those flagged, paid correctness checks (VerifyConfig).
VerifySignal = Literal["verifier", "consistency"]
Signal = Literal[AnswerSignal, VerifySignal]
DIFFICULTIES: tuple[Difficulty, ...] = ("simple", "medium", "complex")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelRef(_Strict):
    provider: Provider
    model: str

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.model}"

    def named(self, name: str) -> bool:
        """Whether a request's `model` names this model: its id, or provider:model."""
        return name in (self.model, self.key)


class Tier(_Strict):
    name: str
    models: tuple[ModelRef, ...] = Field(min_length=1)
    # "price": the models are tried cheapest first (for a typical request, at list price);
    # "config": in the order written.
    order: Literal["price", "config"] = "price"


class Routing(_Strict):
    simple: str
    medium: str
    complex: str
    # With a router model: the shares of traffic whose strong_score starts them at the complex
    # row's tier and at the medium row's, thresholds calibrated on the model's training prompts.
    strong_share: float = Field(default=0.2, ge=0, le=1)
    medium_share: float = Field(default=0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _shares_fit(self) -> Routing:
        if self.strong_share + self.medium_share > 1:
            raise ValueError("routing.strong_share + routing.medium_share must not exceed 1")
        return self


class ClassifierConfig(_Strict):
    backends: tuple[Literal["ollama", "local", "rules"], ...] = Field(min_length=1)
    ollama_model: str
    ollama_timeout_s: float = Field(gt=0)
    bias: float = Field(ge=0, le=1)
    router_model: str = ""  # a train-router file, "shipped", or "" (off)


class JudgeConfig(_Strict):
    enabled: bool
    provider: Provider
    model: str
    timeout_s: float = Field(gt=0)


class VerifyConfig(_Strict):
    """Correctness checks on answers no cheap signal flagged (services/escalator/verify.py):
    paid calls, so they run only on the task types, share and strong_score band chosen here,
    and never past max_cost_usd per request."""

    enabled: bool = False
    # "verifier": a cheap model re-derives the result and says whether the answer is right;
    # "consistency": a second cheap sample whose final answer (number, option) must agree.
    signals: tuple[VerifySignal, ...] = ("verifier",)
    provider: Provider = "groq"
    model: str = "llama-3.1-8b-instant"
    consistency_provider: Provider = "openai"
    consistency_model: str = "gpt-4o-mini"
    task_types: tuple[Literal["math", "choice", "factual", "code", "other"], ...] = (
        "math", "choice", "factual")
    share: float = Field(default=1.0, ge=0, le=1)
    max_cost_usd: float = Field(default=0.001, ge=0)
    strong_score_band: tuple[float, float] = (0.0, 1.0)
    timeout_s: float = Field(default=5.0, gt=0)
    max_tokens: int = Field(default=400, gt=0)

    @property
    def verifier(self) -> ModelRef:
        return ModelRef(provider=self.provider, model=self.model)

    @property
    def sampler(self) -> ModelRef:
        return ModelRef(provider=self.consistency_provider, model=self.consistency_model)


class SamplingConfig(_Strict):
    """Judge sampling (services/escalator/sampling.py): this share of the answers served below
    the top tier is also asked of the top tier, and the judge model compares the two; never a
    request pinned to a tier or a model, or capped below the top tier."""

    share: float = Field(default=0.0, ge=0, le=1)
    # A sample whose two calls could cost more than this at their worst (the top tier's on the
    # whole conversation and max_tokens, the judge's) is not drawn: the operator pays for it.
    max_cost_usd: float = Field(default=0.10, gt=0)


class EscalationConfig(_Strict):
    threshold: float = Field(ge=0, le=1)
    signals: tuple[AnswerSignal, ...]
    max_attempts: int = Field(ge=1)
    max_tier: str
    logprob_floor: float = Field(le=0)
    judge: JudgeConfig
    verify: VerifyConfig = VerifyConfig()
    sampling: SamplingConfig = SamplingConfig()
    # A streamed answer's opening, held back and scored before any of it reaches the caller:
    # this many characters, or its first sentence if that ends sooner.
    stream_opening_chars: int = Field(default=200, ge=1)


class Limits(_Strict):
    max_request_bytes: int = Field(ge=1024)
    max_messages: int = Field(ge=1)
    max_answer_bytes: int = Field(ge=1024)
    request_timeout_s: float = Field(gt=0)
    batch_timeout_s: float = Field(gt=0)
    provider_timeout_s: float = Field(gt=0)
    default_max_tokens: int = Field(gt=0)
    provider_retries: int = Field(ge=0)
    retry_max_wait_s: float = Field(ge=0)


class PipelineConfig(_Strict):
    dispatcher_concurrency: int = Field(ge=1)
    classifier_concurrency: int = Field(ge=1)
    escalator_concurrency: int = Field(ge=1)
    max_deliver: int = Field(ge=1)
    backoff_s: tuple[Annotated[float, Field(ge=0)], ...] = Field(min_length=1)
    ack_wait_s: float = Field(gt=0)
    dedup_window_s: float = Field(gt=0)
    results_max_age_s: float = Field(gt=0)
    events_max_age_s: float = Field(gt=0)
    stream_replicas: int = Field(ge=1, le=5)
    max_online_in_flight: int = Field(ge=0)
    max_online_in_flight_per_tenant: int = Field(ge=0)
    max_batch_in_flight: int = Field(ge=0)
    overloaded_retry_after_s: float = Field(gt=0)
    jobs_max_bytes: int = Field(ge=1 << 20)
    pipeline_max_bytes: int = Field(ge=1 << 20)
    results_max_bytes: int = Field(ge=1 << 20)
    events_max_bytes: int = Field(ge=1 << 20)
    hops_max_bytes: int = Field(ge=1 << 20)
    requests_max_bytes: int = Field(ge=1 << 20)

    @model_validator(mode="after")
    def _tenant_share_within_the_bound(self) -> PipelineConfig:
        share, bound = self.max_online_in_flight_per_tenant, self.max_online_in_flight
        if bound and share > bound:  # it would bound nothing
            raise ValueError(f"pipeline.max_online_in_flight_per_tenant ({share}) is above "
                             f"max_online_in_flight ({bound}): set it at most {bound}, or 0 for "
                             "no bound per tenant")
        return self

    def retry_delay(self, delivery: int) -> float:
        """Delay before redelivering a message whose handler failed on its n-th delivery."""
        return self.backoff_s[min(delivery, len(self.backoff_s)) - 1] if self.backoff_s else 0.0


# The longest span in days a setting or option may name: a hundred years. Far larger ones put
# PostgreSQL's `now() - make_interval(days => N)` out of the timestamp range.
MAX_DAYS = 36_500


class LedgerConfig(_Strict):
    store_prompt_text: bool
    store_features: bool = False
    writers: int = Field(ge=1, le=16)
    batch_size: int = Field(ge=1)
    batch_timeout_s: float = Field(gt=0)
    retention_days: int = Field(ge=1, le=MAX_DAYS)
    stuck_after_s: float = Field(gt=0)


class Price(_Strict):
    input: float = Field(ge=0, description="USD per million input tokens")
    output: float = Field(ge=0, description="USD per million output tokens")


class PricingConfig(_Strict):
    baseline: str = ""
    overrides: dict[str, Price] = {}
    # What a "typical request" is when tiers are ordered by price and `smart-router tiers`
    # prices them.
    typical_input_tokens: int = Field(default=500, ge=0)
    typical_output_tokens: int = Field(default=250, ge=0)


class RouterConfig(_Strict):
    # The shipped tiers the configuration started from (shared/profiles.toml); a [[tiers]] list
    # of the user's own replaces them.
    profile: str
    tiers: tuple[Tier, ...] = Field(min_length=1)
    routing: Routing
    classifier: ClassifierConfig
    escalation: EscalationConfig
    limits: Limits
    pipeline: PipelineConfig
    ledger: LedgerConfig
    pricing: PricingConfig

    @field_validator("tiers")
    @classmethod
    def _unique_tier_names(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        return tiers

    @model_validator(mode="after")
    def _routes_name_tiers(self) -> RouterConfig:
        names = {t.name for t in self.tiers}
        for difficulty in DIFFICULTIES:
            if getattr(self.routing, difficulty) not in names:
                raise ValueError(f"routing.{difficulty} names no tier (tiers: {sorted(names)})")
        if self.escalation.max_tier and self.escalation.max_tier not in names:
            raise ValueError(f"escalation.max_tier names no tier (tiers: {sorted(names)})")
        return self

    def tier_index(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise KeyError(name)

    @property
    def top_tier_index(self) -> int:
        """The highest tier escalation may reach."""
        if self.escalation.max_tier:
            return self.tier_index(self.escalation.max_tier)
        return len(self.tiers) - 1

    def start_tier(self, difficulty: Difficulty) -> int:
        return self.tier_index(getattr(self.routing, difficulty))

    @property
    def baseline_model(self) -> ModelRef:
        """What "always use the expensive model" means for the savings figures."""
        if self.pricing.baseline:
            provider, _, model = self.pricing.baseline.partition(":")
            return ModelRef(provider=provider, model=model)  # type: ignore[arg-type]
        return self.tiers[-1].models[0]


class Settings(BaseSettings):
    """What differs per machine. Provider keys and base URLs are read by the SDKs themselves."""

    model_config = SettingsConfigDict(extra="ignore")

    # One URL or several, comma-separated (a cluster); user:password@ or token@ may sit in each.
    nats_url: str = "nats://127.0.0.1:4222"
    # How this process proves who it is to NATS (see shared/connection.py): at most one of a
    # user and password, a token, an nkey seed file or a .creds file (JWT). NATS_IDENTITY_FILE
    # names a file of these variables (KEY=value lines, see settings()).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_nkey_seed: Path | None = None
    nats_creds: Path | None = None
    # TLS: a CA to trust, a client certificate and key (mutual TLS). tls:// URLs use TLS too.
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # Where this process's reply inboxes live: a client identity may read only its own.
    nats_inbox_prefix: str | None = None
    # The tenant a client identity is (it asks on router.v1.chat.<tenant>), when auth is on.
    router_tenant: str | None = None
    # Whether a service declares the JetStream topology at start (a least-privilege service
    # cannot: the setup identity does it once, see shared/nats_auth.py).
    nats_declare: bool = True
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    router_config: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


# What an identity file may set: how to reach NATS and who to be there.
IDENTITY_SETTINGS = frozenset(
    {name for name in Settings.model_fields if name.startswith("nats_")} | {"router_tenant"}
) - {"nats_identity_file"}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None = None) -> RouterConfig:
    """Defaults, then the chosen profile's tiers, then the user's file; a bad file fails here,
    at start-up, with its path. Tiers ordered by price are put in that order here, once."""
    from shared import profiles  # it prices models, and pricing needs this module's types

    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    user: dict[str, Any] = {}
    if path is not None:
        try:
            user = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
    profile = user.get("profile", data.get("profile"))
    data = _merge(_merge(data, profiles.tables(profile)), user)
    return profiles.price_ordered(RouterConfig.model_validate(data))


@cache
def settings() -> Settings:
    """From the environment, and from the file NATS_IDENTITY_FILE names (one identity's NATS_*
    variables, as shared/nats_auth.py writes them for `up` and compose); a variable set in the
    environment wins over the file's. Only the identity's own settings are read from the file:
    it cannot point the database, the config or the log anywhere."""
    identity = os.environ.get("NATS_IDENTITY_FILE")
    if not identity:
        return Settings()
    try:
        text = Path(identity).read_text()
    except OSError as exc:
        raise ValueError(f"NATS_IDENTITY_FILE: cannot read {identity}: {exc.strerror}") from None
    given: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.lower() in IDENTITY_SETTINGS and key.upper() not in os.environ:
            given[key.lower()] = value
    return Settings(**given)


@cache
def config() -> RouterConfig:
    return load_config(settings().router_config)
