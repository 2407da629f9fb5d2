"""RouteLLM's routing metrics on hand-built outcome data whose answers are known, and the
outcome file format they read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.classifier.outcome_data import Outcomes, read_outcomes
from services.classifier.router_eval import metrics, random_router

CLI = [sys.executable, "-m", "smart_router.cli"]


def two_of_ten_need_the_strong_model() -> Outcomes:
    """Ten prompts; the weak model fails the first two, the strong model answers all."""
    weak = np.array([0.0, 0.0] + [1.0] * 8)
    return Outcomes(["p"] * 10, weak, np.ones(10), "weak", "strong", weak)


def test_a_perfect_router_recovers_the_gap_at_the_first_decile_that_holds_it():
    outcomes = two_of_ten_need_the_strong_model()

    perfect = metrics(outcomes.gain, outcomes)

    # Curve points (share, PGR): (0, 0), (0.2, 1), (1, 1): area 0.1 + 0.8.
    assert perfect.apgr == pytest.approx(0.9)
    assert perfect.cpt50 == pytest.approx(0.1)
    assert perfect.cpt80 == pytest.approx(0.16)


def test_a_reversed_router_is_below_random_and_a_constant_one_is_random():
    outcomes = two_of_ten_need_the_strong_model()

    reversed_ = metrics(-outcomes.gain, outcomes)
    constant = metrics(np.zeros(10), outcomes)
    random = random_router(outcomes)

    assert reversed_.apgr == pytest.approx(0.1)
    assert reversed_.cpt50 == pytest.approx(0.9)
    # Ties: every prompt lands on the same side of each threshold, the curve is the diagonal.
    assert constant.apgr == pytest.approx(0.5) and constant.cpt50 == pytest.approx(0.5)
    assert reversed_.apgr < random["apgr"] < metrics(outcomes.gain, outcomes).apgr


def test_the_perfect_router_is_the_maximum_over_many_random_rankings():
    rng = np.random.default_rng(7)
    weak, strong = rng.integers(0, 2, 200).astype(float), rng.integers(0, 2, 200).astype(float)
    strong[:60] = 1.0  # the strong side is better on average
    outcomes = Outcomes(["p"] * 200, weak, strong, "weak", "strong", weak)

    best = metrics(outcomes.gain, outcomes).apgr

    assert all(metrics(rng.random(200), outcomes).apgr <= best for _ in range(200))
    assert np.mean([metrics(rng.random(200), outcomes).apgr for _ in range(200)]) == \
        pytest.approx(0.5, abs=0.03)


def test_the_ranking_matters_not_the_scale_of_the_score():
    outcomes = two_of_ten_need_the_strong_model()
    score = np.linspace(0, 1, 10)[::-1]

    assert metrics(score, outcomes) == metrics(np.exp(5 * score), outcomes)


def test_no_gap_to_recover_is_an_error():
    weak = np.ones(4)
    with pytest.raises(ValueError, match="no gap"):
        metrics(np.arange(4.0), Outcomes(["p"] * 4, weak, weak, "weak", "strong", weak))


def write(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "outcomes.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_both_forms_of_a_line_and_the_choice_of_keys(tmp_path):
    path = write(tmp_path, [
        {"prompt": "a", "scores": {"haiku": 2, "sonnet": 9, "opus": 10}},
        {"prompt": "b\u2028c", "scores": {"haiku": 4, "sonnet": 8, "opus": 7.5}},
    ])

    by_mean = read_outcomes(path)
    named = read_outcomes(path, weak="sonnet", strong="opus")
    shorthand = read_outcomes(write(tmp_path, [{"prompt": "x", "weak": 0, "strong": 1}]))

    assert (by_mean.weak_key, by_mean.strong_key) == ("haiku", "opus")
    assert by_mean.prompts == ["a", "b\u2028c"]  # one line, though str.splitlines cuts it
    assert list(named.gain) == [1.0, -0.5]
    assert list(by_mean.crowd) == [5.5, 6.0]  # haiku and sonnet, the strong side left out
    assert (shorthand.weak_key, list(shorthand.gain)) == ("weak", [1.0])


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "a"}, "needs 'scores'"),
    ({"prompt": "", "weak": 0, "strong": 1}, "needs a non-empty 'prompt'"),
    ({"prompt": "a", "scores": {"weak": 1}}, "two or more"),
    ({"prompt": "a", "weak": "high", "strong": 1}, "not a number"),
    ({"prompt": "a", "weak": True, "strong": 1}, "not a number"),
    # Before: training made a model no classifier loads (APGR NaN), exit 0.
    ({"prompt": "a", "weak": -1.7e308, "strong": 1.7e308}, "within"),
    ({"prompt": "a", "weak": 10**320, "strong": 1}, "within"),  # before: OverflowError
    ('{"prompt": "a", "weak": 1' + "0" * 5000 + ', "strong": 1}', "invalid JSON"),
])
def test_a_bad_line_is_named_with_its_number(tmp_path, row, message):
    path = write(tmp_path, [{"prompt": "ok", "weak": 0, "strong": 1}, row])

    with pytest.raises(ValueError, match=f"line 2: .*{message}"):
        read_outcomes(path)


def test_a_file_that_is_not_utf8_is_refused_with_the_line_of_its_bad_byte(tmp_path):
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(b'{"prompt": "a", "weak": 0, "strong": 1}\n{"prompt": "\xff"}\n')

    with pytest.raises(ValueError, match="line 2: not UTF-8 text"):
        read_outcomes(path)


def test_eval_router_prints_the_table_and_json(tmp_path):
    rows = [{"prompt": f"Prove the theorem number {i} about primes in detail.", "weak": 0,
             "strong": 1} for i in range(10)]
    rows += [{"prompt": f"hi {i}", "weak": 1, "strong": 1} for i in range(10)]
    path = write(tmp_path, rows)

    table = subprocess.run([*CLI, "eval-router", str(path)], capture_output=True, text=True)
    document = subprocess.run([*CLI, "eval-router", str(path), "--json"], capture_output=True,
                              text=True)

    assert table.returncode == 0, table.stderr
    assert "APGR" in table.stdout and "difficulty" in table.stdout and "random" in table.stdout
    report = json.loads(document.stdout)
    assert report["prompts"] == 20
    # The oracle sends the ten up first: PGR 1 from a strong share of 50% on.
    assert report["routers"]["oracle"]["apgr"] == pytest.approx(0.75)
    assert set(report["routers"]["random"]) >= {"apgr", "apgr_sd", "cpt50", "cpt80"}
    assert 0 <= report["routers"]["difficulty"]["apgr"] <= 1


def test_eval_router_on_a_bad_file_is_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, [{"prompt": "a", "weak": 1, "strong": 0}, {"prompt": "b", "weak": 1,
                                                                       "strong": 0}])

    run = subprocess.run([*CLI, "eval-router", str(path)], capture_output=True, text=True)

    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error:")
    assert "no gap" in run.stderr
