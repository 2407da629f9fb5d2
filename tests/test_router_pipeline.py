"""A routed request follows the learned score: the stack's classifier is replaced for these
tests by one whose config names a router model (trained here on a planted signal), and the
real pipeline answers. The model file is then replaced under the running classifier."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.classifier.router_model import Featurizer, Router, RouterModel
from services.classifier.router_train import train
from shared.config import load_config
from tests import harness
from tests.test_router_train import MARKER, planted

# A third of the planted prompts carry the marker (raw scores near 1, the others near 0): with
# these shares the medium threshold falls in the gap between the two groups.
STRONG_SHARE, MEDIUM_SHARE = 0.1, 0.23
MARKED = f"Explain the weather in Lisbon using a {MARKER} rotation, please."
PLAIN = "Tell me about a cake recipe, please."


def model_file(folder: Path, name: str, marker_is_hard: bool) -> Path:
    rows = planted(60, seed=3)
    if not marker_is_hard:  # the same prompts, the other half needing the strong model
        rows = [r | {"scores": {"weak": 1 - r["scores"]["weak"], "strong": 1}} for r in rows]
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, _ = train(data)
    model.save(folder / f"{name}.npz")
    return folder / f"{name}.npz"


@pytest.fixture(scope="module")
def routed_classifier(stack, tmp_path_factory) -> Iterator[Path]:
    """The stack with its classifier swapped for one that reads a router model; the stack's
    own classifier is back when the module ends."""
    folder = tmp_path_factory.mktemp("router-pipeline")
    live = folder / "router.npz"
    os.replace(model_file(folder, "marker-hard", marker_is_hard=True), live)
    config = folder / "router.toml"
    config.write_text(harness.TEST_CONFIG.read_text() + (
        f'\n[classifier]\nrouter_model = "{live}"\n'
        f"\n[routing]\nstrong_share = {STRONG_SHARE}\nmedium_share = {MEDIUM_SHARE}\n"))
    load_config(config)  # a config the classifier would refuse fails here, with its reason
    stack.processes.kill("classifier")
    ours = harness.Processes({**stack.processes.env, "ROUTER_CONFIG": str(config)}, folder)
    ours.start("classifier")
    try:
        asyncio.run(_first_routed_reply(stack.nats_url))
        yield live
    finally:
        ours.stop_all()
        stack.processes.start("classifier")
        asyncio.run(_first_routed_reply(stack.nats_url, decided_by="difficulty"))


async def _first_routed_reply(nats_url: str, decided_by: str = "router_model",
                              timeout_s: float = 90.0) -> dict:
    """Ask until the classifier we expect answers (no responders while it starts)."""
    nc = await nats.connect(nats_url)
    last: object = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    last = await harness.ask(nc, {"prompt": PLAIN}, timeout=10)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
                    last = exc
                    await asyncio.sleep(0.2)
                    continue
                if last.get("classifier", {}).get("decided_by") == decided_by:
                    return last
    except TimeoutError:
        raise AssertionError(f"no reply decided by {decided_by} in {timeout_s} s; the last "
                             f"answer: {last!r}") from None
    finally:
        await nc.close()


def expected_tier(path: Path, prompt: str) -> str:
    """The tier this prompt's raw score starts at, computed here from the same file."""
    router = Router(RouterModel.load(path), Featurizer())
    top, middle = router.model.thresholds((STRONG_SHARE, STRONG_SHARE + MEDIUM_SHARE))
    raw = router.raw(prompt)
    return "complex" if raw >= top else "medium" if raw >= middle else "simple"


async def test_the_starting_tier_follows_the_learned_score(routed_classifier, nc):
    marked = await harness.ask(nc, {"prompt": MARKED})
    plain = await harness.ask(nc, {"prompt": PLAIN})

    for prompt, reply in ((MARKED, marked), (PLAIN, plain)):
        assert reply["classifier"]["decided_by"] == "router_model"
        assert reply["difficulty_tag"] in ("simple", "medium", "complex")  # the tag stays
        assert reply["attempts"][0]["tier"] == expected_tier(routed_classifier, prompt)
    assert marked["classifier"]["strong_score"] > 0.5 > plain["classifier"]["strong_score"]
    assert plain["attempts"][0]["tier"] == "simple"
    assert marked["attempts"][0]["tier"] in ("medium", "complex")


async def test_a_pinned_tier_is_the_request_s_decision(routed_classifier, nc):
    reply = await harness.ask(nc, {"prompt": MARKED, "tier": "simple"})

    assert reply["classifier"]["decided_by"] == "request"
    assert reply["attempts"][0]["tier"] == "simple"


async def test_a_new_model_file_is_picked_up_without_a_restart(routed_classifier, nc):
    reversed_model = model_file(routed_classifier.parent, "marker-easy", marker_is_hard=False)
    before = (await harness.ask(nc, {"prompt": PLAIN}))["classifier"]["strong_score"]

    os.replace(reversed_model, routed_classifier)
    deadline = time.monotonic() + 30
    while True:
        after = (await harness.ask(nc, {"prompt": PLAIN}))["classifier"]["strong_score"]
        if after > 0.5 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    assert before < 0.5 < after
