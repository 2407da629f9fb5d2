"""Shipped profiles and price-aware tiers: the cheaper model of a tier is tried first unless the
config orders it, the seed profile routes exactly the seed's models, and the emulator's market
ranks the cheap models as their public standing does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.completion import masters
from emulator.heuristics import profile as emulator_profile
from emulator.scenario import load_scenario
from services.dispatcher.tier_call import TierCaller
from shared.config import load_config
from shared.pricing import Pricer, configured_models
from tests import harness
from tests.harness import ask
from tests.test_tier_call import LIMITS, envelope

SEED = {"simple": "anthropic:claude-haiku-4-5", "medium": "groq:llama-3.3-70b-versatile",
        "complex": "openai:gpt-4o"}
TWO_MODELS = """
[[tiers]]
name = "only"
{order}
models = [
    {{ provider = "openai", model = "gpt-4o" }},
    {{ provider = "openai", model = "gpt-4o-mini" }},
]
[routing]
simple = "only"
medium = "only"
complex = "only"
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text)
    return path


async def test_a_tier_ordered_by_price_calls_its_cheaper_model_first(tmp_path, emulator,
                                                                    monkeypatch, providers):
    for name, value in harness.emulator_env(emulator.base).items():
        monkeypatch.setenv(name, value)
    config = load_config(config_file(tmp_path, TWO_MODELS.format(order="")))
    caller = TierCaller(providers, Pricer(config.pricing), LIMITS, want_logprobs=False)

    result = await caller.call(envelope(), config.tiers[0])

    assert [a.model for a in result.attempts] == ["gpt-4o-mini"]
    assert result.answer is not None


def test_a_tier_ordered_by_config_keeps_its_written_order(tmp_path):
    config = load_config(config_file(tmp_path, TWO_MODELS.format(order='order = "config"')))

    assert [m.model for m in config.tiers[0].models] == ["gpt-4o", "gpt-4o-mini"]


def test_the_seed_profile_is_the_owners_tiers_in_the_owners_order(tmp_path):
    config = load_config(config_file(tmp_path, 'profile = "seed"\n'))

    assert {t.name: t.models[0].key for t in config.tiers} == SEED
    assert config.baseline_model.key == "openai:gpt-4o"
    Pricer.check(config)


def test_the_default_profile_is_cheapest_and_keeps_the_seeds_models_as_fallbacks():
    config = load_config()
    cheapest = {t.name: t.models[0].key for t in config.tiers}
    names = {ref.key for ref in configured_models(config)}

    assert config.profile == "cheapest"
    assert cheapest == {"simple": "groq:llama-3.1-8b-instant",
                        "medium": "groq:llama-3.3-70b-versatile",
                        "complex": "openai:gpt-4.1-mini"}
    assert set(SEED.values()) <= names
    assert config.baseline_model.key == "openai:gpt-4o"
    Pricer.check(config)


def test_a_users_own_tiers_replace_the_profiles_and_an_unknown_profile_is_named(tmp_path):
    own = load_config(config_file(tmp_path, TWO_MODELS.format(order="")))
    assert [t.name for t in own.tiers] == ["only"]

    with pytest.raises(ValueError, match="profile 'gold' is not one of cheapest, seed"):
        load_config(config_file(tmp_path, 'profile = "gold"\n'))


async def test_the_seed_profile_routes_exactly_the_seeds_models(stack, nc):
    """The test stack runs the seed profile: every answer and every call is a seed model (no
    fault is injected, so no fallback is needed)."""
    prompts = [json.loads(line)["prompt"] for line in
               (harness.ROOT / "services/classifier/data/test.jsonl").open()][:30]
    replies = [await ask(nc, {"prompt": p}, timeout=60) for p in prompts]
    pinned = {tier: await ask(nc, {"prompt": "Name three primary colours.", "tier": tier})
              for tier in SEED}

    assert all("error" not in r for r in replies), replies
    assert {f"{r['provider']}:{r['model_used']}" for r in replies} <= set(SEED.values())
    assert {f"{a['provider']}:{a['model']}" for r in replies for a in r["attempts"]} \
        <= set(SEED.values())
    assert {t: f"{r['provider']}:{r['model_used']}" for t, r in pinned.items()} == SEED


def test_tiers_prints_each_model_with_its_price_and_share_of_the_baseline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.cli", "tiers", "--json"],
        env={k: v for k, v in os.environ.items() if k != "ROUTER_CONFIG"},
        capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)

    assert done.returncode == 0, done.stderr
    assert report["profile"] == "cheapest" and report["baseline"]["model"] == "openai:gpt-4o"
    simple = report["tiers"][0]["models"]
    costs = [m["typical_cost_usd"] for m in simple]
    assert costs == sorted(costs) and simple[0]["model"] == "groq:llama-3.1-8b-instant"
    gpt4o = next(m for t in report["tiers"] for m in t["models"] if m["model"] == "openai:gpt-4o")
    assert gpt4o["share_of_baseline"] == 1.0 and simple[0]["share_of_baseline"] < 0.05


def test_the_market_ranks_the_cheap_models_on_medium_prompts_as_published_scores_do():
    """Llama 3.1 8B fails more medium prompts than GPT-4o mini, which fails more than Llama
    3.3 70B (emulator/README.md, "The market"); the top models fail none."""
    models = load_scenario().models
    prompts = [json.loads(line)["prompt"] for line in
               (harness.ROOT / "services/classifier/data/test.jsonl").open()]
    medium = [p for p in prompts if emulator_profile(p).difficulty == 2]

    def failures(model: str) -> int:
        return sum(not masters(models[model], model, p) for p in medium)

    assert len(medium) > 300
    assert failures("llama-3.1-8b-instant") > failures("gpt-4o-mini") \
        > failures("llama-3.3-70b-versatile") == 0
    assert failures("gpt-4o") == failures("claude-haiku-4-5") == 0
