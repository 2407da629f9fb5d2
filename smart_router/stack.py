"""`smart-router up`: the whole stack on one machine.

It uses NATS and PostgreSQL at NATS_URL / DATABASE_URL when they answer (NATS with the NATS_*
variables given, the server left as it is) and starts embedded ones under the data folder when
they do not. Its embedded NATS runs with the least-privilege identities of shared/nats_auth.py
(open only with --insecure, said loudly): their credentials stay in <data>/nats-auth/, `setup`
declares the streams, each service runs as its own identity and the command line finds the
admin's (up_auth.py). Its JetStream data is kept per mode, in <data>/nats or, open,
<data>/nats-insecure, and it says at start what the other mode's store still holds (up_stores.py).
It serves any provider that has no API key from the
provider emulator (and says so loudly); then it runs the five services (the HTTP gateway on
127.0.0.1:8000, GATEWAY_PORT, among them), restarts one that dies (and gives up, stopping
everything, on one that keeps dying young: it would never start), and on Ctrl-C stops
everything it started: the services first, then NATS, then PostgreSQL. It refuses to start
when the gateway's or the dashboard's port is taken by another program.
Children run in their own session (a terminal's Ctrl-C reaches `up` alone, which orders the
shutdown) and die with it even if it is killed, so a second `up` after a crash starts clean; an
embedded PostgreSQL an older run left behind is stopped, not reused. It also serves the cost
dashboard on 127.0.0.1 (DASHBOARD_PORT, default 8050).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import sys
import sysconfig
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import structlog

from shared import connection, db, nats_auth, topology
from shared.config import Settings, load_config, settings
from shared.health import SERVICES

from . import client, embedded, up_auth, up_stores
from .errors import CommandFailed

log = structlog.get_logger("smart_router.up")

PROVIDER_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
                 "groq": "GROQ_API_KEY"}
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 60.0
RESTART_PAUSE_S = (1.0, 30.0)  # first and longest pause before restarting a dead child
STABLE_AFTER_S = 60.0  # a child that ran this long restarts after the first pause again
# A child that dies this many times in a row, each time within STABLE_AFTER_S of its start, is
# given up on, and `up` stops: it would never start (a port taken, a bad setting). An outage is
# not such a death: a service waits STABLE_AFTER_S or more for NATS (runtime.CONNECT_RETRY_S) and
# PostgreSQL (db.wait_until_ready) before it exits.
RESTART_LIMIT = 5
# The children that listen for HTTP: their host and port variables, and the default port.
LISTENERS = {"gateway": ("GATEWAY_HOST", "GATEWAY_PORT", 8000),
             "dashboard": ("DASHBOARD_HOST", "DASHBOARD_PORT", 8050)}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _StopAsked(Exception):
    """A stop was asked while `up` was starting: the start goes no further."""


@dataclass
class Child:
    name: str
    argv: list[str]
    identity: str | None = None  # its NATS identity, when up's own NATS checks them
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


@dataclass
class Stack:
    data_dir: Path
    config_path: Path | None = None
    insecure: bool = False
    tenants: list[str] = field(default_factory=list)  # client identities besides the demo's
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _identities: dict[str, Path] = field(default_factory=dict)  # identity -> its file
    _nats: embedded.EmbeddedNats | None = None
    _postgres: embedded.EmbeddedPostgres | None = None
    _children: list[Child] = field(default_factory=list)
    _supervisors: set[asyncio.Task] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _stop_signalled: bool = False  # set by the signal handler itself, even mid-step
    _given_up: str | None = None  # why `up` stopped on its own: a child that cannot start

    async def run(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.data_dir / "up.lock"), self._stop_on_signals():
            starting = asyncio.create_task(self._start())
            stop_asked = asyncio.create_task(self._stopping.wait())
            try:
                # Ctrl-C during the start stops it at its next step (see _stop_point).
                await asyncio.wait({starting, stop_asked}, return_when=asyncio.FIRST_COMPLETED)
                if starting.done():
                    starting.result()  # a failed start raises here
                    await stop_asked
            except _StopAsked:
                pass
            finally:
                starting.cancel()
                stop_asked.cancel()
                await asyncio.gather(starting, stop_asked, return_exceptions=True)
                await self._stop()
        if self._given_up is not None:
            raise CommandFailed(self._given_up)  # exit 1

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT, SIGTERM and SIGHUP ask for a stop. A plain handler, not the loop's: it runs
        even while a blocking step of the start (initdb, a server's start, the migration) holds
        the loop, so the step after it sees the stop at once."""
        loop = asyncio.get_running_loop()

        def asked(signum: int, frame: object) -> None:
            self._stop_signalled = True
            loop.call_soon_threadsafe(self._stopping.set)

        previous = {sig: signal.signal(sig, asked) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_point(self) -> None:
        """Between two steps of the start: a stop asked goes no further. Cancelling the start
        is not enough: nats-py's connect ignores a cancellation after its first steps."""
        if self._stop_signalled or self._stopping.is_set():
            raise _StopAsked

    async def _pause(self, seconds: float) -> None:
        """Sleep, but return (with _StopAsked) as soon as a stop is asked."""
        waiter = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
        self._stop_point()

    async def _start(self) -> None:
        # Not in a worker thread: a child's parent-death signal fires when the *thread* that
        # forked it ends, and the servers must live as long as `up`. The migration runs here
        # too, so that a Ctrl-C (acted on once the step in hand ends) never stops PostgreSQL
        # under a migration left running in a thread.
        self._check_ports()
        self.env["NATS_URL"] = self._nats_url()
        self._stop_point()
        if self._nats is not None:
            await self._tell_of_the_other_store()
            self._stop_point()
        self.env["DATABASE_URL"] = self._database_url()
        self._stop_point()
        applied = db.migrate(self.env["DATABASE_URL"])
        log.info("up.migrated", applied=applied or "already current")
        self._stop_point()
        if self.config_path is not None:
            self.env["ROUTER_CONFIG"] = str(self.config_path.resolve())
        if self._identities:  # the services may not declare the topology: setup does, once
            config = self.env.get("ROUTER_CONFIG")
            await topology.declare_as(self._settings(nats_auth.SETUP),
                                      load_config(Path(config) if config else None))
            self._stop_point()
        await self._emulate_missing_providers()
        self._stop_point()
        for name in SERVICES:
            self._spawn(Child(name, [sys.executable, "-m", f"services.{name}"], identity=name))
        self._spawn(Child("dashboard", [sys.executable, "-m", "dashboard"]))
        await self._wait_until_healthy()

    def _listen_address(self, name: str) -> tuple[str, int | None]:
        """Where the gateway or the dashboard will listen, as its variables in up's environment
        say; no port when it is not a number (the child itself says what is wrong)."""
        host_variable, port_variable, default = LISTENERS[name]
        try:
            port = int(self.env.get(port_variable) or default)
        except ValueError:
            port = None
        return self.env.get(host_variable) or "127.0.0.1", port

    def _check_ports(self) -> None:
        """Fail at once when the gateway's or the dashboard's port is taken: its child could
        never start, and the port would answer with another program's pages. A courtesy only:
        a port taken after this check fails its child, which is given up on (_supervise)."""
        seen: dict[tuple[str, int], str] = {}
        for name, (host_variable, port_variable, _) in LISTENERS.items():
            host, port = self._listen_address(name)
            if not port:  # 0: the gateway takes any free port (the dashboard, Dash, 8050)
                continue
            if (host, port) in seen:
                raise RuntimeError(f"{seen[host, port]} and {port_variable} are both {port}: "
                                   "the gateway and the dashboard need a port each")
            seen[host, port] = port_variable
            error = embedded.bind_error(host, port)
            if error is not None and error.errno == errno.EADDRINUSE:
                raise RuntimeError(f"{host}:{port} ({port_variable}) is taken by another "
                                   f"program: stop it, or set {port_variable} to a free port")
            if error is not None:
                raise RuntimeError(f"cannot listen on {host}:{port} ({host_variable}, "
                                   f"{port_variable}): {error.strerror or error}")

    def _port_taken(self, name: str) -> str | None:
        """For a gateway or dashboard that died: its port, when another program holds it."""
        if name not in LISTENERS:
            return None
        host, port = self._listen_address(name)
        if not port:
            return None
        error = embedded.bind_error(host, port)
        if error is None or error.errno != errno.EADDRINUSE:
            return None
        return f"{host}:{port} ({LISTENERS[name][1]}) is taken by another program"

    def _nats_url(self) -> str:
        url = self.env.get("NATS_URL") or settings().nats_url
        if embedded.nats_answers(url):
            log.info("up.nats", url=connection.redact(url), embedded=False)
            if self.insecure:
                log.warning("up.insecure_ignored", why="this NATS is not up's: it stays as it is")
            return url
        # On the configured port, so `smart-router ask` elsewhere finds it with no settings.
        port = urlsplit(url).port or 4222
        if embedded.port_open("127.0.0.1", port):
            raise RuntimeError(f"{url} does not speak NATS, and its port {port} is taken")
        # Credentials meant for the server that does not answer are not ours to pass on.
        self.env = {k: v for k, v in self.env.items() if not k.startswith("NATS_")}
        config = None
        if self.insecure:
            _banner(f"NATS IS OPEN (--insecure): anyone who can reach 127.0.0.1:{port} can read "
                    "every prompt and answer, send requests as any tenant and write to the "
                    "ledger. For local experiments only; without --insecure, up runs NATS with "
                    "a user and permissions per service.")
        else:
            self._identities = nats_auth.write_identities(
                up_auth.folder(self.data_dir), nats_auth.with_demo(self.tenants),
                url=f"nats://127.0.0.1:{port}")
            config = up_auth.folder(self.data_dir) / "nats.conf"
        moved = up_stores.adopt_earlier_open_store(self.data_dir)
        if moved is not None:
            log.info("up.open_store_moved", to=str(moved))
        data = up_stores.store(self.data_dir, self.insecure)
        self._nats = embedded.EmbeddedNats.start(data, port, config=config)
        log.info("up.nats", url=self._nats.url, embedded=True, data=str(data),
                 auth="open" if self.insecure else str(up_auth.folder(self.data_dir)),
                 binary=self._nats.binary, version=self._nats.version)
        return self._nats.url

    async def _tell_of_the_other_store(self) -> None:
        """Say so when the other mode's store holds work or results this mode cannot see. A
        store that cannot be read is logged, not fatal: it only informs."""
        try:
            notice = await up_stores.other_mode_notice(self.data_dir, self.insecure)
        except Exception as exc:  # whatever failed, the stack runs without the notice
            log.warning("up.other_store_unread", error=str(exc),
                        store=str(up_stores.store(self.data_dir, not self.insecure)))
            return
        if notice is not None:
            log.warning("up.other_store_holds_data",
                        store=str(up_stores.store(self.data_dir, not self.insecure)))
            _banner(notice)

    def _settings(self, identity: str) -> Settings:
        """How `up` itself connects: as one of its identities on its own NATS, whatever NATS_*
        this shell has; as the NATS_* variables say on a NATS it did not start."""
        if self._nats is None:
            return Settings(nats_url=self.env["NATS_URL"])
        return up_auth.identity_settings(self.env["NATS_URL"], self._identities.get(identity))

    def _env(self, child: Child) -> dict[str, str]:
        if child.identity is None or not self._identities:
            return self.env
        return {**self.env, up_auth.IDENTITY_FILE: str(self._identities[child.identity])}

    def _database_url(self) -> str:
        url = self.env.get("DATABASE_URL") or settings().database_url
        if embedded.postgres_answers(url):
            log.info("up.postgres", embedded=False)
            return url
        self._postgres = embedded.EmbeddedPostgres.start(self.data_dir / "postgres")
        log.info("up.postgres", embedded=True, data=str(self.data_dir / "postgres"),
                 pid=self._postgres.process.pid)
        return embedded.ensure_database(self._postgres.url(), "smart_router")

    async def _emulate_missing_providers(self) -> None:
        missing = [p for p, key in PROVIDER_KEYS.items() if not self.env.get(key)]
        if not missing:
            return
        port = embedded.free_port()
        self._spawn(Child("emulator", [sys.executable, "-m", "emulator", "--port", str(port)]))
        base = f"http://127.0.0.1:{port}"
        await _wait_for_http(f"{base}/_emulator/health", self._pause)
        urls = {"anthropic": ("ANTHROPIC_BASE_URL", base), "openai": ("OPENAI_BASE_URL",
                f"{base}/v1"), "groq": ("GROQ_BASE_URL", base)}
        for provider in missing:
            variable, url = urls[provider]
            self.env[variable] = url
            self.env[PROVIDER_KEYS[provider]] = "emulated"
        _banner(
            f"NO API KEY for {', '.join(missing)}: those tiers are served by the PROVIDER "
            f"EMULATOR at {base}. Its answers are fake, and every reply, ledger row and "
            "dashboard figure from them is marked emulated. Set the keys to use the real models."
        )

    def _spawn(self, child: Child) -> None:
        self._children.append(child)
        self._supervisors.add(asyncio.create_task(self._supervise(child)))

    async def _supervise(self, child: Child) -> None:
        """Run a child; restart it if it dies (a crash, or a service that lost NATS for good),
        after a pause that doubles up to RESTART_PAUSE_S[1] while it keeps dying young (within
        STABLE_AFTER_S of its start). The RESTART_LIMIT-th young death in a row gives it up,
        and the whole stack with it (_give_up)."""
        first, longest = RESTART_PAUSE_S
        pause = first
        young_deaths = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            child.process = await asyncio.create_subprocess_exec(
                *child.argv, env=self._env(child), preexec_fn=embedded.die_with_parent,
                start_new_session=True, stdin=asyncio.subprocess.DEVNULL,
                stdout=subprocess_stdout(child.name),
            )
            started = loop.time()
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            if loop.time() - started >= STABLE_AFTER_S:
                pause, young_deaths = first, 0
            young_deaths += 1
            taken = self._port_taken(child.name)
            if young_deaths >= RESTART_LIMIT:
                self._give_up(child, code, taken)
                return
            child.restarts += 1
            log.error("up.child_died", child=child.name, code=code, restart_in_s=pause,
                      restarts=child.restarts, **({"port": taken} if taken else {}))
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    def _give_up(self, child: Child, code: int, port_taken: str | None) -> None:
        """A child that keeps dying young would never start: say so, and stop the stack."""
        self._given_up = (f"the {child.name} died {RESTART_LIMIT} times in a row, each time "
                          f"within {STABLE_AFTER_S:g} s of its start (last exit code {code})"
                          + (f"; {port_taken}" if port_taken else "")
                          + ": up gave it up and stopped the stack")
        log.error("up.child_given_up", child=child.name, code=code, deaths=RESTART_LIMIT,
                  **({"port": port_taken} if port_taken else {}))
        _banner(f"GIVING UP: {self._given_up}. See its log above.")
        self._stopping.set()

    def _live_pid(self, name: str) -> int | None:
        for child in self._children:
            if child.name == name and child.process and child.process.returncode is None:
                return child.process.pid
        return None

    def _gateway_url(self, report: dict) -> str | None:
        """Where our live gateway serves, from its heartbeat (it binds before it beats)."""
        pid = self._live_pid("gateway")
        for beat in report["services"]["gateway"]["instances"]:
            if beat["pid"] == pid and beat.get("url"):
                port = urlsplit(beat["url"]).port
                return _local_url(self._listen_address("gateway")[0], port or 0)
        return None

    def _dashboard_url(self) -> str | None:
        """Where our live dashboard listens, once it does: a port answering is not enough,
        another program may hold it."""
        pid = self._live_pid("dashboard")
        host, port = self._listen_address("dashboard")
        if pid is None:
            return None
        try:
            listening = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            return None
        found = port if port in listening else (min(listening) if listening and not port
                                                else None)
        return _local_url(host, found) if found else None

    async def _wait_until_healthy(self) -> None:
        """Until every service beats from a live process of ours (a crashed run's heartbeats
        stay fresh for a few seconds and must not count), and our own dashboard listens: the
        banner's URLs are then those of our gateway and dashboard. Past READY_TIMEOUT_S, it says
        who it still waits for, and waits on (a child that cannot start is given up on)."""
        nc = await client.connect(self._settings(nats_auth.ADMIN))

        def beats(name: str, report: dict) -> bool:
            pid = self._live_pid(name)
            return any(i["pid"] == pid for i in report["services"][name]["instances"])

        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        said_late = False
        try:
            self._stop_point()
            while True:
                report = await client.service_health(nc)
                self._stop_point()
                gateway, dashboard = self._gateway_url(report), self._dashboard_url()
                late = [name for name in SERVICES if name != "gateway" and not beats(name, report)]
                late += ["gateway"] * (gateway is None) + ["dashboard"] * (dashboard is None)
                if not late:
                    break
                if not said_late and asyncio.get_running_loop().time() >= deadline:
                    log.error("up.not_healthy", waiting_for=late,
                              hint="see their logs above; the banner follows once they are up")
                    said_late = True
                await self._pause(2.0 if said_late else 0.5)
        finally:
            await nc.close()
        self._stop_point()  # no banner for a stack that is stopping
        cli = _cli_command()
        if self._identities and self.data_dir != up_auth.DEFAULT_DATA_DIR.resolve():
            cli = f"{up_auth.DATA_DIR_VARIABLE}={self.data_dir} {cli}"
        nats = connection.redact(self.env["NATS_URL"])
        if self._identities:
            nats += f" (users and passwords in {up_auth.folder(self.data_dir)}/)"
        elif self._nats is not None:
            nats += " (OPEN: --insecure)"
        _banner(
            "Smart Router is up.\n"
            f"  NATS      {nats}\n"
            f"  HTTP      {gateway}/v1 (POST /v1/chat, OpenAI SDK base_url; docs at /docs)\n"
            f"  dashboard {dashboard}/\n"
            f'  try       {cli} ask "What is the capital of France?"\n'
            f"  health    {cli} health   |   costs: {cli} stats\n"
            "  stop      Ctrl-C"
        )

    async def _stop(self) -> None:
        """The services (which drain through NATS and write to PostgreSQL) first, then the
        servers they need."""
        log.info("up.stopping")
        for supervisor in self._supervisors:
            supervisor.cancel()  # no restart from here on
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        await self._stop_children()
        for server in (self._nats, self._postgres):
            if server is not None:
                server.stop()
        log.info("up.stopped")

    async def _stop_children(self) -> None:
        """SIGTERM, then SIGKILL for those still running after STOP_GRACE_S."""
        running = [(c.name, c.process) for c in self._children
                   if c.process is not None and c.process.returncode is None]
        for _, process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S):
                await asyncio.gather(*(process.wait() for _, process in running))
        for name, process in running:
            if process.returncode is None:
                log.warning("up.child_killed", child=name, grace_s=STOP_GRACE_S)
                process.kill()
                await process.wait()


def _cli_command() -> str:
    """`smart-router` as it can be typed here: the bare name only when PATH finds this one."""
    ours = Path(sysconfig.get_path("scripts")) / "smart-router"
    found = shutil.which("smart-router")
    if found and Path(found).resolve() == ours.resolve():
        return "smart-router"
    with contextlib.suppress(ValueError):
        return str(ours.relative_to(Path.cwd()))
    return str(ours)


def _local_url(host: str, port: int) -> str:
    """http://host:port as a client on this machine reaches it (a wildcard at loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def subprocess_stdout(name: str) -> int | None:
    """Services log to stderr (inherited); the emulator's access chatter is not wanted."""
    return asyncio.subprocess.DEVNULL if name == "emulator" else None


async def _wait_for_http(url: str, pause: Callable[[float], Awaitable[None]],
                         timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(urllib.request.urlopen, url, None, 1)
            return
        await pause(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """One `up` per data folder: a second one would fight the first over ports and files."""
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another `smart-router up` is running with the data folder {lock_path.parent}"
            ) from None
        yield


def _banner(text: str) -> None:
    line = "=" * 78
    print(f"\n{line}\n{text}\n{line}\n", file=sys.stderr, flush=True)
