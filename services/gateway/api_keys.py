"""HTTP API keys, each naming its tenant (GATEWAY_API_KEYS_FILE).

The file holds one line per key: its tenant, the SHA-256 of the key (hex) and when it was made;
never the key itself, so a copy of the file lets nobody in. `smart-router api-key add` writes it
(mode 0600, replaced whole, so the gateway never reads half a line); deleting a line revokes
that key. The gateway reads the file at start and again whenever it changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from shared.nats_auth import checked_tenant, write_private

log = structlog.get_logger(__name__)

PREFIX = "sr-"  # recognisable in a config or a leaked log, as OpenAI's sk-
HEADER = "# Smart Router API keys (smart-router api-key): tenant, SHA-256 of the key, created\n"
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class KeyEntry:
    tenant: str
    digest: str
    created: str

    @property
    def key_id(self) -> str:
        """What `api-key list` and the logs show of a key: a prefix of its digest."""
        return self.digest[:12]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def read_entries(path: Path) -> list[KeyEntry]:
    """The file's keys; ValueError naming the line for anything else in it."""
    entries, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            if len(fields) != 3 or not _DIGEST_RE.fullmatch(fields[1]):
                raise ValueError("expected: TENANT SHA256-HEX CREATED")
            entry = KeyEntry(checked_tenant(fields[0]), fields[1], fields[2])
            if entry.digest in seen:
                raise ValueError("the same key twice")
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        seen.add(entry.digest)
        entries.append(entry)
    return entries


def add_key(path: Path, tenant: str) -> tuple[str, KeyEntry]:
    """A new random key for `tenant`, its digest added to the file (created 0600). The key is
    returned once and kept nowhere."""
    checked_tenant(tenant)
    key = PREFIX + secrets.token_urlsafe(32)  # 256 random bits
    entry = KeyEntry(tenant, digest(key),
                     datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The folder is locked, not the file, which is replaced: two adds at once both land.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        entries = read_entries(path) if path.exists() else []
        write_private(path, HEADER + "".join(f"{e.tenant} {e.digest} {e.created}\n"
                                             for e in [*entries, entry]))
    finally:
        os.close(folder)  # and with it the lock
    return key, entry


class ApiKeys:
    """The keys the gateway accepts, read again when the file changes (a stat per request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._version = self._stat()  # before reading: a change meanwhile is read again
        self._tenants = {e.digest: e.tenant for e in read_entries(path)}  # a bad file stops here
        self._problem: str | None = None
        log.info("gateway.api_keys", file=str(path), keys=len(self._tenants),
                 tenants=len(set(self._tenants.values())))

    def tenant(self, key: str) -> str | None:
        """The tenant `key` names, None for an unknown key; ValueError while the file is
        unreadable (every request is then refused, never let in)."""
        self._refresh()
        if self._problem is not None:
            raise ValueError(self._problem)
        # A lookup by the key's SHA-256: timing can reveal only digests, not the stored keys.
        return self._tenants.get(digest(key))

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        version = self._stat()
        if version == self._version:
            return
        self._version = version
        try:
            tenants = {e.digest: e.tenant for e in read_entries(self.path)}
        except (OSError, ValueError) as exc:
            self._problem = f"cannot read the API key file: {exc}"
            log.error("gateway.api_keys_unreadable", file=str(self.path), reason=str(exc))
            return
        self._tenants, self._problem = tenants, None
        log.info("gateway.api_keys_reloaded", file=str(self.path), keys=len(tenants),
                 tenants=len(set(tenants.values())))
