"""Labels from production: a user's feedback (NATS and the CLI) reaches the ledger or is refused
with a code; with ledger.store_features on, a request's row keeps its feature vector and no
text; `train-router --from-ledger` learns from escalation verdicts and feedback on requests the
real pipeline answered.

The stack's classifier is swapped, for this module, for one whose config turns
ledger.store_features on; the stack's own is back when the module ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import numpy as np
import pytest
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from services.classifier.ledger_outcomes import read_ledger
from services.classifier.router_model import (
    FEATURE_SETS,
    STORED_DTYPE,
    Featurizer,
    Router,
    RouterModel,
)
from services.escalator.sampling import Sampler
from services.escalator.worker import Escalator
from services.ledger import stats
from shared import db, outcomes, subjects
from shared.config import RouterConfig, SamplingConfig, load_config
from shared.messages import Answer, Attempt, Origin, SampleVerdict
from shared.pricing import Pricer
from shared.providers import Providers
from smart_router import embedded
from tests import harness
from tests.test_cli import assert_fails_with_one_line
from tests.stage_helpers import attempt, envelope, stage_config
from tests.test_router_train import MARKER, planted

CLI = [sys.executable, "-m", "smart_router.cli"]
LIMITS = load_config(harness.TEST_CONFIG).limits
TENANT = "fb-acme"


@contextlib.contextmanager
def swapped(stack, service: str, folder: Path, settings: str) -> Iterator[None]:
    """The stack's `service` replaced by one whose config adds `settings` (TOML); the stack's
    own is back afterwards."""
    config = folder / f"{service}.toml"
    config.write_text(harness.TEST_CONFIG.read_text() + settings)
    load_config(config)  # a config the service would refuse fails here, with its reason
    stack.processes.kill(service)
    ours = harness.Processes({**stack.processes.env, "ROUTER_CONFIG": str(config)}, folder)
    ours.start(service)
    try:
        asyncio.run(_first_reply(stack.nats_url))
        yield
    finally:
        ours.stop_all()
        stack.processes.start(service)
        asyncio.run(_first_reply(stack.nats_url))


@pytest.fixture(scope="module")
def storing_classifier(stack, tmp_path_factory) -> Iterator[None]:
    with swapped(stack, "classifier", tmp_path_factory.mktemp("feedback"),
                 "\n[ledger]\nstore_features = true\n"):
        yield


@pytest.fixture
def sampling_escalator(stack, tmp_path) -> Iterator[None]:
    """Every answer served below the top tier is compared with the top tier's."""
    with swapped(stack, "escalator", tmp_path, "\n[escalation.sampling]\nshare = 1.0\n"):
        yield


async def _first_reply(nats_url: str, timeout_s: float = 90.0) -> None:
    """Ask until a classifier answers (no responders while it starts)."""
    nc = await nats.connect(nats_url)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    await harness.ask(nc, {"prompt": "Say hello."}, timeout=10)
                    return
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def answered(nc, conn, prompt: str, **fields) -> str:
    """The request_id of an answered request, once the ledger has its row."""
    reply = await harness.ask(nc, {"prompt": prompt, "tenant": TENANT, **fields})
    assert "error" not in reply, reply
    await harness.rows_when_ready(conn, "SELECT 1 FROM requests WHERE request_id = %s",
                                  (reply["request_id"],))
    return reply["request_id"]


async def send(nc, body: dict | bytes, subject: str = subjects.FEEDBACK) -> dict:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json.loads((await nc.request(subject, data, timeout=10)).data)


async def feedback_rows(conn, request_id: str) -> list[tuple]:
    cur = await conn.execute("SELECT tenant, score, comment FROM feedback WHERE request_id = %s",
                             (request_id,))
    return await cur.fetchall()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LOG_LEVEL": "INFO", **env})


# --- feedback ----------------------------------------------------------------------------

async def test_feedback_on_nats_reaches_the_ledger_and_the_latest_counts(storing_classifier,
                                                                        nc, conn):
    request_id = await answered(nc, conn, "Name a colour of the rainbow.")

    first = await send(nc, {"request_id": request_id, "score": 0.25, "tenant": TENANT,
                            "comment": "too short"})
    second = await send(nc, {"request_id": request_id, "score": 1, "tenant": TENANT})

    assert first == {"request_id": request_id, "score": 0.25, "recorded": True}
    assert second["recorded"] is True
    assert await feedback_rows(conn, request_id) == [(TENANT, 1.0, None)]
    # Below what the ledger's column can hold (PostgreSQL refused 1e-50): recorded as 0.
    tiny = await send(nc, {"request_id": request_id, "score": 1e-50, "tenant": TENANT})
    assert tiny == {"request_id": request_id, "score": 0.0, "recorded": True}
    assert await feedback_rows(conn, request_id) == [(TENANT, 0.0, None)]


