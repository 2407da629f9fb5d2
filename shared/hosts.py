"""Host headers, checked by the HTTP servers (the gateway, the dashboard): a page on another
site that rebinds its own name to this address (DNS rebinding) sends that name, and is refused.
Loopback names are always served, and the address bound to unless it is every interface."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable

# In a Host header: a name, an IPv4 address or a bracketed IPv6 one, then perhaps a port.
HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::[0-9]{1,5})?")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "[::]")  # bound to every interface: not a name to serve


def normalised(name: str) -> str | None:
    """A name as Host headers are compared: lower case, no trailing dot, IPv6 in brackets and
    compressed. None when it is not a host name (one with a port is not)."""
    name = name.strip().lower().rstrip(".")
    with contextlib.suppress(ValueError):
        return f"[{ipaddress.IPv6Address(name.removeprefix('[').removesuffix(']'))}]"
    return name if re.fullmatch(r"[a-z0-9_.-]+", name) else None


def host_name(header: str | None) -> str | None:
    """The name a Host header asks for, without its port; None when it is not a Host header."""
    match = HOST_HEADER.fullmatch((header or "").strip().lower())
    return normalised(match[1]) if match else None


def names(value: str | Iterable[str]) -> tuple[str, ...]:
    """Host names from a setting (comma-separated, or a list), normalised; ValueError names the
    first that is not one."""
    given = [name for name in (value.split(",") if isinstance(value, str) else value)
             if name.strip()]
    hosts = []
    for name in given:
        host = normalised(name)
        if host is None:
            raise ValueError(f"{name!r} is not a host name (give names without a port)")
        hosts.append(host)
    return tuple(hosts)


def served(bound_to: str, extra: Iterable[str]) -> frozenset[str]:
    """The names a request's Host header may ask for: the loopback names, the address bound to
    unless it is every interface, and `extra`."""
    bound = normalised(bound_to)
    own = () if bound in WILDCARD_ADDRESSES or bound is None else (bound,)
    return frozenset((*LOOPBACK_NAMES, *own, *extra))
