"""train-router learns a planted signal, writes a model file that loads, and `classify
--router-model` prints the learned score beside the tag."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.classifier import router_live
from services.classifier.data.outcomes import alpaca_eval, cruxeval
from services.classifier.router_model import (
    SHIPPED_PATH,
    Featurizer,
    Ridge,
    Router,
    RouterModel,
)

CLI = [sys.executable, "-m", "smart_router.cli"]
OUTCOMES = SHIPPED_PATH.parent.parent / "data" / "outcomes"
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


def test_ridge_solves_the_smaller_system_with_the_same_answer():
    """More rows than features (a ledger's thousands of requests) are solved d x d, fewer n x n:
    both are the same ridge fit."""
    rng = np.random.default_rng(3)
    x, gain = rng.standard_normal((300, 40)), rng.standard_normal(300)

    tall = Ridge.fit(x, gain, alpha=3.0)  # 300 > 40: the d x d system
    z = (x - tall.mean) / tall.scale
    dual = z.T @ np.linalg.solve(z @ z.T + 3.0 * 300 * np.eye(300), gain - gain.mean())
    wide = Ridge.fit(x[:30], gain[:30], alpha=3.0)  # 30 < 40: the n x n system
    zw = (x[:30] - wide.mean) / wide.scale
    primal = np.linalg.solve(zw.T @ zw + 3.0 * 30 * np.eye(40),
                             zw.T @ (gain[:30] - gain[:30].mean()))

    assert np.allclose(tall.w, dual) and np.allclose(wide.w, primal)


def test_a_file_that_is_not_a_router_model_is_refused_clearly(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps({"format": "something else"})))

    with pytest.raises(ValueError, match="not a router model"):
        RouterModel.load(bad)
    with pytest.raises(ValueError, match="cannot load the router model"):
        RouterModel.load(tmp_path / "missing.npz")


def test_the_shipped_model_is_the_one_the_readme_describes():
    """Trained on the shipped outcome file (same bytes), on lexical features only (no e5 run
    per prompt), with its figures in its metadata; the p50 time of a score is printed for the
    README."""
    model = RouterModel.load(SHIPPED_PATH)
    data = OUTCOMES / model.meta["data"]
    router = Router(model, Featurizer())
    router.strong_score("warm up")
    times = []
    for i in range(40):
        started = time.perf_counter()
        router.strong_score(f"Summarise chapter {i} of the report in three bullet points.")
        times.append(time.perf_counter() - started)
    print(f"shipped strong_score p50 {np.median(times) * 1000:.2f} ms")

    assert hashlib.sha256(data.read_bytes()).hexdigest() == model.meta["data_sha256"]
    assert "embedding" not in model.parts
    assert (model.meta["weak"], model.meta["strong"]) == ("Mixtral-8x7B-Instruct-v0.1",
                                                         "gpt-4-turbo")
    assert 0 <= model.meta["nested"]["apgr"] <= 1
    # AlpacaEval's data is CC BY-NC 4.0: measured on, never the shipped model's training data.
    assert model.meta["data"] not in {name for name, _ in alpaca_eval.SOURCES.values()}


def annotation(model: str, instruction: str, preference: float | None) -> dict:
    return {"instruction": instruction, "generator_1": alpaca_eval.REFERENCE,
            "generator_2": model, "preference": preference}


def test_alpaca_eval_scores_are_each_models_preference_against_the_reference(
        tmp_path, monkeypatch):
    """Built from a git snapshot: preference 1..2 becomes 0..1 per model and prompt, in the
    eval set's order; an unjudged answer leaves its model off that line; a file comparing
    with another reference is refused."""
    files = {
        "m1": [annotation("m1", "Write a haiku.", 1.25), annotation("m1", "Sum 2 and 2.", None)],
        "m2": [annotation("m2", "Write a haiku.", 2.0), annotation("m2", "Sum 2 and 2.", 1.0)],
        "odd": [annotation("odd", "Write a haiku.", 1.0) | {"generator_1": "text_davinci_003"}],
    }
    for model, rows in files.items():
        path = tmp_path / "results" / model / "judge" / "annotations.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rows))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "results"], check=True)
    monkeypatch.setattr(alpaca_eval, "COMMIT", "HEAD")

    rows = alpaca_eval.preferences(tmp_path, "judge", ["m1", "m2"])

    assert rows == [
        {"id": "alpaca-eval-000", "prompt": "Write a haiku.", "scores": {"m1": 0.25, "m2": 1.0}},
        {"id": "alpaca-eval-001", "prompt": "Sum 2 and 2.", "scores": {"m2": 0.0}},
    ]
    with pytest.raises(ValueError, match="compares text_davinci_003 with odd"):
        alpaca_eval.preferences(tmp_path, "judge", ["odd"])


def crux_item(question: str, reply: str, answer: str) -> dict:
    return {"id": f"crux-{question}", "question": question, "output": [reply], "answer": answer}


def test_cruxeval_scores_each_models_answer_against_the_reference(tmp_path, monkeypatch):
    """Built from a git snapshot: 1 when the reply's answer (its first JSON object with one,
    else the text after "answer":), quotes stripped, equals the reference; 0 for a wrong or
    missing answer; a file asking another question under an id is refused."""
    files = {
        "strong": [crux_item("q1", 'Thinking... {"reasoning": "r", "answer": "[1, 2]"}', "[1, 2]"),
                   crux_item("q2", '```json\n{"answer": \'abc\'}\n```', "'abc'")],
        "weak": [crux_item("q1", '{"reasoning": "r", "answer": "[2, 1]"}', "[1, 2]"),
                 crux_item("q2", "I cannot tell.", "'abc'")],
    }
    folder = tmp_path / cruxeval.FOLDER
    folder.mkdir(parents=True)
    for model, items in files.items():
        (folder / f"{model}.json").write_text(json.dumps(items))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "results"], check=True)
    monkeypatch.setattr(cruxeval, "COMMIT", "HEAD")

    rows = cruxeval.outcomes(tmp_path)

    assert [(r["prompt"], r["scores"]) for r in rows] == [
        ("q1", {"strong": 1.0, "weak": 0.0}), ("q2", {"strong": 1.0, "weak": 0.0})]
    (folder / "odd.json").write_text(json.dumps([crux_item("q1", "{}", "x") | {"question": "z"}]))
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "odd"], check=True)
    with pytest.raises(ValueError, match="asks another question"):
        cruxeval.outcomes(tmp_path)


def _altered(source: Path, target: Path, **changes: np.ndarray) -> None:
    """A copy of the model file with some of its arrays replaced."""
    with np.load(source) as data:
        arrays = {name: data[name] for name in data.files} | changes
    with target.open("wb") as out:
        np.savez(out, **arrays)


PROMPT = f"Explain a cake recipe using a {MARKER} rotation, please."


@pytest.fixture
def serving(trained, tmp_path, monkeypatch):
    """A live router on a copy of the trained model, looking at its file on every call: the
    file, the router and its verdict on PROMPT."""
    monkeypatch.setattr(router_live, "RELOAD_CHECK_S", 0.0)
    live = tmp_path / "router.npz"
    shutil.copy(trained[0], live)
    router = router_live.LiveRouter(live, Featurizer(), strong_share=0.2, medium_share=0.3)
    return live, router, router.judge(PROMPT)


def test_a_file_that_loads_but_cannot_route_is_refused_and_the_model_kept(
        serving, trained, tmp_path):
    """Swapped in while serving: weights one short of the features named (before: loaded,
    then every request failed with a matmul error), a calibration that is NaN (before:
    strong_score NaN, every prompt routed simple, nothing logged), half a file and a lone
    .npy (before: BadZipFile and TypeError escaped the reload, failing a request each)."""
    live, router, before = serving
    with np.load(trained[0]) as data:  # a ridge's or the neighbours' feature axis
        short = {name: data[name][..., :-1] for name in data.files
                 if name in ("scorer_mean", "scorer_scale", "scorer_w", "scorer_keys")}
    broken = {"nan calibration": {"calibration": np.array([np.nan, 0.0])},
              "quantiles out of order": {"raw_quantiles": np.linspace(1, 0, 101)},
              "weights one short": short}
    files = {name: tmp_path / f"{name}.npz" for name in broken}
    for name, changes in broken.items():
        _altered(trained[0], files[name], **changes)
    half = tmp_path / "half.npz"
    half.write_bytes(trained[0].read_bytes()[:2000])
    lone = tmp_path / "lone.npy"
    np.save(lone, np.zeros(3))

    for bad in [*files.values(), half, lone]:
        shutil.copy(bad, live)
        assert _judged_once_read(router, PROMPT) == before, bad.name
        with pytest.raises(ValueError, match="router model"):
            router_live.LiveRouter(live, Featurizer(), strong_share=0.2, medium_share=0.3)


def test_a_broken_new_file_keeps_the_model_in_use_and_a_good_one_replaces_it(serving):
    live, router, before = serving

    live.write_bytes(b"not a model")
    kept = _judged_once_read(router, PROMPT)
    shutil.copy(SHIPPED_PATH, live)
    replaced = _judged_once_read(router, PROMPT)

    assert kept == before and before.strong_score > 0.5
    assert replaced != before
    assert router.model.meta["data"] == "arena-bench-v1.jsonl"


def _judged_once_read(router: router_live.LiveRouter, prompt: str) -> router_live.RouterVerdict:
    """The verdict once a changed file has been read on the loader thread (and swapped in, or
    refused): the first look at the file starts the read."""
    router.judge(prompt)
    deadline = time.monotonic() + 30
    while router.loading:
        assert time.monotonic() < deadline, "the router model was not read within 30 s"
        time.sleep(0.01)
    return router.judge(prompt)


def _release(fifo: Path, within_s: float = 10.0) -> None:
    """A read blocked on `fifo` ends (a writer comes and goes at once), once its reader has it
    open; with no reader within `within_s`, nothing happens (a blocking open would wait for a
    reader for ever)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:  # ENXIO: no reader has it open yet
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