async def test_a_tenant_s_own_subject_vouches_for_its_tenant(storing_classifier, nc, conn,
                                                             servers):
    request_id = await answered(nc, conn, "Name a planet.")
    # Client identities' connections: each one's inbox is its tenant's (open mode here).
    acme = await nats.connect(servers.nats_url, inbox_prefix=f"_INBOX.{TENANT}")
    globex = await nats.connect(servers.nats_url, inbox_prefix="_INBOX.globex")
    try:
        ack = await send(acme, {"request_id": request_id, "score": 0.5},
                         subjects.feedback(TENANT))
        naming_another = await send(acme, {"request_id": request_id, "score": 0.5,
                                           "tenant": "globex"}, subjects.feedback(TENANT))
        from_another = await send(globex, {"request_id": request_id, "score": 0.5},
                                  subjects.feedback("globex"))
    finally:
        await acme.close()
        await globex.close()
    # A reply is only ever sent to the tenant's own inboxes: none comes to another's.
    with pytest.raises(nats.errors.TimeoutError):
        await nc.request(subjects.feedback(TENANT),
                         json.dumps({"request_id": request_id, "score": 0.0}).encode(),
                         timeout=1.5)

    assert ack["recorded"] is True
    assert naming_another["error"]["code"] == "invalid_request"
    assert "tenant 'fb-acme'" in naming_another["error"]["message"]
    assert from_another["error"]["code"] == "unknown_request"
    assert await feedback_rows(conn, request_id) == [(TENANT, 0.5, None)]


@pytest.mark.parametrize(("body", "code", "says"), [
    ({"score": 2}, "invalid_request", "'score'"),
    (b'{"request_id": "%s", "score": NaN, "tenant": "fb-acme"}', "invalid_request", "'score'"),
    ({"score": -0.1}, "invalid_request", "'score'"),
    ({"score": "0.5"}, "invalid_request", "'score'"),
    ({"score": True}, "invalid_request", "'score'"),
    ({"score": 0.5, "comment": "nul\x00byte"}, "invalid_request", "'comment'"),
    ({"score": 0.5, "comment": "x" * 501}, "invalid_request", "'comment'"),
    ({"score": 0.5, "stars": 5}, "invalid_request", "unknown field 'stars'"),
    ({"score": 0.5, "tenant": "globex"}, "unknown_request", "no answered request"),
    ({"score": 0.5, "request_id": "no-such-request"}, "unknown_request", "no answered request"),
    ({"score": 0.5, "request_id": "bad id/with.dots"}, "invalid_request", "'request_id'"),
    ({"score": 0.5, "comment": "y" * 5000}, "invalid_request", "bytes; the limit is 4096"),
    (b"not json", "invalid_request", "not valid JSON"),
])
async def test_invalid_feedback_is_refused_with_a_code(storing_classifier, nc, conn, body, code,
                                                       says):
    request_id = await answered(nc, conn, "Name a fruit.")
    if isinstance(body, bytes):
        data = body.replace(b"%s", request_id.encode())
    else:
        data = json.dumps({"request_id": request_id, "tenant": TENANT} | body).encode()

    reply = await send(nc, data)

    assert reply["error"]["code"] == code and says in reply["error"]["message"], reply
    assert await feedback_rows(conn, request_id) == []


async def test_the_cli_records_feedback_or_says_why_not_in_one_line(storing_classifier, stack,
                                                                   nc, conn):
    request_id = await answered(nc, conn, "Name a river.")
    env = {"NATS_URL": stack.nats_url}

    done = await asyncio.to_thread(cli, "feedback", request_id, "0.75", "--tenant", TENANT,
                                   "--comment", "good enough", "--json", **env)
    unknown = await asyncio.to_thread(cli, "feedback", "no-such-request", "1", **env)
    nan = await asyncio.to_thread(cli, "feedback", request_id, "nan", "--tenant", TENANT, **env)
    bad_id = await asyncio.to_thread(cli, "feedback", "bad/id", "1", **env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"request_id": request_id, "score": 0.75, "recorded": True}
    assert await feedback_rows(conn, request_id) == [(TENANT, 0.75, "good enough")]
    assert_fails_with_one_line(unknown, 1, "unknown_request: no answered request")
    assert_fails_with_one_line(nan, 1, "invalid_request: 'score'")
    assert_fails_with_one_line(bad_id, 2, "invalid request id")


