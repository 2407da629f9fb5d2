"""train-router learns a planted signal, writes a model file that loads, and `classify
--router-model` prints the learned score beside the tag."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from services.classifier.router_model import SHIPPED_PATH, Featurizer, Router, RouterModel

CLI = [sys.executable, "-m", "smart_router.cli"]
MARKER = "quaternion"
TOPICS = ["the weather in Lisbon", "a birthday card", "sorting a list", "a cake recipe",
          "the French revolution", "learning the guitar", "a job interview", "growing tomatoes",
          "a short poem", "train timetables", "a football match", "saving money"]


def planted(n: int, seed: int) -> list[dict]:
    """Prompts that mention the marker need the strong model; the others do not."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        hard = i % 3 == 0
        text = (f"Explain {topic} using a {MARKER} rotation, please." if hard
                else f"Tell me about {topic}, please.")
        rows.append({"prompt": text, "scores": {"weak": 0 if hard else 1, "strong": 1}})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("router")
    data = folder / "planted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in planted(60, seed=1)))
    out = folder / "router.npz"
    run = subprocess.run([*CLI, "train-router", str(data), "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return out, json.loads(run.stdout)


def test_train_router_learns_the_planted_signal(trained):
    _, report = trained

    assert report["prompts"] == 60
    assert report["cross_validated"]["apgr"] > 0.8  # random is 0.5, the oracle 0.83 here
    assert report["nested"]["apgr"] > 0.8
    assert report["nested"]["cpt50"] < 0.3


def test_the_model_file_scores_unseen_prompts_by_the_signal(trained):
    model = RouterModel.load(trained[0])
    router = Router(model, Featurizer())

    marked = [router.strong_score(r["prompt"]) for r in planted(30, seed=2) if MARKER in
              r["prompt"]]
    plain = [router.strong_score(r["prompt"]) for r in planted(30, seed=2) if MARKER not in
             r["prompt"]]

    assert min(marked) > max(plain)
    assert all(0 <= s <= 1 for s in marked + plain)
    assert model.meta["format_version"] == 1 and model.meta["data"] == "planted.jsonl"


def test_thresholds_follow_the_target_share(trained):
    router = Router(RouterModel.load(trained[0]), Featurizer())
    nothing, top, middle, everything = router.model.thresholds((0.0, 0.25, 0.4, 1.0))
    fresh = planted(30, seed=3)

    assert nothing >= top >= middle >= everything
    # A third of the training prompts carry the marker: a 25% share is among their scores, so
    # fresh plain prompts stay below it; a 40% share reaches into the plain ones, so fresh
    # marked prompts are all above it.
    assert all(router.raw(r["prompt"]) < top for r in fresh if MARKER not in r["prompt"])
    assert all(router.raw(r["prompt"]) > middle for r in fresh if MARKER in r["prompt"])


def test_classify_prints_strong_score_beside_difficulty(trained):
    prompt = f"Explain saving money using a {MARKER} rotation, please."
    run = subprocess.run([*CLI, "classify", prompt, "--backend", "local",
                          "--router-model", str(trained[0])],
                         capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["difficulty"] in ("simple", "medium", "complex")
    assert 0.5 < result["strong_score"] <= 1


def test_a_file_that_is_not_a_router_model_is_refused_clearly(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps({"format": "something else"})))

    with pytest.raises(ValueError, match="not a router model"):
        RouterModel.load(bad)
    with pytest.raises(ValueError, match="cannot load the router model"):
        RouterModel.load(tmp_path / "missing.npz")


def test_the_shipped_model_adds_little_time_to_a_prompt():
    """The p50 cost of strong_score on a prompt e5 has not seen (the classifier's fast stage
    answered), and on one it has (the full stage ran): the figures the README quotes."""
    router = Router(RouterModel.load(SHIPPED_PATH), Featurizer())
    router.strong_score("warm up")
    cold, warm = [], []
    for i in range(40):
        text = f"Summarise chapter {i} of the report in three bullet points."
        started = time.perf_counter()
        router.strong_score(text)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        router.strong_score(text)
        warm.append(time.perf_counter() - started)
    print(f"strong_score p50: new prompt {np.median(cold) * 1000:.2f} ms, embedding known "
          f"{np.median(warm) * 1000:.2f} ms")
    assert np.median(warm) < np.median(cold)
