"""Runtime state: the scenario in use, fault counters, seeded randomness and statistics."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .scenario import FaultRule, Scenario


@dataclass(frozen=True, slots=True)
class Pacing:
    """How long a response takes: a wait before the first token, then a wait per token."""

    first_token_s: float
    per_token_s: float

    def total_s(self, tokens: int) -> float:
        return self.first_token_s + self.per_token_s * tokens


class Stats:
    """Calls per (provider, model, outcome), where an outcome is a verdict or a fault action."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.in_flight = 0
        # What a provider bills: answers it finished sending with their usage, per model.
        self.charged: dict[tuple[str, str], Counter[str]] = {}

    def record(self, provider: str, model: str, outcome: str) -> None:
        self.counts[provider, model, outcome] += 1

    def charge(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> None:
        bill = self.charged.setdefault((provider, model), Counter())
        bill.update(calls=1, input_tokens=input_tokens, output_tokens=output_tokens)

    def snapshot(self) -> dict[str, Any]:
        nested: dict[str, dict[str, dict[str, int]]] = {}
        for (provider, model, outcome), count in sorted(self.counts.items()):
            nested.setdefault(provider, {}).setdefault(model, {})[outcome] = count
        charged: dict[str, dict[str, dict[str, int]]] = {}
        for (provider, model), bill in sorted(self.charged.items()):
            charged.setdefault(provider, {})[model] = dict(bill)
        return {"total": self.counts.total(), "in_flight": self.in_flight, "counts": nested,
                "charged": charged}


class EmulatorState:
    """One per app; handlers read it, the control endpoints replace or reset it."""

    def __init__(self, startup: Scenario) -> None:
        self.startup = startup
        self.stats = Stats()
        self.use(startup)

    def use(self, scenario: Scenario) -> None:
        """Switch scenario; rule counters and random sequences start over with it."""
        self.scenario = scenario
        self._fired = [0] * len(scenario.faults)
        self._fault_rng = random.Random(scenario.seed)
        self._jitter_rng = random.Random(scenario.seed + 1)

    def reset(self) -> None:
        self.use(self.startup)
        self.stats.counts.clear()
        self.stats.charged.clear()

    def pick_fault(self, provider: str, model: str, prompt: str) -> FaultRule | None:
        """The first rule that matches, has calls left and wins its draw, if any."""
        for index, rule in enumerate(self.scenario.faults):
            if not rule.matches(provider, model, prompt):
                continue
            if rule.times is not None and self._fired[index] >= rule.times:
                continue
            if rule.probability < 1.0 and self._fault_rng.random() >= rule.probability:
                continue
            self._fired[index] += 1
            return rule
        return None

    def pacing(self) -> Pacing:
        scenario = self.scenario
        jitter_ms = self._jitter_rng.uniform(0.0, scenario.jitter_ms) if scenario.jitter_ms else 0.0
        return Pacing(
            first_token_s=(scenario.latency_ms + jitter_ms) / 1000,
            per_token_s=scenario.latency_per_output_token_ms / 1000,
        )