# --- features in the ledger ------------------------------------------------------------------

async def test_with_store_features_a_row_keeps_the_features_and_no_text(storing_classifier, nc,
                                                                       conn):
    prompt = "Describe a lighthouse at night in two sentences."
    request_id = await answered(nc, conn, prompt)

    (row,) = await harness.rows_when_ready(
        conn, "SELECT features, feature_set, prompt_text, prompt_chars FROM requests"
        " WHERE request_id = %s", (request_id,))
    features, feature_set, text, chars = row

    assert text is None and chars == len(prompt)  # the fingerprint, never the text
    assert feature_set == "lexical"  # no router model configured: the cheap set
    stored = np.frombuffer(features, dtype=STORED_DTYPE)
    expected = Featurizer()(prompt, FEATURE_SETS["lexical"])
    assert len(stored) == len(expected) == 4096 + 6
    assert np.allclose(stored, expected, atol=2e-3)


async def test_with_store_features_a_prompt_at_the_byte_limit_is_answered(storing_classifier,
                                                                          nc, conn):
    """The feature vector rides with the request: a prompt at the limit still travels."""
    overhead = len(json.dumps({"prompt": "", "tenant": TENANT}).encode())
    prompt = "Summarise this. " + "w" * (LIMITS.max_request_bytes - overhead - 16)
    assert len(json.dumps({"prompt": prompt, "tenant": TENANT}).encode()) == (
        LIMITS.max_request_bytes)

    request_id = await answered(nc, conn, prompt)

    (row,) = await harness.rows_when_ready(
        conn, "SELECT feature_set, length(features) FROM requests WHERE request_id = %s",
        (request_id,))
    assert row == ("lexical", 2 * (4096 + 6))


# --- judge sampling ----------------------------------------------------------------------

async def test_judge_sampling_compares_a_served_answer_with_the_top_tier_s_apart(
        sampling_escalator, nc, conn):
    top = await harness.ask(nc, {"prompt": "Name a colour of grass.", "tier": "complex"})
    cheap = await harness.ask(nc, {"prompt": "Name a colour of the sky."})
    assert cheap["tier"] == "simple" and not cheap["escalated"], cheap
    # Kept from the top tier by their callers: a pinned tier, a pinned model, a lower max_tier.
    kept = await asyncio.gather(*(harness.ask(nc, {"prompt": "Name a colour of snow.", **pin})
                                  for pin in ({"tier": "simple"}, {"model": "gpt-4o-mini"},
                                              {"max_tier": "medium"})))
    assert all("error" not in r and r["tier"] != "complex" for r in kept), kept

    sampled = await harness.rows_when_ready(
        conn, "SELECT model, tier, reason, cost_usd FROM attempts WHERE request_id = %s"
        " AND outcome = 'sample' ORDER BY attempt", (cheap["request_id"],), at_least=2)
    (cost,) = (await (await conn.execute(
        "SELECT cost_usd FROM requests WHERE request_id = %s",
        (cheap["request_id"],))).fetchone()) or (None,)
    summary = await stats.summary(conn, 1)
    shown = summary["sampling_cost_usd"]
    none_for_top = await (await conn.execute(
        "SELECT 1 FROM attempts WHERE request_id = ANY(%s) AND outcome = 'sample'",
        ([r["request_id"] for r in (top, *kept)],))).fetchall()

    (reference, judged) = sampled
    assert reference[:2] == ("gpt-4o", "complex") and reference[3] > 0  # the top tier's first
    assert judged[0] == "llama-3.1-8b-instant" and judged[3] > 0  # escalation.judge's model
    assert judged[2] in (SampleVerdict.AS_GOOD, SampleVerdict.FELL_SHORT)
    # Paid apart: the request's own cost is its reply's, and stats shows the samples' cost.
    assert float(cost) == pytest.approx(cheap["cost_usd"], abs=1e-9)
    assert shown >= float(reference[3] + judged[3]) - 1e-9
    assert summary["spent_usd"] == pytest.approx(  # the whole bill counts the samples
        summary["cost_usd"] + summary["failed_cost_usd"] + shown, abs=1e-9)
    assert none_for_top == []


