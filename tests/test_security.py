"""The trust boundary on NATS, against a real nats-server run with the shipped identities
(shared/nats_auth.py) over mutual TLS with a CA made here: the four services run as their own
identities, a client identity asks, submits and reads its own results and is refused everything
else; each service identity is refused what is not its job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from pydantic import SecretStr

from services.escalator import worker as escalator_worker
from shared import nats_auth, subjects, topology
from shared.config import Settings, load_config
from smart_router import client, embedded
from tests import harness, stage_helpers
from tests.conftest import Emulator

TENANTS = ["acme", "globex"]
VIOLATION_WAIT_S = 5.0
CLI = str(Path(sys.executable).with_name("smart-router"))


@dataclass
class Secured:
    url: str
    passwords: dict[str, str]
    tls: dict[str, str]  # NATS_TLS_* for a client that presents the test CA's certificate

    def env(self, user: str) -> dict[str, str]:
        return {"NATS_URL": self.url, **self.tls,
                **nats_auth.identity_env(user, self.passwords[user])}

    def settings(self, user: str) -> Settings:
        return Settings(**{k.lower(): v for k, v in self.env(user).items()})


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=smart-router test CA")
    for name in ("server", "client"):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key",
                                             "client.pem", "client.key")}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """nats-server with the shipped identities, requiring TLS with a client certificate."""
    folder = tmp_path_factory.mktemp("secured-nats")
    certs = make_certificates(folder)
    passwords = nats_auth.new_passwords(TENANTS)
    config = folder / "nats.conf"
    config.write_text(nats_auth.server_config(passwords, TENANTS) + (
        f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}", '
        f'ca_file: "{certs["ca.pem"]}", verify: true }}\n'))
    server = embedded.EmbeddedNats.start(folder / "data", config=config, scheme="tls")
    tls = {"NATS_TLS_CA": str(certs["ca.pem"]), "NATS_TLS_CERT": str(certs["client.pem"]),
           "NATS_TLS_KEY": str(certs["client.key"])}
    yield Secured(server.url, passwords, tls)
    server.stop()


@pytest.fixture(scope="module")
def secured_stack(secured: Secured, database_url: str, emulator_process: Emulator,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """`setup` declares the topology; each service runs as its own identity, over TLS."""
    router = load_config(harness.TEST_CONFIG)

    async def declare() -> None:
        nc = await client.connect(secured.settings(nats_auth.SETUP))
        try:
            await topology.declare(nc.jetstream(), router.pipeline, router.ledger)
        finally:
            await nc.close()

    asyncio.run(declare())
    logs = tmp_path_factory.mktemp("secured-logs")
    running = []
    for name in harness.SERVICES:
        env = {**os.environ, **secured.env(name), "DATABASE_URL": database_url,
               "ROUTER_CONFIG": str(harness.TEST_CONFIG),
               **harness.emulator_env(emulator_process.base)}
        env.pop("NATS_TOKEN", None)
        processes = harness.Processes(env, logs)
        processes.start(name)
        running.append(processes)
    try:
        asyncio.run(wait_healthy(secured.settings(nats_auth.ADMIN)))
    except TimeoutError:
        pytest.fail("\n".join(p.log(n)[-3000:] for p, n in zip(running, harness.SERVICES,
                                                                  strict=True)))
    yield secured
    for processes in running:
        processes.stop_all()


def all_up(report: dict) -> bool:
    return all(report["services"][name]["up"] for name in harness.SERVICES)


async def wait_healthy(settings: Settings, timeout_s: float = 60.0) -> None:
    nc = await client.connect(settings)
    try:
        async with asyncio.timeout(timeout_s):
            while not all_up(await client.service_health(nc)):  # noqa: ASYNC110 (polls NATS)
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


class Watched:
    """A connection as one identity, with the server's permission errors collected."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[str] = asyncio.Queue()
        self.nc: nats.NATS | None = None

    async def connect(self, settings: Settings) -> nats.NATS:
        from shared import connection

        async def collect(exc: Exception) -> None:
            await self.errors.put(str(exc))

        self.nc = await nats.connect(**connection.nats_options(settings), error_cb=collect,
                                     max_reconnect_attempts=0)
        return self.nc

    async def refused(self, subject: str) -> str:
        """The server's permissions violation naming `subject`."""
        async with asyncio.timeout(VIOLATION_WAIT_S):
            while True:
                error = await self.errors.get()
                if "permissions violation" in error.lower() and f'"{subject.lower()}"' in error:
                    return error


@contextlib.asynccontextmanager
async def identity(secured: Secured, user: str) -> AsyncIterator[Watched]:
    async with identity_settings(secured.settings(user)) as watched:
        yield watched


@contextlib.asynccontextmanager
async def identity_settings(settings: Settings) -> AsyncIterator[Watched]:
    watched = Watched()
    await watched.connect(settings)
    try:
        yield watched
    finally:
        await watched.nc.close()


