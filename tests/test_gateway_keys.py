"""HTTP API keys (GATEWAY_API_KEYS_FILE): a gateway process with a key file, keys made by the
command line, the official OpenAI SDK and curl-like calls against the real stack. Without a
key file the gateway asks for nothing (tests/test_gateway.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from services.gateway import api_keys
from tests import harness
from tests.test_cli import assert_fails_with_one_line
from tests.harness import rows_when_ready
from tests.test_gateway import ask, gateway_process

TENANT, OTHER = "acme", "globex"
JSON = "application/json"


@dataclass
class Keyed:
    url: str
    key: str
    file: Path
    log: Path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_KEYS_FILE"}
    return subprocess.run([sys.executable, "-m", "smart_router.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=harness.ROOT, env=env)


def add_key(tenant: str, file: Path) -> subprocess.CompletedProcess:
    return cli("api-key", "add", tenant, "--file", str(file))


@pytest.fixture(scope="module")
def keyed(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """A gateway with a key file holding one key, for TENANT, made by `api-key add`."""
    folder = tmp_path_factory.mktemp("keys")
    file = folder / "api-keys"
    made = add_key(TENANT, file)
    assert made.returncode == 0, made.stderr
    with gateway_process(stack, folder, GATEWAY_API_KEYS_FILE=str(file)) as url:
        yield Keyed(url, made.stdout.strip(), file, folder / "gateway.log")


@pytest.fixture
async def http(keyed: Keyed) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as client:
        yield client


def sdk(keyed: Keyed, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{keyed.url}/v1", api_key=key, max_retries=0,
                              timeout=30)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def tenant_of(conn, request_id: str) -> str | None:
    rows = await rows_when_ready(conn, "SELECT tenant FROM requests WHERE request_id = %s",
                                 (request_id,))
    return rows[0][0]


def test_the_cli_keeps_only_the_keys_digest_in_a_private_file(keyed):
    text = keyed.file.read_text()

    assert keyed.key.startswith("sr-") and len(keyed.key) > 40
    assert keyed.file.stat().st_mode & 0o777 == 0o600
    assert keyed.key not in text and keyed.key[3:] not in text
    assert [line.split()[0] for line in text.splitlines() if not line.startswith("#")] == [TENANT]
    listed = cli("api-key", "list", "--json", "--file", str(keyed.file))
    assert listed.returncode == 0, listed.stderr
    assert [row["tenant"] for row in json.loads(listed.stdout)] == [TENANT]
    assert keyed.key not in listed.stdout


async def test_a_valid_key_answers_and_the_ledger_books_its_tenant(keyed, conn):
    async with sdk(keyed, keyed.key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=ask("What is the capital of France?"))
        same = await client.chat.completions.with_raw_response.create(
            model="auto", messages=ask("Name a colour."), extra_body={"tenant": TENANT})

    assert raw.parse().choices[0].message.content.strip()
    assert await tenant_of(conn, raw.headers["x-request-id"]) == TENANT
    assert await tenant_of(conn, same.headers["x-request-id"]) == TENANT


@pytest.mark.parametrize("body", [
    {"prompt": "What is the capital of France?"},
    {"prompt": "What is the capital of France?", "tenant": TENANT},
    {"prompt": "What is the capital of France?", "tenant": None},
], ids=["no-tenant", "same-tenant", "null-tenant"])
async def test_the_seeds_chat_books_the_keys_tenant(http, keyed, conn, body):
    response = await http.post("/v1/chat", json=body, headers=bearer(keyed.key))

    assert response.status_code == 200, response.text
    assert await tenant_of(conn, response.json()["request_id"]) == TENANT


async def test_a_body_naming_another_tenant_is_refused_with_403(http, keyed, conn):
    # Two `tenant` keys: the last is the one the router would read.
    body = f'{{"prompt": "hi", "tenant": "{TENANT}", "tenant": "{OTHER}"}}'.encode()
    response = await http.post("/v1/chat", content=body,
                               headers={**bearer(keyed.key), "content-type": JSON})
    async with sdk(keyed, keyed.key) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="auto", messages=ask("hi"),
                                                 extra_body={"tenant": OTHER})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert f"this API key is tenant '{TENANT}', not \"{OTHER}\"" in response.json()["error"][
        "message"]
    assert caught.value.code == "permission_denied"


async def test_without_a_valid_key_nothing_is_called_or_recorded(keyed, http, emulator, conn):
    calls_before = emulator.control("GET", "stats")["total"]
    refused = []
    # None: the SDK sends no Authorization header at all.
    for key in (None, "sr-not-a-key", keyed.key + "x"):
        request_id = f"gw-{uuid.uuid4().hex}"
        refused.append(request_id)
        async with sdk(keyed, key or "unused") as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(
                    model="auto", messages=ask("hi"), extra_body={"request_id": request_id},
                    extra_headers={"Authorization": openai.omit} if key is None else None)
        assert caught.value.code == "invalid_api_key"
        assert caught.value.response.headers["www-authenticate"] == "Bearer"
    request_id = f"gw-{uuid.uuid4().hex}"
    refused.append(request_id)
    seed = await http.post("/v1/chat", json={"prompt": "hi", "request_id": request_id},
                           headers={"authorization": f"Basic {keyed.key}"})
    assert seed.status_code == 401 and seed.json()["error"]["code"] == "invalid_api_key"
    assert emulator.control("GET", "stats")["total"] == calls_before

    # A request let in after them is recorded; by then theirs would have been too.
    answered = await http.post("/v1/chat", json={"prompt": "hi"}, headers=bearer(keyed.key))
    await tenant_of(conn, answered.json()["request_id"])
    rows = await (await conn.execute("SELECT request_id FROM requests WHERE request_id = ANY(%s)",
                                     (refused,))).fetchall()
    assert rows == []
    log = keyed.log.read_text()
    assert "gateway.unauthenticated" in log and keyed.key not in log


async def test_every_route_but_health_and_the_docs_needs_a_key(http, keyed):
    schema = (await http.get("/openapi.json")).json()
    assert (await http.get("/docs")).status_code == 200

    for path, operations in schema["paths"].items():
        for method in operations:
            url = path.replace("{model_id}", "auto")
            response = await http.request(method, url)
            expected = 200 if path == "/v1/health" else 401
            assert response.status_code == expected, (method, path, response.text)
    assert (await http.get("/v1/models", headers=bearer(keyed.key))).status_code == 200


async def test_stats_cover_every_tenant_so_a_key_may_not_read_them(http, keyed):
    response = await http.get("/v1/stats", headers=bearer(keyed.key))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


async def test_a_key_added_while_the_gateway_runs_works_at_once(http, keyed, conn):
    made = add_key(OTHER, keyed.file)
    assert made.returncode == 0, made.stderr

    response = await http.post("/v1/chat", json={"prompt": "Name a colour."},
                               headers=bearer(made.stdout.strip()))

    assert response.status_code == 200, response.text
    assert await tenant_of(conn, response.json()["request_id"]) == OTHER


async def test_an_unreadable_key_file_lets_nobody_in(http, keyed):
    good = keyed.file.read_text()
    keyed.file.write_text(good + "not a key line\n")
    try:
        response = await http.post("/v1/chat", json={"prompt": "hi"}, headers=bearer(keyed.key))
    finally:
        keyed.file.write_text(good)

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "key file" in response.json()["error"]["message"]
    assert (await http.post("/v1/chat", json={"prompt": "hi"},
                            headers=bearer(keyed.key))).status_code == 200


def test_the_cli_refuses_a_bad_tenant_or_no_file_in_one_line(tmp_path):
    assert_fails_with_one_line(add_key("no spaces", tmp_path / "keys"), 2, "tenant 'no spaces'")
    done = cli("api-key", "add", TENANT)
    assert_fails_with_one_line(done, 2, "--file PATH or GATEWAY_API_KEYS_FILE")
    assert not (tmp_path / "keys").exists()


def test_keys_added_at_the_same_time_are_all_kept(tmp_path):
    keys = tmp_path / "keys"
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(lambda i: api_keys.add_key(keys, f"tenant-{i}"), range(64)))

    assert sorted(e.digest for e in api_keys.read_entries(keys)) == sorted(
        entry.digest for _, entry in added)


async def test_feedback_is_given_as_the_keys_tenant(http, keyed, conn):
    answered = await http.post("/v1/chat", json={"prompt": "Name a colour."},
                               headers=bearer(keyed.key))
    request_id = answered.json()["request_id"]
    await tenant_of(conn, request_id)  # the ledger holds the request: feedback may label it
    verdict = {"request_id": request_id, "score": 0.9}

    mine = await http.post("/v1/feedback", json=verdict, headers=bearer(keyed.key))
    as_other = await http.post("/v1/feedback", json={**verdict, "tenant": OTHER},
                               headers=bearer(keyed.key))

    assert mine.status_code == 200, mine.text
    assert mine.json()["recorded"] is True
    assert as_other.status_code == 403
    rows = await rows_when_ready(conn, "SELECT tenant, score FROM feedback WHERE request_id = %s",
                                 (request_id,))
    assert [(tenant, round(score, 3)) for tenant, score in rows] == [(TENANT, 0.9)]