def sampling_config(share: float = 1.0, slots: int | None = None) -> RouterConfig:
    """The test stack's configuration with judge sampling at `share`, `slots` at once."""
    cfg = stage_config()
    pipeline = cfg.pipeline.model_copy(
        update={"escalator_concurrency": slots or cfg.pipeline.escalator_concurrency})
    escalation = cfg.escalation.model_copy(update={"sampling": SamplingConfig(share=share)})
    return cfg.model_copy(update={"escalation": escalation, "pipeline": pipeline})


def test_judge_sampling_picks_no_request_its_caller_kept_from_the_top_tier():
    cfg = sampling_config()
    sampler = Sampler(cfg, Providers(), Pricer(cfg.pricing))
    served = attempt(1)  # on the simple tier
    free = envelope()
    by_request = free.model_copy(update={"classification": free.classification.model_copy(
        update={"decided_by": "request"})})

    assert sampler.picks(free, served)
    assert not sampler.picks(by_request, served)  # a pinned tier
    assert not sampler.picks(envelope(model="gpt-4o-mini"), served)
    assert not sampler.picks(envelope(max_tier_index=1), served)


def test_judge_sampling_draws_no_sample_that_could_cost_past_its_cap():
    """The operator pays for samples: a request whose top-tier call could cost more than
    escalation.sampling.max_cost_usd at its worst (a long conversation, a large max_tokens)
    is not sampled. Before, one sample could cost $0.42 on a request capped at $0.0001."""
    cfg = sampling_config()
    sampler = Sampler(cfg, Providers(), Pricer(cfg.pricing))
    served = attempt(1)

    assert sampler.picks(envelope(max_tokens=1000), served)
    assert not sampler.picks(envelope(max_tokens=200_000), served)
    assert not sampler.picks(envelope("word " * 50_000), served)


@pytest.fixture
def providers(providers, emulator, monkeypatch) -> Providers:
    for name, value in harness.emulator_env(emulator.base).items():
        monkeypatch.setenv(name, value)
    return providers


async def test_judge_samples_run_a_bounded_few_at_once_and_stop_with_the_escalator(
        providers, emulator):
    cfg = sampling_config(slots=1)
    sampler = Sampler(cfg, providers, Pricer(cfg.pricing))
    recorded: list[Attempt] = []

    async def record(calls: list[Attempt]) -> None:
        recorded.extend(calls)

    sampler.start(envelope(), "Paris.", record)
    sampler.start(envelope(), "Paris.", record)  # its one slot is taken: skipped
    async with asyncio.timeout(30):
        while len(recorded) < 2:  # the top tier's answer, then the judge's verdict
            await asyncio.sleep(0.05)
    assert sampler.skipped == 1 and [a.outcome for a in recorded] == ["sample", "sample"]

    emulator.faults(latency_ms=1000)  # a sample still calling when the escalator stops
    sampler.start(envelope(), "Paris.", record)
    async with asyncio.timeout(10):
        while emulator.control("GET", "stats")["in_flight"] == 0:
            await asyncio.sleep(0.05)
    async with asyncio.timeout(15):  # its paid calls finish and are recorded, not cut off
        await sampler.stop()
    sampler.start(envelope(), "Paris.", record)  # none after the stop

    assert [a.outcome for a in recorded] == ["sample"] * 4 and sampler.skipped == 2


async def test_a_failed_sample_leaves_the_finished_request_alone(stack, nc, conn, providers,
                                                                monkeypatch):
    """Recording a sample fails (a JetStream receipt that times out): the escalator's handler
    has returned all the same, so its message is acked, not redelivered to finish the request
    again, pay both calls again and end in a dead letter."""
    async def unrecordable(*_args: object, **_kwargs: object) -> None:
        raise nats.errors.TimeoutError

    monkeypatch.setattr(outcomes, "record_attempts", unrecordable)  # used by the sample alone
    broker = NatsBroker(stack.nats_url, apply_types=False)
    await broker.connect()
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox)
    await nc.flush()  # the server has the subscription before another connection replies to it
    escalator = Escalator(broker, sampling_config())
    trace_id = uuid.uuid4().hex
    finished = envelope(attempts=[attempt(1)]).model_copy(update={
        "trace_id": trace_id, "request_id": trace_id,
        "origin": Origin(kind="online", reply_to=inbox),
        "answer": Answer(text="Paris.", attempt=1, tier_index=0, finish_reason="stop")})
    try:
        with capture_logs() as logs:
            await escalator.decide(finished)  # before: raised, and JetStream redelivered
            async with asyncio.timeout(30):
                while not any(e["event"] == "sample.failed" for e in logs):
                    await asyncio.sleep(0.05)
        reply = json.loads((await replies.next_msg(timeout=5)).data)
        with pytest.raises(nats.errors.TimeoutError):
            await replies.next_msg(timeout=1)
        rows = await harness.rows_when_ready(
            conn, "SELECT status FROM requests WHERE trace_id = %s", (trace_id,))
    finally:
        await escalator.sampler.stop()
        await broker.stop()

    assert reply["response"] == "Paris." and reply["tier"] == "simple"
    assert rows == [("ok",)]
    assert {"event": "sample.failed", "error": "TimeoutError"}.items() <= next(
        e for e in logs if e["event"] == "sample.failed").items()


