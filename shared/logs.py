"""Structured logs on stderr, one format for our code and the libraries' stdlib loggers.

Nothing here logs prompt text or keys; call sites pass ids, sizes and codes only.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import Processor

OUR_LOGGERS = ("services", "shared", "smart_router", "emulator", "dashboard")


def configure(level: str = "INFO", fmt: str = "console", service: str | None = None) -> None:
    # Plain tracebacks only: rich ones print local variables, and a local can be a prompt.
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, _bind_service(service))
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries (the SDKs log every HTTP request, with URLs) speak only when something is wrong;
    # our own packages log at the configured level.
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    for ours in OUR_LOGGERS:
        logging.getLogger(ours).setLevel(level.upper())


def _bind_service(service: str):
    def processor(_logger, _method, event_dict):
        event_dict.setdefault("service", service)
        return event_dict

    return processor