def test_a_file_changing_while_it_is_read_starts_no_more_readers(serving, tmp_path):
    """Before, each change seen while a read was stalled started a reader thread: 50 changes,
    50 threads. Now the file is read again once the read in hand ends."""
    live, router, before = serving
    stalled = tmp_path / "stalled"
    os.mkfifo(stalled)
    os.replace(stalled, live)
    readers = lambda: sum(t.name == "router-model-reader" for t in threading.enumerate())  # noqa: E731

    for i in range(50):
        os.utime(live, ns=(i, i))
        assert router.judge(PROMPT) == before
    held = readers()
    os.replace(live, stalled)
    shutil.copy(SHIPPED_PATH, live)
    _release(stalled)  # the stalled read ends (refused); the newest file is read next
    for _ in range(2):  # the first look swaps nothing in and starts the read of the new file
        replaced = _judged_once_read(router, PROMPT)

    assert held == 1
    assert replaced != before and router.model.meta["data"] == "arena-bench-v1.jsonl"


def test_a_stalled_router_model_file_does_not_hold_the_prompts(serving, tmp_path, monkeypatch):
    """The file swapped for one whose read never ends (a FIFO, as a stalled mount would be):
    before, the model thread hung on the read and every prompt behind it waited; now the model
    in use answers while the file is read aside, and a good file put in its place is read and
    swapped in even while the stalled read still hangs."""
    live, router, before = serving
    monkeypatch.setattr(router_live, "STALLED_READ_S", 0.0)
    stalled = tmp_path / "stalled"
    os.mkfifo(stalled)
    os.replace(stalled, live)

    with ThreadPoolExecutor(1) as pool:  # the model thread
        answers = [pool.submit(router.judge, PROMPT).result(timeout=10) for _ in range(3)]
        assert router.loading
        os.replace(live, stalled)  # the stalled read goes on; a good file takes the name
        shutil.copy(SHIPPED_PATH, tmp_path / "next.npz")
        os.replace(tmp_path / "next.npz", live)
        replaced = pool.submit(_judged_once_read, router, PROMPT).result(timeout=30)
    _release(stalled)  # the stalled read ends (refused), and its thread with it

    assert answers == [before] * 3
    assert replaced != before and router.model.meta["data"] == "arena-bench-v1.jsonl"


def test_train_router_refuses_an_out_it_cannot_write_before_training(tmp_path):
    """Before, --out inside a file was found only after the training, with an errno."""
    data = tmp_path / "planted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in planted(60, seed=1)))
    done = subprocess.run([*CLI, "train-router", str(data), "--out", str(data / "model.npz")],
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: cannot write the model to {data / 'model.npz'}: "
                                   f"{data} is not a folder")


def test_training_on_lexical_features_embeds_no_prompt(tmp_path):
    """`--features lexical` needs no e5: before, every prompt was embedded anyway (e5 is most
    of the cost: 3,000 prompts took 1:48 and 988 MB)."""
    from services.classifier import router_train

    embedded = []

    class Counting(Featurizer):
        def __call__(self, text, parts):
            if "embedding" in parts:
                embedded.append(text)
            return super().__call__(text, parts)

    data = tmp_path / "planted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in planted(60, seed=1)))
    model, _ = router_train.train(data, featurizer=Counting(), features="lexical")

    assert embedded == [] and model.parts == ("lexical", "structure")