async def test_a_finished_request_delivered_again_is_not_sampled_again(stack, emulator,
                                                                      providers):
    """Its ack lost, a finished request comes back to the escalator: its comparison was drawn
    from the trace, so before it was drawn, and paid for, again (two verdicts for one answer)."""
    broker = NatsBroker(stack.nats_url, apply_types=False)
    await broker.connect()
    escalator = Escalator(broker, sampling_config())
    trace_id = uuid.uuid4().hex
    finished = envelope(attempts=[attempt(1)]).model_copy(update={
        "trace_id": trace_id, "request_id": trace_id,
        "answer": Answer(text="Paris.", attempt=1, tier_index=0, finish_reason="stop")})
    calls = []
    try:
        for delivery in (1, 2, 3):
            before = emulator.control("GET", "stats")["total"]
            await escalator.decide(finished, redelivered=delivery > 1)
            async with asyncio.timeout(30):
                await asyncio.gather(*escalator.sampler._running)
            calls.append(emulator.control("GET", "stats")["total"] - before)
    finally:
        await escalator.sampler.stop()
        await escalator.aclose()
        await broker.stop()

    assert calls == [2, 0, 0]  # the top tier's answer and the judge's verdict, once


# --- training from the ledger ------------------------------------------------------------

async def test_train_router_from_the_ledger_learns_escalations_and_feedback(
        storing_classifier, stack, nc, conn, emulator, tmp_path):
    # The simple tier's model hedges on the marked prompts: the escalator finds its answer
    # weak and a stronger tier answers. The plain ones it answers well.
    emulator.faults({"model": "claude-haiku-4-5", "action": "hedge", "prompt_regex": MARKER})
    prompts = [row["prompt"] for row in planted(45, seed=11)]
    replies = await asyncio.gather(*(
        harness.ask(nc, {"prompt": p, "tenant": TENANT, "tier": "simple"}, timeout=60)
        for p in prompts))
    assert all("error" not in r for r in replies), replies
    assert {r["escalated"] for r, p in zip(replies, prompts, strict=True) if MARKER in p} == {True}
    await harness.rows_when_ready(
        conn, "SELECT 1 FROM requests WHERE request_id = ANY(%s)",
        ([r["request_id"] for r in replies],), at_least=len(replies))
    # Users' verdicts: the escalated answers were fine; a plain answer was not quite.
    marked = [r["request_id"] for r, p in zip(replies, prompts, strict=True) if MARKER in p]
    for request_id in marked[:4]:
        assert (await send(nc, {"request_id": request_id, "score": 0.9,
                                "tenant": TENANT}))["recorded"]
    out = tmp_path / "from-ledger.npz"

    done = await asyncio.to_thread(
        cli, "train-router", "--from-ledger", "--since", "1", "--out", str(out), "--json",
        DATABASE_URL=stack.database_url, ROUTER_CONFIG=str(harness.TEST_CONFIG))

    capped = await asyncio.to_thread(read_ledger, stack.database_url, "complex", 1, cap=10)
    whole = await asyncio.to_thread(read_ledger, stack.database_url, "complex", 1)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    found = report["ledger"]
    # A cap reads the most recent rows, and says how many labelled ones it left out.
    assert capped.report["rows"] == 10 and whole.report["left_out"] == 0
    assert capped.report["labelled"] + capped.report["left_out"] == whole.report["labelled"]
    assert found["labelled"] >= len(prompts) and found["feature_set"] == "lexical"
    assert found["weak_verdicts"] >= len(marked) and found["with_feedback"] >= 4
    assert report["cross_validated"]["apgr"] > 0.75  # random is 0.5
    router = Router(RouterModel.load(out), Featurizer())
    assert router.model.meta["data"] == "ledger"
    hard = router.strong_score(f"Explain a job interview using a {MARKER} rotation, please.")
    easy = router.strong_score("Tell me about a job interview, please.")
    assert hard > 0.5 > easy


