"""The correctness signals on their own and `eval-escalation` on answers labelled right or
wrong: the arithmetic re-check, task types and final answers, and each signal's recall, false
escalations and added cost, on the labelled set and on the emulator's market."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from services.escalator.scoring import arithmetic_slip
from services.escalator.verify import Verifier, final_answer, task_type
from shared.config import VerifyConfig, load_config
from shared.messages import ChatRequest, Classification, Envelope, Origin
from shared.pricing import Pricer
from shared.providers import Providers
from tests import harness


@pytest.mark.parametrize(("text", "slip"), [
    ("First, 14 × 6 = 84. Then 84 - 9 = 75. The answer is 75.", False),
    ("First, 14 × 6 = 86. Then 86 - 9 = 77. The answer is 77.", True),  # a slip carried on
    ("First, 14 × 6 = 84. Then 84 - 9 = 75. The answer is 71.", True),  # final contradicts
    ("First, 173 ÷ 12 = 14.42. Then 14.42 rounded up = 15. The answer is 15.", False),
    ("80 x 20/100 = 16, so the price is 80 - 16 = 64.", False),
    ("L'indemnité: 500 × 1/4 × 6 = 3 750 €.", False),  # a thousands space, not a result of 3
    ("The answer is 75.", False),  # nothing worked to check
    ("5 × 64 + 6 × 8 + 7 × 1 = 320 + 48 + 7 = 375.", False),  # a chain, checked link by link
    ("= 28/32 + 18/8 = 7/8 + 2 1/4 = 2 7/8", False),  # fractions and a mixed number
    ("9 − 4 + 8 × 5 = 5 + 40 = 46", True),  # the minus sign, and a slip at the chain's end
])
def test_the_arithmetic_recheck_finds_slips_and_contradictions(text, slip):
    assert arithmetic_slip(text) is slip


@pytest.mark.parametrize(("prompt", "kind"), [
    ("Which is prime?\n(A) 21\n(B) 29\n(C) 33", "choice"),
    ("Write a function that reverses a list in Python.", "code"),
    ("A tank holds 40 litres and leaks 3 litres an hour. How much is left after 5 hours?",
     "math"),
    ("What is the capital of Canada?", "factual"),
    ("Tell me a story about a fox.", "other"),
])
def test_task_types_come_from_cheap_cues(prompt, kind):
    assert task_type(prompt) == kind


@pytest.mark.parametrize(("text", "kind", "final"), [
    ("... so 12 + 3 = 15.\n\nFinal answer: 15.", "math", "15"),
    ("The answer is 1,440 minutes.", "math", "1440"),
    ("The answer is (C) 29.", "choice", "C"),
    ("Paris.", "factual", None),
])
def test_final_answers_are_extracted_for_comparison(text, kind, final):
    assert final_answer(text, kind) == final


CORRECTNESS = str(harness.ROOT / "services/escalator/data/correctness.jsonl")


def _run(*args: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "smart_router.cli", "eval-escalation", *args],
                          cwd=harness.ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _eval(*args: str, env: dict | None = None) -> dict:
    return json.loads(_run(*args, "--json", env=env))


def test_the_plain_report_shows_a_row_per_signal():
    text = _run(CORRECTNESS)

    assert "185 wrong" in text
    assert [line.split()[0] for line in text.splitlines()[4:7]] == ["free", "arithmetic",
                                                                    "combined"]


def test_the_labelled_set_reports_each_signal_and_their_combination():
    report = _eval(CORRECTNESS)

    assert report["answers"] >= 300 and 0 < report["wrong"] < report["answers"]
    signals = report["signals"]
    assert set(signals) == {"free signals", "arithmetic", "combined"}
    assert signals["arithmetic"]["recall"] > 0.1
    assert signals["arithmetic"]["false_escalations"] == 0
    assert signals["combined"]["added_cost_per_1000_usd"] == 0  # no paid check was asked for
    assert report["by_task"]["math"]["recall"] > report["by_task"]["factual"]["recall"]


def test_verification_on_the_emulators_market_catches_its_confident_mistakes(
        emulator_process, tmp_path):
    config = tmp_path / "router.toml"
    config.write_text('[escalation.verify]\nsignals = ["consistency", "verifier"]\n')
    env = {**os.environ, "ROUTER_CONFIG": str(config)}

    report = _eval("--emulator", emulator_process.base, "--verify", env=env)

    assert "measure the emulator" in report["through"]
    assert report["wrong"] > 0
    for signal in ("verifier", "consistency"):
        assert report["signals"][signal]["recall"] >= 0.5
        assert report["signals"][signal]["false_escalations"] <= 0.1
        assert report["signals"][signal]["added_cost_per_1000_usd"] > 0
    assert report["signals"]["free signals"]["recall"] == 0  # they sound sure


def _envelope(prompt: str, request_id: str, strong_score: float | None = None) -> Envelope:
    return Envelope(
        request_id=request_id, trace_id=request_id, request=ChatRequest(prompt=prompt),
        origin=Origin(kind="online"), received_at=0.0, deadline=60.0,
        classification=Classification(difficulty="simple", confidence=0.9, backend="rules",
                                      latency_ms=1.0, strong_score=strong_score),
        start_tier="simple", tier_index=0, max_tier_index=2)


def _policy(**settings) -> Verifier:
    config = VerifyConfig(enabled=True, **settings)
    return Verifier(config, Providers(), Pricer(load_config().pricing))


MATH = "A tank holds 40 litres and leaks 3 litres an hour. How much is left after 5 hours?"


def test_the_lot_is_the_requests_trace_not_the_id_its_caller_chose():
    """Before, it was drawn from the request_id: a caller could pick ids never (or always)
    checked."""
    policy = _policy(share=0.5)
    picked = sum(policy.eligible(_envelope(MATH, "b").model_copy(update={"trace_id": f"t{i}"}))
                 for i in range(200))
    assert 60 < picked < 140


def test_the_policy_picks_task_types_a_share_and_a_strong_score_band():
    ids = [f"r{i}" for i in range(400)]

    assert not _policy().eligible(_envelope("Tell me a story about a fox.", "r1"))
    assert _policy(task_types=("other",)).eligible(_envelope("Tell me a story.", "r1"))
    picked = sum(_policy(share=0.25).eligible(_envelope(MATH, i)) for i in ids)
    assert 0.15 * len(ids) < picked < 0.35 * len(ids)
    assert [_policy(share=0.25).eligible(_envelope(MATH, i)) for i in ids[:50]] == [
        _policy(share=0.25).eligible(_envelope(MATH, i)) for i in ids[:50]]  # a fixed lot
    band = _policy(strong_score_band=(0.3, 0.7))
    assert band.eligible(_envelope(MATH, "r1", strong_score=0.5))
    assert not band.eligible(_envelope(MATH, "r1", strong_score=0.9))
    assert band.eligible(_envelope(MATH, "r1"))  # no learned router: the band does not apply
