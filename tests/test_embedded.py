"""The embedded servers belong to the process that starts them: the pinned nats-server, and a
PostgreSQL that dies with its parent and never reuses one an earlier run left behind."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import psutil
import pytest

from smart_router import embedded
from tests import harness

# What a crashed run used to leave behind: a postmaster that pg_ctl daemonised.
PG_CTL_ORPHAN = ("import pgserver, sys; "
                 "print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_pid())")
# A parent that starts PostgreSQL, says the postmaster's pid, then waits to be killed.
PARENT = ("import sys; from pathlib import Path; from smart_router import embedded; "
          "server = embedded.EmbeddedPostgres.start(Path(sys.argv[1])); "
          "print(server.process.pid, flush=True); sys.stdin.read()")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_embedded_nats_is_the_environments_pinned_binary(tmp_path):
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    try:
        assert server.binary == str(Path(sysconfig.get_path("scripts")) / "nats-server")
        assert version(server.version) >= (2, 15, 0)
        assert os.readlink(f"/proc/{server.process.pid}/exe") == server.binary
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_embedded_nats_listens_for_clients_only(tmp_path):
    """No monitoring port: its HTTP answers anyone on the machine with every user's name and
    subscription (reply inboxes included). Before, one was open beside the clients' port."""
    server = embedded.EmbeddedNats.start(tmp_path / "nats")
    try:
        listening = {c.laddr for c in psutil.Process(server.process.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
    finally:
        server.stop()
    assert [f"nats://{ip}:{port}" for ip, port in listening] == [server.url]


def test_embedded_postgres_dies_with_the_process_that_started_it(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT,
                               str(harness.server_dir(tmp_path / "pg"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        postmaster = int(parent.stdout.readline())
        tree = harness.process_tree(parent.pid)
        assert postmaster in {pid for pid, _ in tree}
        assert len(tree) > 1  # the postmaster and its own workers
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert harness.wait_all_gone(tree) == set()


def test_an_orphan_postgres_is_stopped_and_never_reused(tmp_path):
    data_dir = harness.server_dir(tmp_path / "pg")
    started = subprocess.run([sys.executable, "-c", PG_CTL_ORPHAN, str(data_dir)],
                             capture_output=True, text=True, timeout=60, check=True)
    orphan = harness.process_identity(int(started.stdout.split()[-1]))
    assert orphan is not None and orphan[0] == postmaster_pid(data_dir)

    server = embedded.EmbeddedPostgres.start(data_dir)
    try:
        assert harness.process_identity(orphan[0]) != orphan
        assert postmaster_pid(data_dir) == server.process.pid != orphan[0]
        assert embedded.postgres_answers(server.url())
    finally:
        server.stop()
    assert server.process.returncode == 0  # a clean fast shutdown


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_again(tmp_path, monkeypatch):
    with socket.socket() as taken:  # what another process does between our pick and the bind
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = iter([port])
        pick = embedded.free_port
        monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or pick())

        server = embedded.EmbeddedNats.start(tmp_path / "nats")
    try:
        assert not server.url.endswith(f":{port}")
    finally:
        server.stop()


def test_a_port_asked_for_and_taken_is_an_error_that_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(RuntimeError, match="address already in use"):
            embedded.EmbeddedNats.start(tmp_path / "nats", port)


def test_a_long_data_paths_socket_folder_must_be_this_users_alone(tmp_path, monkeypatch):
    """A data folder too deep for a socket path puts the socket in a folder of the temporary
    directory, whose name anyone can work out. One made first by another user, or open to
    others, or a link, is refused: the server trusts whoever reaches its socket. Before, it
    was used as found, and another local user connected as the database's superuser."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data_dir = tmp_path / ("d" * 120)
    made = embedded._socket_dir(data_dir, None)
    assert made.parent == tmp_path and stat.S_IMODE(made.stat().st_mode) == 0o700
    assert embedded._socket_dir(data_dir, None) == made  # the same on every start

    made.chmod(0o777)  # opened to others
    with pytest.raises(RuntimeError, match="mode 0700"):
        embedded._socket_dir(data_dir, None)
    made.chmod(0o700)
    if os.getuid() == 0:  # only root can give a folder away
        os.chown(made, pwd.getpwnam("nobody").pw_uid, -1)  # another user's
        with pytest.raises(RuntimeError, match="another user"):
            embedded._socket_dir(data_dir, None)
    made.rmdir()
    made.symlink_to(tmp_path)  # a link to a folder of ours
    with pytest.raises(RuntimeError):
        embedded._socket_dir(data_dir, None)


# initdb killed as soon as it has begun to fill its folder (the OOM killer, a power cut).
KILLED_INITDB = """#!/bin/sh
"{initdb}" "$@" >/dev/null 2>&1 &
i=0
while [ ! -e "$2/PG_VERSION" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
kill -9 $!
wait
exit 137
"""


def killed_initdb(tmp_path: Path) -> Path:
    """An initdb that its user can run (as root, PostgreSQL's own user) and that is killed."""
    tools = harness.server_dir(tmp_path / "tools").resolve()
    tools.chmod(0o755)
    wrapper = tools / "initdb"
    wrapper.write_text(KILLED_INITDB.format(initdb=embedded._bin("initdb")))
    wrapper.chmod(0o755)
    return wrapper


def test_an_initdb_killed_part_way_leaves_nothing_the_next_start_trips_on(tmp_path,
                                                                         monkeypatch):
    """Before, the killed initdb's half-made folder was taken for a database at every later
    start: PostgreSQL failed on it (or, killed later, crash-looped for 80 s) and the error never
    said why. Now initdb fills a folder beside it, renamed into place once complete."""
    data_dir = harness.server_dir(tmp_path / "pg")
    real_bin, wrapper = embedded._bin, killed_initdb(tmp_path)
    monkeypatch.setattr(embedded, "_bin",
                        lambda name: wrapper if name == "initdb" else real_bin(name))
    with pytest.raises(RuntimeError, match="initdb"):
        embedded.EmbeddedPostgres.start(data_dir)
    monkeypatch.setattr(embedded, "_bin", real_bin)
    monkeypatch.setattr(embedded, "POSTGRES_READY_TIMEOUT_S", 15.0)  # a failure fails in time
    monkeypatch.setattr(embedded, "STOP_TIMEOUT_S", 5.0)

    server = embedded.EmbeddedPostgres.start(data_dir)
    try:
        assert embedded.postgres_answers(server.url())
    finally:
        server.stop()
    real = data_dir.resolve()
    assert sorted(real.parent.glob(f"{real.name}*")) == [real]  # nothing left beside it


def test_an_older_interrupted_initdb_is_named_and_left_as_it_is(tmp_path):
    """A folder an older version's killed initdb left in place cannot be told from data for
    sure: it is not removed, but the error says what it looks like and what to do."""
    data_dir = harness.server_dir(tmp_path / "pg").resolve()
    user = embedded._system_user()
    if user is not None:
        embedded._hand_over(data_dir, user)
    subprocess.run([str(killed_initdb(tmp_path)), "-D", str(data_dir), "--auth=trust",
                    "-U", "postgres"], timeout=60, start_new_session=True,
                   **embedded._run_as(user))
    # A stale postmaster.pid (initdb's bootstrap may leave one) is removed by the start, as any
    # stale one is; the folder's data is what must stay.
    left = sorted(path.name for path in data_dir.iterdir() if path.name != "postmaster.pid")
    assert "PG_VERSION" in left

    with pytest.raises(RuntimeError, match="interrupted initdb") as failed:
        embedded.EmbeddedPostgres.start(data_dir)
    assert f"move {data_dir} away" in str(failed.value)
    assert {"PG_VERSION", *left} <= {path.name for path in data_dir.iterdir()}


def test_a_folder_with_files_but_no_database_is_not_initialised_over(tmp_path):
    data_dir = harness.server_dir(tmp_path / "pg")
    (data_dir / "notes.txt").write_text("mine")

    with pytest.raises(RuntimeError, match="holds files but no PostgreSQL data"):
        embedded.EmbeddedPostgres.start(data_dir)
    assert [path.name for path in data_dir.iterdir()] == ["notes.txt"]