def test_train_router_from_a_ledger_without_labels_says_how_many_it_needs(servers, tmp_path):
    empty = harness.fresh_database(servers.postgres_url)
    try:
        db.migrate(empty)
        done = cli("train-router", "--from-ledger", "--out", str(tmp_path / "m.npz"),
                   DATABASE_URL=empty, ROUTER_CONFIG=str(harness.TEST_CONFIG))
    finally:
        harness.drop_database(servers.postgres_url, empty)

    assert_fails_with_one_line(done, 2, "the ledger has 0 labelled requests")
    assert "needs 20 or more" in done.stderr and "ledger.store_features = true" in done.stderr
    assert not (tmp_path / "m.npz").exists()


def test_train_router_from_a_ledger_it_cannot_read_says_so_in_one_line(tmp_path):
    closed = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/postgres"

    done = cli("train-router", "--from-ledger", "--out", str(tmp_path / "m.npz"),
               DATABASE_URL=closed, ROUTER_CONFIG=str(harness.TEST_CONFIG))

    assert_fails_with_one_line(done, 2, "cannot read the ledger at DATABASE_URL")


def test_train_router_wants_a_file_or_the_ledger():
    assert_fails_with_one_line(cli("train-router"), 2, "give DATA.jsonl or --from-ledger")


def test_feedback_rows_are_labelled_by_the_rules():
    """The label rules on hand-made rows: a weak verdict, a served start tier, judge sampling's
    verdicts, feedback over all of them, and a request whose cheap side is unknown."""
    from services.classifier.ledger_outcomes import label

    vector = np.ones(3, dtype=STORED_DTYPE).tobytes()
    rows = [("a", "lexical", vector, "simple", "medium", None, True, None),
            ("b", "lexical", vector, "simple", "simple", None, False, None),
            ("c", "lexical", vector, "simple", "simple", 0.25, False, True),
            ("d", "lexical", vector, "simple", "medium", 0.5, True, None),
            ("e", "lexical", vector, "simple", "medium", None, False, None),  # cheap side failed
            ("f", "both", np.ones(5, dtype=STORED_DTYPE).tobytes(), "simple", "simple", None,
             False, None),
            ("g", "lexical", vector, "simple", "simple", None, False, True),  # fell short
            ("h", "lexical", vector, "simple", "simple", None, False, False)]  # as good

    data = label(rows)

    assert data.outcomes.prompts == ["a", "b", "c", "d", "g", "h"]
    assert data.outcomes.weak.tolist() == [0.0, 1.0, 0.25, 0.0, 0.0, 1.0]
    assert data.outcomes.strong.tolist() == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0]
    assert data.x.shape == (6, 3)
    assert data.report == {
        "rows": 8, "labelled": 6, "feature_set": "lexical", "weak_verdicts": 2,
        "served_by_the_start_tier": 4, "sample_verdicts": 3, "with_feedback": 2,
        "cheap_side_unknown": 1, "other_feature_set": 1, "unreadable": 0, "malformed": 0,
        "left_out": 0}


def test_the_most_common_vector_length_is_read_and_a_malformed_one_skipped():
    """A set's vector length changes (a new featurizer) and a blob is cut short: the larger
    group is learned from, the rest counted, and training goes on."""
    from services.classifier.ledger_outcomes import label

    def row(trace_id: str, features: bytes) -> tuple:
        return (trace_id, "lexical", features, "simple", "simple", None, False, None)

    longer, shorter = np.ones(5, dtype=STORED_DTYPE), np.ones(3, dtype=STORED_DTYPE)
    rows = [row("old", shorter.tobytes()), row("cut", b"\x00\x3c\x00"),
            *(row(f"new{i}", longer.tobytes()) for i in range(3))]

    data = label(rows, left_out=7)

    assert data.outcomes.prompts == ["new0", "new1", "new2"] and data.x.shape == (3, 5)
    assert (data.report["other_feature_set"], data.report["malformed"],
            data.report["left_out"]) == (1, 1, 7)