FORGED_ENVELOPE = json.dumps({"request_id": "x", "trace_id": "forged", "tier_index": -1}).encode()
FORGED_EVENT = json.dumps({"trace_id": "forged", "request_id": "x", "received_at": 0,
                           "finished_at": 0, "source": "online", "status": "ok",
                           "cost_usd": 123456}).encode()


@pytest.mark.parametrize("subject", [
    ">", "router.v1.>", subjects.DISPATCH, "router.v1.pipeline.>", "router.v1.events.>",
    "$KV.router_hops.>", "$KV.router_requests.>", "router.v1.results.globex.>",
    "router.v1.results.>", "_INBOX.>", "_INBOX.globex.>", "_router.deliver.dispatcher",
    subjects.CHAT,
])
async def test_a_client_cannot_listen_outside_its_own_tenant(secured, subject):
    async with identity(secured, "client-acme") as acme:
        await acme.nc.subscribe(subject)
        assert await acme.refused(subject)


@pytest.mark.parametrize(("subject", "body"), [
    (subjects.DISPATCH, FORGED_ENVELOPE), (subjects.SCORE, FORGED_ENVELOPE),
    (subjects.REQUEST_EVENTS, FORGED_EVENT), (subjects.ATTEMPT_EVENTS, FORGED_EVENT),
    ("router.v1.results.globex.job", b"{}"), (subjects.STATS, b"{}"),
    ("router.v1.chat.globex", b'{"prompt": "hi"}'), (subjects.CHAT, b'{"prompt": "hi"}'),
    ("router.v1.feedback.globex", b"{}"), (subjects.FEEDBACK, b"{}"),
    ("$JS.API.STREAM.DELETE.ROUTER_EVENTS", b""), ("$KV.router_requests.k", b"{}"),
    ("$JS.API.CONSUMER.CREATE.ROUTER_RESULTS", b"{}"),
])
async def test_a_client_cannot_forge_or_reach_the_pipeline(secured, subject, body):
    async with identity(secured, "client-acme") as acme:
        await acme.nc.publish(subject, body)
        assert await acme.refused(subject)


@pytest.mark.parametrize(("user", "action", "subject"), [
    ("classifier", "subscribe", "_router.deliver.dispatcher"),
    ("classifier", "publish", subjects.SCORE),
    ("classifier", "publish", "$KV.router_hops.x"),
    ("dispatcher", "subscribe", subjects.CHAT),
    ("dispatcher", "publish", subjects.DISPATCH),
    ("escalator", "subscribe", "_INBOX.acme.>"),
    ("escalator", "publish", "$KV.router_health.ledger.x"),
    ("ledger", "publish", subjects.DISPATCH),
    ("ledger", "subscribe", subjects.CHAT),
    ("ledger", "publish", "$JS.API.STREAM.DELETE.ROUTER_JOBS"),
    ("gateway", "publish", "$JS.API.CONSUMER.CREATE.ROUTER_RESULTS"),
    ("admin", "publish", subjects.DISPATCH),
    ("admin", "publish", "$JS.API.STREAM.DELETE.ROUTER_EVENTS"),
])
async def test_each_service_identity_is_refused_what_is_not_its_job(secured, user, action,
                                                                     subject):
    async with identity(secured, user) as service:
        if action == "subscribe":
            await service.nc.subscribe(subject)
        else:
            await service.nc.publish(subject, b"{}")
        assert await service.refused(subject)


def test_the_escalators_marks_are_keys_its_grant_lets_it_write():
    """Before, the sample mark's key had two tokens: refused under the escalator's grant
    ($KV.<hops>.*.*.*), the mark was never kept and a redelivery sampled again."""
    grants = [p for p in nats_auth.service_grants()["escalator"].publish
              if p.startswith(f"$KV.{subjects.HOPS_BUCKET}.")]
    envelope = stage_helpers.envelope()
    key = f"$KV.{subjects.HOPS_BUCKET}.{escalator_worker.sample_mark_key(envelope)}"

    assert any(_matches(grant, key) for grant in grants), (grants, key)


