"""How every process connects to NATS: the servers, who it is, and TLS, from Settings.

One function builds the options for `nats.connect` (CLI, bench, tests, the gateway) and one
turns them into a FastStream broker's (services), so a setting added here reaches them all.
Secrets never reach a log: `redact` masks the credentials in any URL list.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsToken,
    NatsUserPassword,
)

from shared.config import Settings

TLS_SCHEMES = ("tls", "wss")


def servers(url: str) -> list[str]:
    """A comma-separated URL list (a cluster) as nats-py's server list: one string with commas
    is refused (`invalid connect url option`)."""
    found = [u.strip() for u in url.split(",") if u.strip()]
    if not found:
        raise ValueError("NATS_URL is empty")
    return found


def redact(url: str | list[str]) -> str:
    """The URL (or list) for a log line, each server without its password or token."""
    urls = servers(url) if isinstance(url, str) else url
    return ",".join(_redact_one(u) for u in urls)


def _redact_one(url: str) -> str:
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    host = (rest if sep else url).rsplit("@", 1)[1]
    return f"{scheme}://***@{host}" if sep else f"***@{host}"


def nats_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `nats.connect`: servers, credentials, TLS and inbox prefix."""
    options: dict[str, Any] = {"servers": servers(settings.nats_url)}
    options |= _credentials(settings)
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    if settings.nats_inbox_prefix:
        options["inbox_prefix"] = settings.nats_inbox_prefix
    return options


def _credentials(settings: Settings) -> dict[str, Any]:
    given = {
        "user_credentials": str(settings.nats_creds) if settings.nats_creds else None,
        "nkeys_seed": str(settings.nats_nkey_seed) if settings.nats_nkey_seed else None,
        "token": settings.nats_token.get_secret_value() if settings.nats_token else None,
        "user": settings.nats_user,
    }
    chosen = {k: v for k, v in given.items() if v}
    if len(chosen) > 1:
        raise ValueError(f"give NATS one way to authenticate, not {sorted(chosen)} "
                         "(NATS_CREDS, NATS_NKEY_SEED, NATS_TOKEN or NATS_USER)")
    for key in ("user_credentials", "nkeys_seed"):
        if key in chosen:
            _readable(chosen[key], key)
    if "user" in chosen:
        if settings.nats_password is None:
            raise ValueError("NATS_USER is set without NATS_PASSWORD")
        chosen["password"] = settings.nats_password.get_secret_value()
    return chosen


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A context trusting NATS_TLS_CA (else the system's CAs) and presenting NATS_TLS_CERT /
    NATS_TLS_KEY; None when neither a setting nor a tls:// URL asks for TLS."""
    wanted = any(urlsplit(u).scheme in TLS_SCHEMES for u in servers(settings.nats_url))
    if not (wanted or settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    if bool(settings.nats_tls_cert) != bool(settings.nats_tls_key):
        raise ValueError("NATS_TLS_CERT and NATS_TLS_KEY go together")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(_readable(settings.nats_tls_ca, "NATS_TLS_CA")) if settings.nats_tls_ca
        else None,
    )
    if settings.nats_tls_cert and settings.nats_tls_key:
        context.load_cert_chain(_readable(settings.nats_tls_cert, "NATS_TLS_CERT"),
                                _readable(settings.nats_tls_key, "NATS_TLS_KEY"))
    return context


def _readable(path: object, what: str) -> str:
    try:
        with open(str(path), "rb"):
            return str(path)
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None


def broker_options(settings: Settings) -> dict[str, Any]:
    """The same options for a FastStream NatsBroker, whose credentials and TLS go in one
    `security` object."""
    options = nats_options(settings)
    tls = options.pop("tls", None)
    if "user_credentials" in options:
        security: NatsSecurity = NatsCredentials.from_file(options.pop("user_credentials"),
                                                           ssl_context=tls)
    elif "nkeys_seed" in options:
        security = NatsNKey.from_file(options.pop("nkeys_seed"), ssl_context=tls)
    elif "token" in options:
        security = NatsToken(options.pop("token"), ssl_context=tls)
    elif "user" in options:
        security = NatsUserPassword(options.pop("user"), options.pop("password"),
                                    ssl_context=tls)
    else:
        security = NatsSecurity(ssl_context=tls)
    return {**options, "security": security}
