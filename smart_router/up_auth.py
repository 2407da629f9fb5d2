"""Where `up` keeps the credentials of its embedded NATS, and how the command line finds them.

`up` writes nats.conf and one <identity>.env per identity into <data dir>/nats-auth/
(shared/nats_auth.py). A command that talks to NATS, given no NATS credentials, connects as
that folder's admin identity: the data dir is ROUTER_DATA_DIR, else `.data` (up's default), and
the file is used only when NATS_URL is unset or names the server the file was written for, so
up's admin password never goes to another server.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from shared import nats_auth

DATA_DIR_VARIABLE = "ROUTER_DATA_DIR"
DEFAULT_DATA_DIR = Path(".data")
FOLDER = "nats-auth"
IDENTITY_FILE = "NATS_IDENTITY_FILE"
# Any of these set means the environment says who to be.
CREDENTIALS = (IDENTITY_FILE, "NATS_USER", "NATS_TOKEN", "NATS_NKEY_SEED", "NATS_CREDS")


def folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def admin_file(environ: MutableMapping[str, str]) -> Path:
    data_dir = Path(environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR)
    return folder(data_dir) / f"{nats_auth.ADMIN}.env"


def use_admin_identity(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point NATS_IDENTITY_FILE at up's admin identity when the environment names no
    credentials and that identity is for NATS_URL's server; returns the file used, if any."""
    if any(environ.get(name) for name in CREDENTIALS):
        return None
    path = admin_file(environ)
    if not path.is_file():
        return None
    url = nats_auth.read_env(path).get("NATS_URL")
    if environ.get("NATS_URL", url) != url:
        return None
    environ[IDENTITY_FILE] = str(path.resolve())
    return path
