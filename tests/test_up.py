"""`smart-router up` as a fresh machine sees it: nothing answers at NATS_URL or DATABASE_URL and
there are no API keys, so it starts embedded NATS and PostgreSQL and the provider emulator. It
owns every process it reports, restarts a service that dies, stops cleanly on Ctrl-C and leaves
nothing behind when it is killed. Its NATS refuses a client without credentials, and the command
line finds up's own with no NATS_* variable set; `up --insecure` runs it open."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from shared import db, nats_auth, runtime
from shared.config import settings
from smart_router import embedded, stack, up_auth
from smart_router.errors import CommandFailed
from tests import harness
from tests.test_up_stores import left_open

CLI = [sys.executable, "-m", "smart_router.cli"]
KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GROQ_API_KEY")
PINNED_NATS = Path(sysconfig.get_path("scripts")) / "nats-server"
PG_CTL_ORPHAN = ("import pgserver, sys; "
                 "print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_pid())")


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """No keys, no NATS credentials; ROUTER_DATA_DIR is up's data folder, for the CLI."""
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.endswith("_BASE_URL")
           and not k.startswith("NATS_")}
    env[up_auth.DATA_DIR_VARIABLE] = str(harness.server_dir(tmp_path / "data"))
    env["NATS_URL"] = f"nats://127.0.0.1:{embedded.free_port()}"
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/none"
    env["DASHBOARD_PORT"] = str(embedded.free_port())
    env["GATEWAY_PORT"] = str(embedded.free_port())
    return env


def start_up(env: dict[str, str], data: Path, log: Path, *options: str) -> subprocess.Popen:
    """In a process group of its own, which ctrl_c signals as a terminal would."""
    return subprocess.Popen([*CLI, "up", "--data-dir", str(data), *options], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                            start_new_session=True)


@contextlib.contextmanager
def stopped_if_failing(up: subprocess.Popen):
    """A failing test still stops its `up` (and so everything `up` started)."""
    try:
        yield up
    except BaseException:
        if up.poll() is None:
            ctrl_c(up)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
        raise


def ctrl_c(up: subprocess.Popen) -> None:
    """A terminal sends SIGINT to its whole foreground process group, not to `up` alone."""
    os.killpg(up.pid, signal.SIGINT)


