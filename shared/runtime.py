"""What every service process shares: one broker, the topology declared before any subscriber
binds, a heartbeat, a health responder, and one discipline for settling JetStream messages.

FastStream's default ack policy terminates a message whose handler raised; here every JetStream
handler runs under `settle`, which acks on success, redelivers with a backoff on a transient
failure, and turns the last failed delivery into a dead-letter record instead of a stuck message.

The broker runs without FastStream's dependency injection (apply_types=False): injecting the
message as a handler argument resolves it through a thread-pool hop on every delivery (fast_depends
runs custom fields' sync `use` in a worker thread), a tenth of a service's CPU under load. A
handler is called with the NatsMessage itself (FastStream decodes nothing) and parses its body
once, with the model it needs.

Each service builds its Service in a `create_app(config, settings)` factory: nothing is
connected or loaded at import, and a test can build one with other settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

import nats
import structlog
from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionReconnectingError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_fixed,
)

from shared import connection, health, logs, outcomes, payload, subjects, topology
from shared.config import RouterConfig, Settings
from shared.config import config as environment_config
from shared.config import settings as environment_settings

log = structlog.get_logger(__name__)

CONNECT_RETRY_S = 60.0
# Exit status of a service whose NATS connection is gone for good: its supervisor restarts it.
EXIT_NATS_CLOSED = 75
# Server errors after which nats-py will not get the connection back (FastStream re-raises them
# from the reconnect loop, which then stops): rotated credentials, an oversized message.
UNRECOVERABLE = ("authorization violation", "authorization timeout", "maximum payload violation",
                 "user authentication expired", "account authentication expired")
# Disconnected this long (a NATS restart takes seconds), the service starts afresh.
NATS_LOST_EXIT_S = 120.0
# Asked to stop while NATS is gone, the service waits this long for it (a restart takes
# seconds), then exits with EXIT_NATS_CLOSED: no message in flight can be acked or recorded
# without NATS, so waiting out the handlers' timeouts (30 s and more) would only keep a stopped
# stack's processes alive. What it had not acked is redelivered.
NATS_LOST_AT_STOP_S = 10.0
# A stopping instance takes its heartbeat out of the bucket; a beat left there goes stale anyway.
HEARTBEAT_DELETE_S = 3.0
NATS_ERROR_LOG_EVERY_S = 10.0
# Allocations (less deallocations) between two collections of the youngest generation (Python's
# default is 700, about one request of the dispatcher's).
GC_YOUNG_THRESHOLD = 10_000


Handler = Callable[[NatsMessage], Awaitable[None]]


class _Broker(NatsBroker):
    """FastStream's broker ends its stop by draining the connection, which nats-py refuses
    while it is reconnecting (NATS gone), and its subscribers' unsubscribe fails once nats-py has
    closed it: the stop would end in a traceback and skip the app's after_shutdown hooks. Such
    a connection is closed instead."""

    async def stop(self, exc_type: type[BaseException] | None = None,
                   exc_val: BaseException | None = None,
                   exc_tb: TracebackType | None = None) -> None:
        try:
            await super().stop(exc_type, exc_val, exc_tb)
        except* (ConnectionReconnectingError, ConnectionClosedError):  # subscribers' too
            connection, self._connection = self._connection, None
            if connection is not None and not connection.is_closed:
                await connection.close()
            self.config.disconnect()


class Service:
    """One service process: its broker, its FastStream app, its heartbeat. `config` and
    `settings` default to the environment's (ROUTER_CONFIG, NATS_URL, ...)."""

    def __init__(self, name: str, config: RouterConfig | None = None,
                 settings: Settings | None = None) -> None:
        self.name = name
        self.settings: Settings = settings or environment_settings()
        self.config: RouterConfig = config or environment_config()
        self.counters = health.Counters()
        logs.configure(self.settings.log_level, self.settings.log_format, service=name)
        self.broker = _Broker(
            **connection.broker_options(self.settings),
            name=f"smart-router.{name}",
            logger=logging.getLogger(f"smart_router.{name}"),
            # FastStream logs every message at this level: keep it out of INFO at 1,000 msg/s.
            log_level=logging.DEBUG,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            graceful_timeout=self.config.limits.provider_timeout_s,
            apply_types=False,
            decoder=_the_message,
            closed_cb=self._exit_if_unexpected,
            error_cb=self._exit_if_unrecoverable,
        )
        self.app = FastStream(
            self.broker,
            logger=logging.getLogger(f"smart_router.{name}"),
            on_startup=[self._declare_topology],
            after_startup=[_freeze_the_startup_heap, self._start_heartbeat],
            on_shutdown=[self._stop_background],
            after_shutdown=[self._stop_watching_nats],
        )
        self._stopping = False
        self._nats_errors = _ErrorLog()
        self._tasks: set[asyncio.Task] = set()
        self._nats_watch: asyncio.Task | None = None
        self.respond(subjects.HEALTH, "health", self._answer_health)

    async def _declare_topology(self) -> None:
        """Streams and consumers must exist with our settings before a subscriber binds, and a
        request at the configured limits must fit in the server's messages."""
        nc = await _connect_patiently(self.settings)
        try:
            payload.check_limits(self.config.limits, nc.max_payload,
                                 features=self.config.ledger.store_features)
            if self.settings.nats_declare:
                await topology.declare(nc.jetstream(), self.config.pipeline, self.config.ledger)
        finally:
            await nc.close()

    async def _exit_if_unexpected(self) -> None:
        """nats-py closes a connection for good after some server errors and the process would
        live on, deaf. Exit instead, so `up` or the container runtime starts a fresh one."""
        if not self._stopping:
            _exit("connection closed")

    async def _exit_if_unrecoverable(self, error: Exception) -> None:
        """Every error nats-py reports, logged (at most one line per kind every
        NATS_ERROR_LOG_EVERY_S: a slow consumer reports each message it drops); exit on one it
        cannot recover from."""
        reason = str(error).removeprefix("nats: ").strip("'").lower()
        if reason in UNRECOVERABLE and not self._stopping:
            _exit(reason)
        self._nats_errors.note(type(error).__name__, reason)

    async def _exit_when_disconnected_too_long(self) -> None:
        """Runs through shutdown (see NATS_LOST_AT_STOP_S) until the broker closes its
        connection."""
        nc = self.broker.connection
        lost_since: float | None = None
        while not nc.is_closed:
            await asyncio.sleep(0.5)
            now = asyncio.get_running_loop().time()
            if nc.is_connected:  # draining included
                lost_since = None
            elif lost_since is None:
                lost_since = now
            elif self._stopping and now - lost_since > NATS_LOST_AT_STOP_S:
                _exit(f"stopping, disconnected for {NATS_LOST_AT_STOP_S:.0f} s",
                      in_flight=self.counters.in_flight)
            elif now - lost_since > NATS_LOST_EXIT_S:
                _exit(f"disconnected for {NATS_LOST_EXIT_S:.0f} s")

    @property
    def jetstream(self) -> JetStreamContext:
        """The broker's own JetStream context, for what FastStream's subscribers do not cover."""
        return self.broker.config.connection_state.stream

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` for the life of the service; it is cancelled at shutdown."""
        self._tasks.add(asyncio.create_task(work))

    async def _start_heartbeat(self) -> None:
        kv = await self.broker.key_value(subjects.HEALTH_BUCKET, declare=False)
        self.background(health.beat_forever(kv, self.name, self.counters))
        self._nats_watch = asyncio.create_task(self._exit_when_disconnected_too_long())
        log.info("service.started", nats=connection.redact(self.settings.nats_url))

    async def _stop_background(self) -> None:
        """Stop the heartbeat and take this instance out of `health` at once: a stopped copy
        must not be shown, nor counted as up, until its last beat goes stale."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # not connected (yet, or any more): it goes stale
            if self.broker.connection.is_connected:
                async with asyncio.timeout(HEARTBEAT_DELETE_S):
                    kv = await self.broker.key_value(subjects.HEALTH_BUCKET, declare=False)
                    await kv.delete(health.instance_key(self.name))

    async def _stop_watching_nats(self) -> None:
        if self._nats_watch is not None:
            self._nats_watch.cancel()

    async def _answer_health(self, _msg: NatsMessage) -> dict:
        return await health.snapshot(self.jetstream)

    def consume(self, name: str, concurrency: int, handle: Handler, *,
                keepalive: bool = False) -> None:
        """Run `handle` on the service's durable push consumer `name`: every copy of the service
        binds the same one (through its deliver group) and handles `concurrency` messages at
        once; each message is settled when `handle` returns or raises (see `settle`)."""
        consumer = topology.push_consumers(self.config.pipeline)[name]

        async def settled(msg: NatsMessage) -> None:
            try:
                await self.settle(msg, lambda: handle(msg), keepalive=keepalive)
            finally:
                msg.clear_cache()  # see _the_message

        settled.__name__ = getattr(handle, "__name__", name)  # FastStream logs under this name
        self.broker.subscriber(
            consumer.filter_subject,
            stream=JStream(consumer.stream, declare=False),
            queue=consumer.name,  # nats-py binds the durable consumer of that name
            max_workers=concurrency,
            ack_policy=AckPolicy.MANUAL,
        )(settled)

    def respond(self, subject: str, queue: str,
                answer: Callable[[NatsMessage], Awaitable[dict]], at_once: int = 1) -> None:
        """Answer requests on a core subject with the dict `answer` returns (sent as JSON),
        `at_once` at a time."""

        async def answered(msg: NatsMessage) -> dict:
            try:
                return await answer(msg)
            finally:
                msg.clear_cache()  # see _the_message

        answered.__name__ = getattr(answer, "__name__", subject)
        self.broker.subscriber(subject, queue=queue, max_workers=at_once)(answered)

    async def settle(
        self,
        msg: NatsMessage,
        work: Callable[[], Awaitable[None]],
        *,
        keepalive: bool = False,
    ) -> None:
        """Run a JetStream handler's work and ack, nack with backoff, or dead-letter its message.

        A body that fails validation is dead-lettered at once: no redelivery would fix it; its
        caller hears why (see `outcomes.dead_letter`). `keepalive` reports progress while slow
        work (a provider call) runs, so the message is not redelivered to another copy of the
        service in the meantime.
        """
        delivery = msg.raw_message.metadata.num_delivered
        self.counters.in_flight += 1
        ticker = asyncio.create_task(self._report_progress(msg)) if keepalive else None
        try:
            await work()
        except Exception as exc:  # any failure: the message must neither vanish nor loop
            self.counters.failed += 1
            reason = f"{type(exc).__name__}: {exc}"[:500]
            poison = isinstance(exc, ValidationError)
            if poison or delivery >= self.config.pipeline.max_deliver:
                log.error("message.dead_letter", subject=msg.raw_message.subject,
                          delivery=delivery, reason=reason)
                await outcomes.dead_letter(self.broker, outcomes.Unsettled.of(msg), reason,
                                           store_prompt=self.config.ledger.store_prompt_text,
                                           tiers=len(self.config.tiers))
                await msg.ack()
            else:
                delay = self.config.pipeline.retry_delay(delivery)
                log.warning("message.retry", subject=msg.raw_message.subject,
                            delivery=delivery, retry_in_s=delay, reason=reason)
                await msg.nack(delay=delay)
        else:
            self.counters.handled += 1
            await msg.ack()
        finally:
            self.counters.in_flight -= 1
            if ticker is not None:
                ticker.cancel()

    async def _report_progress(self, msg: NatsMessage) -> None:
        while True:
            await asyncio.sleep(self.config.pipeline.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()



async def subscribe_with_tenants(nc: nats.NATS, subject: str, queue: str,
                                 cb: Callable[[Msg], Awaitable[None]]) -> list[Subscription]:
    """Core subscriptions, in a queue group, to `subject` and its per-tenant subjects."""
    return [await nc.subscribe(s, queue=queue, cb=cb) for s in subjects.with_tenants(subject)]


async def drain(subscriptions: list[Subscription]) -> None:
    """Take no more messages; those already received are still handled. A connection that is
    gone has nothing left to drain."""
    for subscription in subscriptions:
        with contextlib.suppress(Exception):
            await subscription.drain()


async def _freeze_the_startup_heap() -> None:
    """Keep the cyclic garbage collector off what start-up built: a service imports SDKs and
    models worth 100,000-270,000 objects, which every full collection scanned again (150-230 ms
    a time in the dispatcher, 8 times in a 3,000-request run). Frozen, they are never scanned.
    The youngest generation is collected every GC_YOUNG_THRESHOLD net allocations instead of
    700, so the objects of requests still in flight are scanned and promoted far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _exit(reason: str, **context: Any) -> None:
    log.critical("nats.connection_lost", reason=reason, exit_status=EXIT_NATS_CLOSED, **context)
    os._exit(EXIT_NATS_CLOSED)


async def _the_message(msg: NatsMessage) -> NatsMessage:
    """Handlers parse and validate bodies themselves. FastStream's decoder would JSON-decode
    each one first, and a hostile body (1,000 nested brackets) makes it raise before the
    handler can answer. FastStream caches the decoded value on the message, which then refers
    to itself: every handler clears that cache when done (`consume`, `respond`), or each
    message, body and all, would wait for the garbage collector."""
    return msg


async def _connect_patiently(settings: Settings) -> nats.NATS:
    """At start-up NATS may still be coming up (compose, `up`): wait for it, saying so, for
    CONNECT_RETRY_S. Refused credentials are not a server coming up: they fail at once.

    nats-py's own loop would try for ever, refused credentials included, and say nothing but
    its error callback's traceback: it is told to give up at once (it tries each server twice),
    and the errors it met are kept for the log line."""
    options = connection.nats_options(settings)
    errors: list[Exception] = []

    async def note(error: Exception) -> None:
        errors.append(error)

    def waiting(retry: RetryCallState) -> None:
        failed = retry.outcome.exception() if retry.outcome else None
        log.warning("nats.waiting", nats=connection.redact(settings.nats_url),
                    reason=str(errors[-1] if errors else failed))

    retrying = AsyncRetrying(
        retry=retry_if_exception(_server_coming_up), wait=wait_fixed(1),
        stop=stop_after_delay(CONNECT_RETRY_S), before_sleep=waiting, reraise=True,
    )
    client: nats.NATS = await retrying(
        nats.connect, **options, connect_timeout=2, allow_reconnect=False,
        max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=note)
    return client


def _server_coming_up(error: BaseException) -> bool:
    """A connection refused or timed out, or a server that cannot take us yet; not a server that
    refused our credentials (nats-py raises those as a plain error with the server's words)."""
    reason = str(error).removeprefix("nats: ").strip("'").lower()
    return (isinstance(error, OSError | TimeoutError | NatsError)
            and reason not in UNRECOVERABLE)


class _ErrorLog:
    """Errors of one kind logged once per NATS_ERROR_LOG_EVERY_S, with how many came since."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, kind: str, reason: str) -> None:
        self._since[kind] = self._since.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -NATS_ERROR_LOG_EVERY_S) >= NATS_ERROR_LOG_EVERY_S:
            log.warning("nats.error", kind=kind, reason=reason[:200], count=self._since[kind])
            self._last[kind], self._since[kind] = now, 0


def command_line(module: str, does: str) -> None:
    """A service's `python -m` takes no arguments (its settings are the environment's): --help
    says so, anything else is refused. Before, every argument was ignored, so `--help` started
    the service against the default servers (and the ledger migrated their database)."""
    argparse.ArgumentParser(
        prog=f"python -m {module}", description=does,
        epilog="Settings come from the environment (NATS_URL, DATABASE_URL, ROUTER_CONFIG, ...) "
               "and the configuration file: see the README's Configuration section.",
    ).parse_args()
