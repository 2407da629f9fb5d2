"""Where `up` keeps the credentials of its embedded NATS, and how the command line finds them.

`up` writes nats.conf and one <identity>.env per identity into <data dir>/nats-auth/
(shared/nats_auth.py). A command that talks to NATS, given no NATS credentials, connects as
that folder's admin identity: the data dir is ROUTER_DATA_DIR, else `.data` (up's default), and
the file is used only when it is this user's alone (mode 0600), names a server on loopback, and
NATS_URL is unset or names that server, so up's admin password never goes to another server.
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared import nats_auth
from shared.config import Settings

DATA_DIR_VARIABLE = "ROUTER_DATA_DIR"
DEFAULT_DATA_DIR = Path(".data")
FOLDER = "nats-auth"
IDENTITY_FILE = "NATS_IDENTITY_FILE"
# Any of these set means the environment says who to be.
CREDENTIALS = (IDENTITY_FILE, "NATS_USER", "NATS_TOKEN", "NATS_NKEY_SEED", "NATS_CREDS")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def identity_settings(url: str, identity: Path | None) -> Settings:
    """How `up` connects to a server of its own: as the identity of that file (none: open),
    whatever NATS_* this shell has."""
    unset = {name: None for name, spec in Settings.model_fields.items()
             if name.startswith("nats_") and spec.default is None}
    given = nats_auth.read_env(identity) if identity else {}
    given["NATS_URL"] = url
    fields: dict[str, Any] = unset | {k.lower(): v for k, v in given.items()}
    return Settings(**fields)


def admin_file(environ: MutableMapping[str, str]) -> Path:
    data_dir = Path(environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR)
    return folder(data_dir) / f"{nats_auth.ADMIN}.env"


def use_admin_identity(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point NATS_IDENTITY_FILE at up's admin identity when the environment names no
    credentials and that identity is for NATS_URL's server; returns the file used, if any."""
    if any(environ.get(name) for name in CREDENTIALS):
        return None
    path = admin_file(environ)
    if not _private(path):
        return None
    url = nats_auth.read_env(path).get("NATS_URL")
    if url is None or not _on_this_machine(url) or environ.get("NATS_URL", url) != url:
        return None
    environ[IDENTITY_FILE] = str(path.resolve())
    return path


def _private(path: Path) -> bool:
    """Written by `up` for this user: a file someone else could have planted or read (another
    owner, group or other permissions) is not trusted with the admin identity."""
    try:
        info = path.stat()
    except OSError:
        return False
    return (stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & 0o077)


def _on_this_machine(url: str) -> bool:
    """`up`'s NATS listens on loopback: a file naming any other server is not up's."""
    return all(urlsplit(u.strip()).hostname in LOOPBACK for u in url.split(","))
