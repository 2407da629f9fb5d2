"""Gateway worker: the HTTP front door (uvicorn serving app.py) inside a router service, so it
beats in `health`, exits when NATS is gone for good, and stops like the others: on SIGTERM the
HTTP server stops taking connections and finishes the requests in hand before NATS closes.

It listens on GATEWAY_HOST:GATEWAY_PORT (127.0.0.1:8000 by default; port 0 takes a free one,
and the heartbeat says which). With GATEWAY_API_KEYS_FILE, callers need an API key naming their
tenant (api_keys.py); without it, anyone who reaches the port may ask as any tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import structlog
import uvicorn
from faststream import FastStream
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared import hosts
from shared.config import RouterConfig, Settings
from shared.errors import ErrorCode
from shared.runtime import Service

from . import errors
from .api_keys import ApiKeys
from .app import create_app as create_http_app
from .link import RouterLink

log = structlog.get_logger(__name__)


class GatewaySettings(BaseSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=0, le=65535)
    # Keys' digests and their tenants (`smart-router api-key add`); unset, no key is asked for.
    gateway_api_keys_file: Path | None = None
    # Open connections past which the oldest that has sent nothing is closed, or with none
    # such, a request is answered 429 `overloaded` and its connection closed: each may hold a
    # body of up to limits.max_request_bytes.
    gateway_max_connections: int = Field(default=1024, ge=1)
    # A request's line and headers must arrive within this (a new connection's first byte too),
    # and its body within gateway_body_timeout_s: a client trickling bytes holds a connection.
    gateway_head_timeout_s: float = Field(default=10.0, gt=0)
    gateway_body_timeout_s: float = Field(default=30.0, gt=0)
    # Host names served besides localhost, 127.0.0.1, [::1] and the address bound to,
    # comma-separated (shared/hosts.py): a request naming another is refused.
    gateway_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("gateway_api_keys_file", mode="before")
    @classmethod
    def _named_file(cls, value: object) -> object:
        if value == "":  # not "no keys": an empty path would be the working directory
            raise ValueError("set but empty: name the key file, or unset it for no API keys")
        return value

    @field_validator("gateway_allowed_hosts", mode="before")
    @classmethod
    def _names(cls, value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
        return hosts.names(value)


# A request's line and headers, in bytes: past it, 431 and the connection closed.
MAX_HEAD_BYTES = 64 * 1024
# Seconds between two warnings that connections are being refused (a flood would flood the log).
REFUSED_WARNING_EVERY_S = 10.0
# An answer given before the request's body was read (a refusal): the rest of the body may
# arrive (and be dropped) this long, then the connection is closed.
LINGER_S = 2.0


class _GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded where it is not: a request's head in bytes and in
    time, and the connections open at once.

    Bytes: uvicorn's httptools mode bounds no head (a 300 MB header was buffered whole, the
    process grew by 360 MB, before any key was checked). The bytes of each head are counted as
    they arrive; past MAX_HEAD_BYTES, 431 and the connection closed. A head that starts inside a
    read already let through is counted from the next read on, so the bound is MAX_HEAD_BYTES
    plus one read (asyncio's reads are at most 256 KiB).
    Time: uvicorn's keep-alive timer runs only between requests, so a connection that sent
    nothing, or a head a byte at a time, was held for ever; a head not complete within the head
    timeout is answered 408 and closed.
    Connections: past the limit, the oldest connection that has sent nothing yet is closed to
    make room, so sockets opened and left silent cannot lock every client out (before: 1,024
    of them did, until the head timeout, and again as they were reopened); with none such, a
    request is answered by `refuse_overloaded` instead of the app (uvicorn's own
    limit_concurrency answers plain text).
    Refusals: a request answered before its body was read (413, 415, 401...) has LINGER_S for
    the rest of its body to arrive, then the connection is closed: uvicorn would wait for it
    for ever, every byte resetting its keep-alive timer. A body that does arrive in time
    (a pipelined request may follow it) leaves the connection open."""

    settings: GatewaySettings  # set on the subclass a server is built with
    refused_since_warning = 0
    warned_at = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_seen: int | None = 0  # None once the head is complete
        self._heads = 0  # heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._opened_at = time.monotonic()
        self._silent = True  # nothing received yet: no request is lost by closing it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if (len(self.connections) > self.settings.gateway_max_connections
                and not self._close_oldest_silent()):
            self.app = _refuse_overloaded
            self._count_refused()
        self._time_head()

    def _close_oldest_silent(self) -> bool:
        silent = [c for c in self.connections
                  if c is not self and isinstance(c, _GuardedHttp) and c._silent
                  and not c.transport.is_closing()]
        if not silent:
            return False
        min(silent, key=lambda c: c._opened_at).transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_lingering()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_seen = 0
        self._time_head()

    def on_headers_complete(self) -> None:
        self._head_seen = None
        self._heads += 1
        self._stop_head_timer()
        super().on_headers_complete()

    def _time_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.settings.gateway_head_timeout_s,
                                                    self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_seen is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._time_head()  # a response is still being sent: the next head waits for it
            return
        timeout = self.settings.gateway_head_timeout_s
        self._refuse(b"408 Request Timeout",
                     f"the request's line and headers took over {timeout:g} s to arrive "
                     "(GATEWAY_HEAD_TIMEOUT_S)")

    @classmethod
    def _count_refused(cls) -> None:
        cls.refused_since_warning += 1
        now = time.monotonic()
        if now - cls.warned_at >= REFUSED_WARNING_EVERY_S:
            log.warning("gateway.connections_full", refused=cls.refused_since_warning,
                        limit=cls.settings.gateway_max_connections)
            cls.warned_at, cls.refused_since_warning = now, 0

    def on_response_complete(self) -> None:
        unread = self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self._linger = self.loop.call_later(LINGER_S, self.transport.close)

    def on_message_complete(self) -> None:
        self._stop_lingering()  # the refused request's body is all in: the connection is sound
        super().on_message_complete()

    def _stop_lingering(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def data_received(self, data: bytes) -> None:
        self._silent = False
        if self._head_seen is None or self._head_seen + len(data) <= MAX_HEAD_BYTES:
            if self._head_seen is not None:
                self._head_seen += len(data)
            super().data_received(data)
            return
        room, heads = MAX_HEAD_BYTES - self._head_seen, self._heads
        super().data_received(data[:room])
        if self._heads != heads:  # the head ended within the bound (a pipelined one may follow)
            self.data_received(data[room:])
        elif not self.transport.is_closing():
            self._refuse_head()

    def _refuse_head(self) -> None:
        self._refuse(b"431 Request Header Fields Too Large",
                     f"the request's head is over {MAX_HEAD_BYTES} bytes")

    def _refuse(self, status: bytes, message: str) -> None:
        """A refusal before the request is read (plain text: its route is not known yet),
        unless a response is still being written on this connection: then it would land
        inside that one, so the connection is only closed."""
        self._stop_head_timer()
        if self.cycle is None or self.cycle.response_complete:
            text = message.encode()
            self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, len(text), text))
        self.transport.close()