def _matches(pattern: str, subject: str) -> bool:
    """A NATS subject against a pattern with `*` (one token) and `>` (the rest)."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(tokens) == len(wanted)


async def test_wrong_credentials_are_refused_with_a_clear_error(secured):
    wrong = secured.settings("client-acme").model_copy(update={"nats_password": SecretStr("wrong")})
    async with asyncio.timeout(30):
        with pytest.raises(ConnectionError, match="refused these credentials"):
            await client.connect(wrong)


async def test_a_client_asks_submits_and_reads_its_own_results_over_tls(secured_stack, conn,
                                                                         tmp_path):
    acme_settings = secured_stack.settings("client-acme")
    nc = await client.connect(acme_settings)
    try:
        reply = await client.request(nc, client.chat_subject("acme"),
                                     {"prompt": "What is the capital of France?"}, 60)
        assert "error" not in reply, reply
        (row,) = await harness.rows_when_ready(
            conn, "SELECT tenant FROM requests WHERE request_id = %s", (reply["request_id"],))
        assert row == ("acme",)  # from the connection's subject: the body named none

        verdict = {"request_id": reply["request_id"], "score": 0.5}
        ack = await client.request(nc, client.feedback_subject("acme"), verdict, 30)
        assert ack["recorded"] is True, ack
        (row,) = await (await conn.execute(
            "SELECT tenant, score FROM feedback WHERE request_id = %s",
            (reply["request_id"],))).fetchall()
        assert row == ("acme", 0.5)

        other = await client.request(nc, client.chat_subject("acme"),
                                     {"prompt": "Bill someone else", "tenant": "globex"}, 30)
        assert other["error"]["code"] == "invalid_request"
        assert "tenant 'acme'" in other["error"]["message"]

        health = await client.service_health(nc)
        assert all_up(health), health

        jobs = tmp_path / "acme-jobs.jsonl"
        jobs.write_text(json.dumps({"prompt": "What is 2 plus 2?", "request_id": "r1"}) + "\n")
        submission = await client.submit(nc, jobs, None, lambda done, total: None, tenant="acme")
        assert submission.submitted == 1
        async with asyncio.timeout(60):
            results = [r async for r in client.results(nc, submission.job_id, expect={"r1"},
                                                       tenant="acme")]
        assert [r["request_id"] for r in results] == ["r1"] and "error" not in results[0]
        assert await client.stored_results(nc, submission.job_id, "acme") == 1
    finally:
        await nc.close()

    async with identity(secured_stack, "client-globex") as globex:
        with pytest.raises(nats.errors.Error):
            await client.stored_results(globex.nc, submission.job_id, "acme")
        foreign = await client.request(globex.nc, client.feedback_subject("globex"),
                                       verdict | {"score": 0.0}, 30)
        assert foreign["error"]["code"] == "unknown_request"

    async with identity(secured_stack, "admin") as admin:
        stats = await client.request(admin.nc, subjects.STATS, {"days": 1}, 30)
        assert stats["requests"] >= 2, stats


@pytest.mark.parametrize("body", [b'{"prompt": ""}', b'{"prompt": "Name a colour."}'])
async def test_a_tenants_request_is_never_answered_in_another_identitys_inbox(secured_stack,
                                                                           body):
    """A request on acme's subject with the gateway's inbox as its reply subject (refused as
    invalid, and as a foreign reply subject) is answered nowhere; before, the refusal was
    published into that inbox, where it could end another caller's stream."""
    async with identity(secured_stack, "gateway") as gateway, \
            identity(secured_stack, "client-acme") as acme:
        victim = f"{nats_auth.inbox_prefix('gateway')}.victim"
        heard = await gateway.nc.subscribe(victim)
        await gateway.nc.flush()
        own = await acme.nc.request(client.chat_subject("acme"), body, timeout=30)
        await acme.nc.publish(client.chat_subject("acme"), body, reply=victim)
        await acme.nc.flush()
        again = await acme.nc.request(client.chat_subject("acme"), body, timeout=30)

        with pytest.raises(nats.errors.TimeoutError):
            await heard.next_msg(timeout=1)
    assert json.loads(own.data)["request_id"] and json.loads(again.data)["request_id"]


async def test_the_cli_connects_over_tls_as_a_client_identity(secured_stack):
    env = {**os.environ, **secured_stack.env("client-acme")}
    asked = await asyncio.to_thread(
        subprocess.run, [CLI, "ask", "Hello there", "--json"],
        env=env, capture_output=True, text=True, timeout=90)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["request_id"]


def test_identities_are_written_for_the_tenants_named(tmp_path):
    """`python -m shared.nats_auth --write DIR --tenant NAME` (and `up --tenant NAME`) makes a
    client identity per tenant beside the demo one; each may ask on its own subject only.
    Before, only client-default could exist without editing code. A name that is not a
    subject token is refused."""
    folder = tmp_path / "auth"
    command = [sys.executable, "-m", "shared.nats_auth", "--write", str(folder)]
    subprocess.run([*command, "--tenant", "acme", "--tenant", "globex"], check=True,
                   capture_output=True)
    refused = subprocess.run([*command, "--tenant", "a.b"], capture_output=True, text=True)

    assert refused.returncode == 2 and "tenant 'a.b'" in refused.stderr
    clients = {f.stem for f in folder.glob("client-*.env")}
    assert clients == {"client-default", "client-acme", "client-globex"}
    server = embedded.EmbeddedNats.start(tmp_path / "data", config=folder / "nats.conf")

    async def ask_as_globex() -> tuple[str, str]:
        env = nats_auth.read_env(folder / "client-globex.env")
        settings = Settings(**{k.lower(): v for k, v in env.items()}, nats_url=server.url)
        async with identity_settings(settings) as globex:
            await globex.nc.publish(client.chat_subject("acme"), b"{}")
            foreign = await globex.refused(client.chat_subject("acme"))
            await globex.nc.publish(client.chat_subject("globex"), b"{}")
            await globex.nc.flush()
            with pytest.raises(TimeoutError):
                await globex.refused(client.chat_subject("globex"))
        return env["NATS_USER"], foreign

    try:
        user, foreign = asyncio.run(ask_as_globex())
    finally:
        server.stop()
    assert user == "client-globex" and "permissions violation" in foreign.lower()
