"""The scenario: which models exist, how strong and slow they are, and which faults to inject."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatchcase
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Provider = Literal["openai", "anthropic", "groq", "ollama"]
Action = Literal[
    "rate_limit",
    "server_error",
    "overloaded",
    "hang",
    "truncate",
    "ramble",
    "refuse",
    "hedge",
    "empty",
    "mistake",  # a confidently wrong final answer to a checkable prompt
    "malformed",
    "no_usage",
    "ok",
]

DEFAULT_SCENARIO = "default_scenario.toml"


class ModelSpec(BaseModel):
    """One emulated model: the wire formats it is served on, the hardest prompt difficulty it
    masters, and the share of prompts one level harder that it still answers well."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: tuple[Provider, ...] = Field(min_length=1)
    strength: int = Field(ge=1, le=3)
    partial: float = Field(default=0.0, ge=0.0, le=1.0)
    # The share of checkable prompts at its own strength it answers confidently wrong
    # (emulator/mistakes.py): doubled per level harder, halved per level easier.
    mistakes: float = Field(default=0.0, ge=0.0, le=0.5)

    def masters(self, difficulty: int, draw: float) -> bool:
        """Whether it answers a prompt of this difficulty well; `draw` in [0, 1) is the
        prompt's own lot, so the same prompt gets the same verdict every time."""
        if difficulty <= self.strength:
            return True
        return difficulty == self.strength + 1 and draw < self.partial

    @model_serializer(mode="wrap")
    def _without_zero_partial(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A model with no partial mastery or mistakes reads as it did before they existed."""
        data = handler(self)
        for optional in ("partial", "mistakes"):
            if not getattr(self, optional):
                data.pop(optional, None)
        return data


class FaultRule(BaseModel):
    """Inject `action` into calls that match; `times` and `probability` limit when it fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    model: str = "*"
    provider: Provider | None = None
    prompt_regex: re.Pattern[str] | None = None
    times: int | None = Field(default=None, ge=0)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    retry_after_s: int = Field(default=1, ge=0)
    hang_s: float | None = Field(default=None, ge=0.0)  # None: until the client gives up

    def matches(self, provider: str, model: str, prompt: str) -> bool:
        return (
            (self.provider is None or self.provider == provider)
            and fnmatchcase(model, self.model)
            and (self.prompt_regex is None or self.prompt_regex.search(prompt) is not None)
        )


@cache
def default_models() -> dict[str, ModelSpec]:
    """The packaged market, used when a scenario leaves out its models table."""
    text = resources.files(__package__).joinpath(DEFAULT_SCENARIO).read_text("utf-8")
    table = tomllib.loads(text)["models"]
    return {name: ModelSpec.model_validate(spec) for name, spec in table.items()}


class Scenario(BaseModel):
    """Everything the emulator serves; replaceable at runtime through PUT /_emulator/scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0.0, ge=0.0)
    latency_per_output_token_ms: float = Field(default=0.0, ge=0.0)
    jitter_ms: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    models: dict[str, ModelSpec] = Field(default_factory=lambda: dict(default_models()))
    faults: tuple[FaultRule, ...] = ()


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read a TOML scenario; without a path, the one shipped in the package."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_SCENARIO).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return Scenario.model_validate(tomllib.loads(text))