async def _refuse_overloaded(scope: Any, receive: Any, send: Any) -> None:
    """The app a connection over the limit gets: 429 `overloaded` in its route's shape, with
    Retry-After, and the connection closed after it."""
    reply = errors.error_reply(ErrorCode.OVERLOADED, "the gateway has too many connections "
                               "open (GATEWAY_MAX_CONNECTIONS)", retry_after_s=1.0)
    response = errors.for_route(scope["path"], reply, headers={"connection": "close"})
    await response(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: FastStream's app owns SIGINT and SIGTERM and
    stops the server through `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def create_app(config: RouterConfig | None = None,
               settings: Settings | None = None) -> FastStream:
    service = Service("gateway", config, settings)
    HttpFrontDoor(service, GatewaySettings())
    return service.app


class HttpFrontDoor:
    """The HTTP server's life inside the service's: bound before the first heartbeat, serving
    after start-up, drained at shutdown."""

    def __init__(self, service: Service, where: GatewaySettings) -> None:
        cfg, broker = service.config, service.broker
        self.counters = service.counters
        keys = ApiKeys(where.gateway_api_keys_file) if where.gateway_api_keys_file else None
        link = RouterLink(lambda: broker.connection, cfg.limits.request_timeout_s)
        http = type("GatewayHttp", (_GuardedHttp,), {"settings": where})
        self.server = _Server(uvicorn.Config(
            create_http_app(link, cfg, service.counters, keys, where.gateway_body_timeout_s,
                            hosts.served(where.gateway_host, where.gateway_allowed_hosts)),
            host=where.gateway_host, port=where.gateway_port, http=http, lifespan="off",
            access_log=False,
            log_config=None, timeout_graceful_shutdown=int(cfg.limits.request_timeout_s) + 5,
        ))
        self.sockets: list[socket.socket] = []
        self.serving: asyncio.Task | None = None
        service.app.on_startup(self.bind)
        service.app.after_startup(self.open)
        service.app.on_shutdown(self.close)

    async def bind(self) -> None:
        """Bind before the first heartbeat, so the instance `health` shows up serves at the URL
        it shows (port 0 takes a free one); a taken port fails the start with uvicorn's error."""
        self.sockets.append(self.server.config.bind_socket())
        host, port = self.sockets[0].getsockname()[:2]
        self.counters.url = f"http://{host}:{port}"

    async def open(self) -> None:
        self.serving = asyncio.create_task(self.server.serve(sockets=self.sockets))
        self.serving.add_done_callback(self._exit_if_unexpected)
        log.info("gateway.listening", url=self.counters.url)

    def _exit_if_unexpected(self, task: asyncio.Task) -> None:
        """An HTTP server that stopped on its own leaves a process that beats but serves
        nothing."""
        if self.server.should_exit:
            return
        error = None if task.cancelled() else task.exception()
        log.critical("gateway.http_stopped", reason=repr(error))
        os._exit(1)

    async def close(self) -> None:
        if self.serving is not None:
            self.server.should_exit = True
            await self.serving
