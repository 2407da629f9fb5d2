"""Gateway worker: the HTTP front door (uvicorn serving app.py) inside a router service, so it
beats in `health`, exits when NATS is gone for good, and stops like the others: on SIGTERM the
HTTP server stops taking connections and finishes the requests in hand before NATS closes.

It listens on GATEWAY_HOST:GATEWAY_PORT (127.0.0.1:8000 by default; port 0 takes a free one,
and the heartbeat says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import structlog
import uvicorn
from pydantic import Field
from pydantic_settings import BaseSettings

from shared import subjects
from shared.runtime import Service

from .app import create_app
from .link import RouterLink

log = structlog.get_logger(__name__)


class GatewaySettings(BaseSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=0, le=65535)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: FastStream's app owns SIGINT and SIGTERM and
    stops the server through `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


service = Service("gateway")
cfg = service.config
where = GatewaySettings()
link = RouterLink(lambda: service.broker.connection,
                  lambda: service.broker.key_value(subjects.HEALTH_BUCKET, declare=False),
                  cfg.limits.request_timeout_s)
server = _Server(uvicorn.Config(
    create_app(link, cfg, service.counters), host=where.gateway_host, port=where.gateway_port,
    http="httptools", lifespan="off", access_log=False, log_config=None,
    timeout_graceful_shutdown=int(cfg.limits.request_timeout_s) + 5,
))
sockets: list = []
serving: asyncio.Task | None = None


@service.app.on_startup
async def bind_http() -> None:
    """Bind before the first heartbeat, so the instance `health` shows up serves at the URL it
    shows (port 0 takes a free one); a taken port fails the start with uvicorn's error."""
    sockets.append(server.config.bind_socket())
    host, port = sockets[0].getsockname()[:2]
    service.counters.url = f"http://{host}:{port}"


@service.app.after_startup
async def open_http() -> None:
    global serving
    serving = asyncio.create_task(server.serve(sockets=sockets))
    serving.add_done_callback(_exit_if_unexpected)
    log.info("gateway.listening", url=service.counters.url)


def _exit_if_unexpected(task: asyncio.Task) -> None:
    """An HTTP server that stopped on its own leaves a process that beats but serves nothing."""
    if server.should_exit:
        return
    error = None if task.cancelled() else task.exception()
    log.critical("gateway.http_stopped", reason=repr(error))
    os._exit(1)


@service.app.on_shutdown
async def close_http() -> None:
    if serving is not None:
        server.should_exit = True
        await serving
