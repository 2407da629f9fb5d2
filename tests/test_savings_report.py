"""The savings report (`smart-router bench --mix`): its cost, baseline and escalation cost are
the ledger's for its requests, its quality is the emulator market's own count over the final
answers, and the verdicts it reads are the ones the emulator marks on what it serves."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import openai
import pytest

from emulator.completion import masters
from emulator.scenario import load_scenario
from shared.config import ModelRef, load_config
from smart_router.bench import mix
from smart_router.bench.run import PROMPTS
from tests.harness import TEST_CONFIG, rows_when_ready

REQUESTS = 40


@pytest.fixture(scope="module")
async def report(stack) -> dict:
    import nats

    nc = await nats.connect(stack.nats_url)
    try:
        return await mix.run(nc, PROMPTS, mix.Mix.parse("70/20/10"), REQUESTS, 10,
                             stack.emulator.base, load_config(TEST_CONFIG))
    finally:
        await nc.close()


async def ledger_rows(conn, tenant: str) -> list[tuple]:
    return await rows_when_ready(
        conn, "SELECT status, cost_usd, baseline_cost_usd, escalation_cost_usd, escalated,"
        " provider, model_used, prompt_sha256 FROM requests WHERE tenant = %s", (tenant,),
        at_least=REQUESTS, wait_s=30)


def test_the_mix_is_drawn_in_its_proportions():
    drawn = mix.draw(PROMPTS, mix.Mix.parse("70/20/10").counts(1000))

    labels = [label for label, _ in drawn]
    assert (labels.count("simple"), labels.count("medium"), labels.count("complex")) \
        == (700, 200, 100)
    assert mix.Mix.parse("1/1/1").counts(10) == {"simple": 4, "medium": 3, "complex": 3}
    with pytest.raises(ValueError, match="three non-negative shares"):
        mix.Mix.parse("70/30")


async def test_cost_baseline_and_escalation_cost_are_the_ledgers(report, conn):
    for tenant, run in ((report["tenants"]["routed"], report),
                        (report["tenants"]["top_tier"], report["top_tier"])):
        rows = await ledger_rows(conn, tenant)
        ok = [r for r in rows if r[0] == "ok"]

        assert len(rows) == REQUESTS and len(ok) == run["answered"] == REQUESTS
        assert float(sum(r[1] for r in ok)) == pytest.approx(run["cost_usd"], abs=1e-9)
    routed = await ledger_rows(conn, report["tenants"]["routed"])
    assert float(sum(r[2] for r in routed)) == pytest.approx(report["baseline_usd"], abs=1e-9)
    assert float(sum(r[3] for r in routed)) == pytest.approx(report["escalation_cost_usd"],
                                                              abs=1e-9)
    assert sum(r[4] for r in routed) == report["escalated"]
    baseline, cost = report["baseline_usd"], report["cost_usd"]
    assert report["savings_pct"] == pytest.approx(100 * (baseline - cost) / baseline, abs=0.01)
    assert report["cost_usd"] == pytest.approx(
        report["answer_cost_usd"] + report["escalation_cost_usd"], abs=1e-9)


async def test_quality_is_the_emulators_own_count_over_the_final_answers(report, conn):
    models = load_scenario().models
    by_hash = {hashlib.sha256(p.encode()).hexdigest(): p
               for _, p in mix.draw(PROMPTS, mix.Mix.parse("70/20/10").counts(REQUESTS))}

    def good(rows: list[tuple]) -> int:
        return sum(masters(models[model], model, by_hash[sha])
                   for _, _, _, _, _, _, model, sha in rows)

    routed = await ledger_rows(conn, report["tenants"]["routed"])
    top = await ledger_rows(conn, report["tenants"]["top_tier"])

    assert report["quality"] == round(good(routed) / REQUESTS, 4)
    assert report["top_tier_quality"] == round(good(top) / REQUESTS, 4)
    assert report["top_tier"]["models"] == {"openai:gpt-4o": REQUESTS}
    assert report["profile"] == "seed" and report["unjudged"] == 0
    # The seed's top tier is its baseline model: the verdicts asked without a call agree with
    # the count over the answers it served.
    assert report["baseline_quality"] == report["top_tier_quality"]


async def test_the_verdicts_read_are_those_the_emulator_marks_on_its_answers(emulator):
    prompts = [p for _, p in mix.draw(PROMPTS, mix.Mix.parse("0/1/1").counts(12))]
    served = openai.AsyncOpenAI(base_url=f"{emulator.base}/v1", api_key="emulated")
    marked = []
    for prompt in prompts:
        completion = await served.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
        marked.append(completion.model_extra["emulator_verdict"])
    replies = [{"provider": "openai", "model_used": "gpt-4o-mini"}] * len(prompts)

    read = await mix.market_verdicts(emulator.base, prompts, replies)

    assert read == marked and {"good", "weak"} <= set(read)
    served = ModelRef(provider="openai", model="gpt-4o-mini")
    assert await mix.baseline_quality(emulator.base, prompts, served) \
        == round(marked.count("good") / len(marked), 4)
    unserved = ModelRef(provider="openai", model="gpt-5")  # not in the emulator's market
    assert await mix.baseline_quality(emulator.base, prompts, unserved) is None


def test_a_report_refuses_to_name_a_configuration_that_did_not_answer():
    config = load_config()  # the default profile, cheapest
    own = {m.key for t in config.tiers for m in t.models}

    mix._same_configuration(config, own)  # the stack's own models: fine
    with pytest.raises(mix.OtherConfiguration, match="openai:gpt-4o-2024"):
        mix._same_configuration(config, {*own, "openai:gpt-4o-2024"})


def test_the_bench_command_needs_the_emulator_for_quality():
    done = subprocess.run(
        [sys.executable, "-m", "smart_router.cli", "bench", "--mix", "70/20/10"],
        env=dict(os.environ), capture_output=True, text=True, timeout=60)

    assert done.returncode == 2 and "--mix needs --emulator URL" in done.stderr
