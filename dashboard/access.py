"""Who may read the dashboard, checked before every request on Dash's Flask server: the page, its
callback and its assets alike, since each of them serves or leads to every tenant's spend.

First the Host header must name an allowed host (a DNS-rebinding page sends its own name), then
the reader must be logged in, if a login is configured: HTTP basic auth against the password, or
a user named by a trusted reverse proxy's header."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, request

from shared.hosts import host_name

from .settings import DashboardSettings

REALM = 'Basic realm="Smart Router dashboard", charset="UTF-8"'


def guard(server: Flask, settings: DashboardSettings) -> None:
    allowed = settings.allowed_names()
    header = settings.trusted_user_header
    password = settings.password.get_secret_value() if settings.password is not None else None

    @server.before_request
    def check_access() -> Response | None:
        if host_name(request.headers.get("Host")) not in allowed:
            return _text("This host name is not served here; add it to DASHBOARD_ALLOWED_HOSTS.",
                         400)
        if header:
            # 403, not 401: the reader cannot log in here, only through the proxy.
            if not request.headers.get(header, "").strip():
                return _text("Log in through the proxy in front of the dashboard.", 403)
        elif password is not None:
            given = request.authorization
            if not (given is not None and given.type == "basic"
                    and _same(given.username or "", settings.user)
                    & _same(given.password or "", password)):
                return _text("Log in to see the dashboard.", 401, {"WWW-Authenticate": REALM})
        return None


def _same(given: str, expected: str) -> bool:
    """Compared in constant time, over digests so that not even the length shows."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


def _text(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status, headers, mimetype="text/plain")