def wait_healthy(env: dict[str, str], up: subprocess.Popen, log: Path, timeout_s=90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, log.read_text()
        done = subprocess.run([*CLI, "health", "--json"], env=env, capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"not healthy in time:\n{log.read_text()[-3000:]}")


def without_nats_variables(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("NATS_")}


def plain_connection_error(url: str) -> str | None:
    """What the server says to a nats-py client with no credentials; None when it connects."""
    async def attempt() -> str | None:
        errors: list[str] = []

        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        try:
            nc = await nats.connect(url, error_cb=remember, allow_reconnect=False,
                                    max_reconnect_attempts=0, connect_timeout=5)
        except Exception as exc:  # the refusal is what is looked for
            return " ".join([*errors, str(exc)])
        await nc.close()
        return None

    return asyncio.run(attempt())


def ledger_requests(env: dict[str, str]) -> int:
    """Requests in the ledger; 0 while the ledger does not answer yet."""
    done = subprocess.run([*CLI, "stats", "--json"], env=env, capture_output=True, text=True,
                          timeout=30)
    return json.loads(done.stdout)["requests"] if done.returncode == 0 else 0


def stats_error(env: dict[str, str]) -> str:
    done = subprocess.run([*CLI, "stats", "--json"], env=env, capture_output=True, text=True,
                          timeout=30)
    return f"stats exited {done.returncode}: {done.stderr[-2000:]}"


def eventually(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def nats_port_closed(env: dict[str, str]) -> bool:
    port = int(env["NATS_URL"].rsplit(":", 1)[1])
    return eventually(lambda: not embedded.port_open("127.0.0.1", port), timeout_s=15)


def children_running(up: subprocess.Popen, module: str) -> set[int]:
    return {pid for pid, _ in harness.process_tree(up.pid)
            if harness.command_line(pid).endswith(f"-m {module}")}


def owned_tree(env: dict[str, str], up: subprocess.Popen, data: Path) -> set[tuple[int, int]]:
    """up's process tree, after checking that the servers it reports are in it: the PostgreSQL
    serving its data folder and the pinned nats-server (2.15+) on its NATS port."""
    tree = harness.process_tree(up.pid)
    pids = {pid for pid, _ in tree}
    postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
    assert postmaster in pids, harness.command_line(postmaster)
    nats = [pid for pid in pids if os.path.basename(harness.command_line(pid).split()[0])
            == "nats-server"]
    assert len(nats) == 1
    assert os.readlink(f"/proc/{nats[0]}/exe") == str(PINNED_NATS)
    version = embedded.binary_version(str(PINNED_NATS))
    assert tuple(int(part) for part in version.split(".")) >= (2, 15), version
    assert f"-p {env['NATS_URL'].rsplit(':', 1)[1]} " in harness.command_line(nats[0]) + " "
    return tree


def assert_stops_cleanly(up: subprocess.Popen, log: Path, tree: set[tuple[int, int]]) -> None:
    ctrl_c(up)
    assert up.wait(60) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "Traceback" not in output, output[-5000:]
    assert harness.wait_all_gone(tree) == set()


def test_up_serves_restarts_a_dead_service_and_stops_cleanly(fresh_env, tmp_path):
    data, log = Path(fresh_env[up_auth.DATA_DIR_VARIABLE]), tmp_path / "up.log"
    left_open(data / "nats-insecure", jobs=1)  # an `up --insecure` left a job queued

    with stopped_if_failing(start_up(fresh_env, data, log)) as up:
        wait_healthy(fresh_env, up, log)
        tree = owned_tree(fresh_env, up, data)
        assert f"{data.resolve() / 'nats-insecure'}, holds 1 queued message(s)" in log.read_text()
        # Its NATS checks who connects; the CLI, with no NATS_* variable at all, uses up's admin.
        assert "authorization violation" in plain_connection_error(fresh_env["NATS_URL"]).lower()
        credentials = up_auth.folder(data)
        assert {stat.S_IMODE(f.stat().st_mode) for f in credentials.iterdir()} == {0o600}
        cli_env = without_nats_variables(fresh_env)
        health = subprocess.run([*CLI, "health", "--json"], env=cli_env, capture_output=True,
                                text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        asked = subprocess.run([*CLI, "ask", "What is the capital of France?", "--json"],
                               env=cli_env, capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        reply = json.loads(asked.stdout)
        assert reply["emulated"] is True and reply["cost_usd"] > 0
        assert "PROVIDER EMULATOR" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{fresh_env['DASHBOARD_PORT']}/",
                                    timeout=10) as page:
            assert page.status == 200

        # A service that dies (a crash, or one that lost NATS for good) is started again.
        (crashed,) = children_running(up, "services.classifier")
        os.kill(crashed, signal.SIGKILL)
        assert eventually(lambda: children_running(up, "services.classifier") - {crashed},
                          timeout_s=30), log.read_text()[-3000:]
        assert "up.child_died" in log.read_text()
        wait_healthy(fresh_env, up, log)
        tree |= harness.process_tree(up.pid)

    assert_stops_cleanly(up, log, tree)
    assert nats_port_closed(fresh_env)


def test_a_killed_up_leaves_nothing_and_the_next_owns_everything(fresh_env, tmp_path):
    data = Path(fresh_env[up_auth.DATA_DIR_VARIABLE])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    with stopped_if_failing(start_up(fresh_env, data, first_log)) as killed:
        wait_healthy(fresh_env, killed, first_log)
        tree = owned_tree(fresh_env, killed, data)
        asked = subprocess.run([*CLI, "ask", "What is 7 times 8?", "--json"], env=fresh_env,
                               capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = harness.wait_all_gone(tree)
    assert left == set(), [harness.command_line(pid) for pid in left]
    assert nats_port_closed(fresh_env)

    # What an older `up` left behind: a PostgreSQL daemonised by pg_ctl on the same data.
    started = subprocess.run([sys.executable, "-c", PG_CTL_ORPHAN, str(data / "postgres")],
                             capture_output=True, text=True, timeout=60, check=True)
    orphan = harness.process_identity(int(started.stdout.split()[-1]))
    assert orphan is not None

    passwords = {f.name: nats_auth.read_env(f)["NATS_PASSWORD"]
                 for f in up_auth.folder(data).glob("*.env")}
    with stopped_if_failing(start_up(fresh_env, data, second_log)) as again:
        wait_healthy(fresh_env, again, second_log)
        tree = owned_tree(fresh_env, again, data)
        assert {f.name: nats_auth.read_env(f)["NATS_PASSWORD"]
                for f in up_auth.folder(data).glob("*.env")} == passwords  # kept, not renewed
        assert harness.process_identity(orphan[0]) != orphan
        assert second_log.read_text().count("postgres.orphan_stopped") == 1
        # The first run's request is in the ledger, written then or caught up from JetStream
        # now (a batch a killed ledger had fetched comes back after the consumer's ack wait).
        assert eventually(lambda: ledger_requests(fresh_env) >= 1, timeout_s=60), stats_error(
            fresh_env)

    assert_stops_cleanly(again, second_log, tree)


def test_up_insecure_runs_nats_open_and_says_so(fresh_env, tmp_path):
    data, log = Path(fresh_env[up_auth.DATA_DIR_VARIABLE]), tmp_path / "up.log"
    left_open(data / "nats", jobs=1)  # where an earlier `up --insecure` kept its streams
    env = fresh_env | {"GATEWAY_PORT": "0"}  # any free port (Dash takes a 0 for 8050)

    with stopped_if_failing(start_up(env, data, log, "--insecure")) as up:
        wait_healthy(env, up, log)
        tree = owned_tree(env, up, data)
        # The banner gives the ports our gateway and dashboard listen on (before: "HTTP ...:0").
        assert eventually(lambda: "Smart Router is up" in log.read_text(), timeout_s=30)
        banner = log.read_text()
        gateway = re.search(r"HTTP +(http://127\.0\.0\.1:(\d+))/v1 ", banner)
        dashboard = re.search(r"dashboard +(http://127\.0\.0\.1:(\d+))/", banner)
        assert gateway and dashboard, banner[-3000:]
        assert gateway[2] != "0" and dashboard[2] == env["DASHBOARD_PORT"], banner[-3000:]
        for url in (f"{gateway[1]}/docs", f"{dashboard[1]}/"):
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.status == 200
        assert plain_connection_error(fresh_env["NATS_URL"]) is None
        assert "NATS IS OPEN (--insecure)" in log.read_text()
        assert not up_auth.folder(data).exists()
        # Its streams are in the open mode's own store, the earlier ones moved there.
        assert (data / "nats-insecure" / "jetstream" / "$G").is_dir()
        assert not (data / "nats" / "jetstream" / "$G").exists()
        assert "up.open_store_moved" in log.read_text()

    assert_stops_cleanly(up, log, tree)


def test_the_cli_uses_ups_admin_identity_only_for_ups_own_server(tmp_path):
    url = "nats://127.0.0.1:4999"
    files = nats_auth.write_identities(up_auth.folder(tmp_path), ["default"], url=url)
    admin = str(files[nats_auth.ADMIN].resolve())
    data = {up_auth.DATA_DIR_VARIABLE: str(tmp_path)}

    for env in ({}, {"NATS_URL": url}):
        environ = data | env
        assert up_auth.use_admin_identity(environ) is not None
        assert environ[up_auth.IDENTITY_FILE] == admin
    for env in ({"NATS_URL": "nats://elsewhere:4222"}, {"NATS_USER": "me"},
                {"NATS_CREDS": "/my.creds"}, {up_auth.IDENTITY_FILE: "/mine.env"}):
        environ = data | env
        assert up_auth.use_admin_identity(environ) is None
        assert environ.get(up_auth.IDENTITY_FILE) == env.get(up_auth.IDENTITY_FILE)
    assert up_auth.use_admin_identity({up_auth.DATA_DIR_VARIABLE: str(tmp_path / "none")}) is None


@pytest.mark.parametrize("tamper", ["readable by others", "another server"])
def test_a_planted_admin_file_is_not_trusted(tmp_path, tamper):
    files = nats_auth.write_identities(up_auth.folder(tmp_path), ["default"],
                                       url="nats://127.0.0.1:4999")
    admin = files[nats_auth.ADMIN]
    if tamper == "readable by others":
        admin.chmod(0o644)
    else:
        admin.write_text(admin.read_text().replace("127.0.0.1:4999", "evil.example:4222"))

    assert up_auth.use_admin_identity({up_auth.DATA_DIR_VARIABLE: str(tmp_path)}) is None


def test_an_identity_file_sets_only_who_to_be_on_nats(tmp_path, monkeypatch):
    identity = tmp_path / "x.env"
    identity.write_text("NATS_USER=me\nNATS_PASSWORD=pw\nNATS_URL=nats://127.0.0.1:4999\n"
                        "DATABASE_URL=postgresql://evil.example/x\nROUTER_CONFIG=/tmp/evil.toml\n")
    for name in ("NATS_USER", "NATS_PASSWORD", "NATS_URL", "DATABASE_URL", "ROUTER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NATS_IDENTITY_FILE", str(identity))
    monkeypatch.setenv("NATS_USER", "from-the-environment")

    given = settings.__wrapped__()

    assert (given.nats_user, given.nats_url) == ("from-the-environment", "nats://127.0.0.1:4999")
    assert given.nats_password.get_secret_value() == "pw"
    assert "evil" not in given.database_url and given.router_config is None


def test_a_stop_asked_while_up_starts_is_acted_on_at_once(fresh_env, tmp_path):
    """Ctrl-C once the embedded servers are up but the services are not: `up` stops what it
    started within seconds, exit 0, with no word of unhealthy services. Before, the start ran on
    (nats-py's connect ignores a cancellation) and then waited for services that were never
    started: 62 s with the provider keys set, then `up.not_healthy`."""
    env = fresh_env | {key: "not-used" for key in KEYS}  # no emulator: the start waits on NATS
    data, log = Path(env[up_auth.DATA_DIR_VARIABLE]), tmp_path / "up.log"

    with stopped_if_failing(start_up(env, data, log)) as up:
        assert eventually(lambda: "up.postgres" in log.read_text() or up.poll() is not None,
                          timeout_s=50), log.read_text()[-3000:]
        tree = harness.process_tree(up.pid)
        ctrl_c(up)
        asked = time.monotonic()
        assert up.wait(20) == 0, log.read_text()[-3000:]
        took = time.monotonic() - asked

    output = log.read_text()
    assert took < 15, output[-3000:]
    assert "up.not_healthy" not in output and "Traceback" not in output, output[-3000:]
    assert not children_running(up, "services.gateway")
    assert "up.stopped" in output
    assert harness.wait_all_gone(tree) == set()
    assert nats_port_closed(env)


@contextlib.contextmanager
def held_port():
    """A port another program listens on, as a web server would."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("variable", ["GATEWAY_PORT", "DASHBOARD_PORT"])
def test_up_fails_at_once_when_the_gateways_or_dashboards_port_is_taken(fresh_env, tmp_path,
                                                                        variable):
    """Before, `up` ran with it: the child died and was restarted every 30 s for ever, and the
    banner sent users to the other program's page."""
    data, log = Path(fresh_env[up_auth.DATA_DIR_VARIABLE]), tmp_path / "up.log"
    with held_port() as port:
        env = fresh_env | {variable: str(port)}
        with stopped_if_failing(start_up(env, data, log)) as up:
            assert up.wait(20) == 2, log.read_text()[-3000:]
    output = log.read_text()
    assert f"error: 127.0.0.1:{port} ({variable}) is taken by another program" in output
    assert "up.nats" not in output and not (data / "postgres").exists()  # nothing started


def test_a_port_taken_after_the_check_gives_the_dashboard_up_and_stops_up(fresh_env, tmp_path):
    """The check at start is a courtesy: a program may take the port after it. The dashboard
    then dies at each start; the fifth death in a row gives it up, `up` says why, names the
    port, stops everything and exits 1, and no banner ever points at the other program."""
    data, log = Path(fresh_env[up_auth.DATA_DIR_VARIABLE]), tmp_path / "up.log"
    port = int(fresh_env["DASHBOARD_PORT"])
    with stopped_if_failing(start_up(fresh_env, data, log)) as up:
        assert eventually(lambda: "up.nats" in log.read_text() or up.poll() is not None,
                          timeout_s=30), log.read_text()[-3000:]
        with socket.socket() as other:  # taken once `up` checked it, before the dashboard runs
            other.bind(("127.0.0.1", port))
            other.listen()
            tree: set[tuple[int, int]] = set()
            deadline = time.monotonic() + 55
            while up.poll() is None and time.monotonic() < deadline:
                tree |= harness.process_tree(up.pid)
                time.sleep(0.5)
            assert up.wait(1) == 1, log.read_text()[-3000:]

    output = log.read_text()
    assert output.count("up.child_died") == stack.RESTART_LIMIT - 1, output[-5000:]
    assert (f"GIVING UP: the dashboard died {stack.RESTART_LIMIT} times in a row" in output
            and f"127.0.0.1:{port} (DASHBOARD_PORT) is taken by another program" in output)
    assert "Smart Router is up" not in output and "Traceback" not in output
    assert harness.wait_all_gone(tree) == set()
    assert nats_port_closed(fresh_env)


def test_a_child_that_keeps_dying_young_is_given_up_and_the_rest_stopped(tmp_path,
                                                                        monkeypatch):
    """The restart budget alone, with no servers: one child that lives, one that exits at once.
    Before, the second was restarted for ever."""
    monkeypatch.setattr(stack, "RESTART_PAUSE_S", (0.05, 0.2))
    up = stack.Stack(data_dir=tmp_path)
    lives = stack.Child("lives", [sys.executable, "-c", "import time; time.sleep(600)"])
    doomed = stack.Child("doomed", [sys.executable, "-c", "raise SystemExit(3)"])

    async def start() -> None:  # what _start does once the servers run: spawn the children
        up._spawn(lives)
        up._spawn(doomed)

    monkeypatch.setattr(up, "_start", start)

    with pytest.raises(CommandFailed) as failed:
        asyncio.run(asyncio.wait_for(up.run(), 30))
    assert str(failed.value).startswith(f"the doomed died {stack.RESTART_LIMIT} times in a row")
    assert "last exit code 3" in str(failed.value)
    assert doomed.restarts == stack.RESTART_LIMIT - 1
    assert lives.process is not None and lives.process.returncode is not None  # stopped


def test_an_outage_is_not_a_child_dying_young():
    """A service waits for NATS and PostgreSQL at least STABLE_AFTER_S before it exits, so a
    NATS or PostgreSQL outage never spends the restart budget and stops `up`."""
    wait_for_postgres = inspect.signature(db.wait_until_ready).parameters["timeout_s"].default
    assert stack.STABLE_AFTER_S <= min(runtime.CONNECT_RETRY_S, wait_for_postgres)
