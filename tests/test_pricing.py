"""Prices are never guessed: an unknown paid model is an error, a configuration naming one stops
the services at start, and the pre-call bound covers what the emulator charges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.tokens import estimate_prompt_tokens
from shared.config import ModelRef, PricingConfig, load_config
from shared.pricing import (
    PER_MESSAGE_OVERHEAD_TOKENS,
    Pricer,
    UnpricedModelError,
    configured_models,
    worst_case_input_tokens,
)
from tests import harness

UNPRICED = ModelRef(provider="openai", model="gpt-unpriced-test")
TIER_ON_UNPRICED = f"""
[[tiers]]
name = "only"
models = [{{ provider = "{UNPRICED.provider}", model = "{UNPRICED.model}" }}]
[routing]
simple = "only"
medium = "only"
complex = "only"
"""


def config_file(tmp_path: Path, text: str):
    path = tmp_path / "router.toml"
    path.write_text(text)
    return path


def test_an_unknown_model_has_no_price_rather_than_a_zero_one():
    with pytest.raises(UnpricedModelError, match="openai:gpt-unpriced-test"):
        Pricer(PricingConfig()).cost(UNPRICED, 1000, 1000)


def test_only_local_models_and_explicit_zero_overrides_cost_nothing():
    free = Pricer(PricingConfig.model_validate(
        {"overrides": {UNPRICED.key: {"input": 0, "output": 0}}}))

    assert free.cost(UNPRICED, 10**6, 10**6) == 0.0
    assert Pricer(PricingConfig()).cost(ModelRef(provider="ollama", model="anything"), 10**6,
                                        10**6) == 0.0


def test_the_packaged_configuration_is_fully_priced():
    Pricer.check(load_config())  # raises if any default model had no price


def test_the_check_names_every_unpriced_model_and_its_role(tmp_path):
    text = TIER_ON_UNPRICED + """
[escalation.judge]
enabled = true
provider = "groq"
model = "judge-unpriced-test"
[pricing]
baseline = "anthropic:baseline-unpriced-test"
"""
    config = load_config(config_file(tmp_path, text))

    with pytest.raises(UnpricedModelError) as raised:
        Pricer.check(config)

    message = str(raised.value)
    for named in ("openai:gpt-unpriced-test (tier only)", "groq:judge-unpriced-test (judge)",
                  "anthropic:baseline-unpriced-test (baseline)", "[pricing.overrides]"):
        assert named in message


def test_an_override_prices_a_model_the_table_does_not_know(tmp_path):
    text = TIER_ON_UNPRICED + f"""
[pricing]
baseline = "openai:gpt-4o"
[pricing.overrides]
"{UNPRICED.key}" = {{ input = 1.0, output = 2.0 }}
"""
    config = load_config(config_file(tmp_path, text))

    Pricer.check(config)
    assert Pricer(config.pricing).cost(UNPRICED, 10**6, 10**6) == pytest.approx(3.0)


@pytest.mark.parametrize("setting", [
    '[pricing.overrides]\n"openai:gpt-4o" = { input = inf, output = 2.0 }',
    "[escalation.judge]\ntimeout_s = inf", "[escalation.verify]\ntimeout_s = inf",
    "[limits]\nprovider_timeout_s = nan"])
def test_an_infinite_or_undefined_figure_is_refused_at_start(tmp_path, setting):
    """TOML writes inf and nan. Before, an infinite price passed the start and its first paid
    call could not be recorded (an attempt's cost must be finite): a dead letter, the money
    unseen; an infinite check timeout held a handler for ever."""
    with pytest.raises(ValueError, match="finite number"):
        load_config(config_file(tmp_path, setting))


def test_a_disabled_judge_is_not_a_model_the_router_pays_for():
    config = load_config(harness.TEST_CONFIG)  # the seed's tiers do not name the judge's model
    assert not config.escalation.judge.enabled
    judge = ModelRef(provider=config.escalation.judge.provider,
                     model=config.escalation.judge.model)
    assert judge not in configured_models(config)


@pytest.mark.parametrize("service", ["dispatcher", "escalator"])
def test_a_service_configured_with_an_unpriced_model_does_not_start(service, servers,
                                                                    tmp_path):
    env = {**os.environ, "NATS_URL": servers.nats_url, "DATABASE_URL": servers.postgres_url,
           "ROUTER_CONFIG": str(config_file(tmp_path, TIER_ON_UNPRICED)),
           **harness.emulator_env("http://127.0.0.1:9")}

    # A service that started would run until killed: the timeout makes that a failure.
    done = subprocess.run([sys.executable, "-m", f"services.{service}"], env=env,
                          cwd=harness.ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert "openai:gpt-unpriced-test" in done.stderr
    assert "[pricing.overrides]" in done.stderr


@pytest.mark.parametrize("texts", [
    ["a"] * 1000,
    ["😀" * 50_000],
    ["你好世界" * 7_500],
    ["The quick brown fox jumps over the lazy dog. " * 40, "Sure.", "And then?"] * 50,
    [""],
])
def test_the_input_bound_covers_bytes_markup_and_what_the_emulator_charges(texts):
    bound = worst_case_input_tokens(texts)

    assert bound >= sum(len(t.encode()) for t in texts) + PER_MESSAGE_OVERHEAD_TOKENS * len(texts)
    assert bound >= estimate_prompt_tokens(texts)
