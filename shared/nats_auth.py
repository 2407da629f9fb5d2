"""Least privilege on NATS: who may publish and subscribe to what, as a nats-server config.

Identities (users of one account, ROUTER, which holds the JetStream streams and buckets):
- each *service* may use only its own subjects, consumers and buckets, and its own inboxes;
- *setup* declares the streams, consumers and buckets (shared/topology.py) before the services
  start: no service may create, change or delete a stream;
- a *client* (one per tenant) may ask on router.v1.chat.<tenant>, submit on
  router.v1.jobs.<tenant>, give feedback on router.v1.feedback.<tenant>, ask
  router.v1.health and read router.v1.results.<tenant>.>; its
  replies come to _INBOX.<tenant>.>, which only it may read. The tenant is the one its
  subjects name: the classifier refuses a body naming another (services/classifier/worker.py);
- *admin* (the operator's CLI, `up`) asks router.v1.stats (every tenant's figures), asks,
  submits and gives feedback on the shared subjects for any tenant, and reads every result
  and heartbeat.

`write_identities` keeps, in one private folder, the server's nats.conf and one <identity>.env
per identity (its NATS_* settings, read through NATS_IDENTITY_FILE): `up` runs its embedded
server and its children with them. Compose's one-shot `nats-auth` service (`python -m
shared.nats_auth --write DIR --folder-per-identity`) writes each of them into a sub-folder of
its own in a volume (server/nats.conf, <identity>/<identity>.env), and each container mounts
only its own sub-folder (a volume subpath): no container can read another identity's password.
`python -m shared.nats_auth` alone prints the config with each password taken from an
environment variable.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shared import subjects

ACCOUNT = "ROUTER"
SETUP, ADMIN = "setup", "admin"
CLIENT_PREFIX = "client-"
JS_API = "$JS.API"
DEMO_TENANT = "default"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass
class Grants:
    """What an identity may do, built up one capability at a time."""

    name: str
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subscribe.append(f"{inbox_prefix(self.name)}.>")  # its own replies

    def kv(self, bucket: str, *, keys: str = ">", write: bool = True) -> Grants:
        stream = f"KV_{bucket}"
        if write:
            self.publish.append(f"$KV.{bucket}.{keys}")
        self.publish += [f"{JS_API}.STREAM.INFO.{stream}", f"{JS_API}.DIRECT.GET.{stream}.>",
                         f"{JS_API}.STREAM.MSG.GET.{stream}"]
        return self

    def watch(self, stream: str) -> Grants:
        """Ordered consumers on a stream (results)."""
        create = f"{JS_API}.CONSUMER.CREATE.{stream}"
        self.publish += [create, f"{create}.>", f"{JS_API}.CONSUMER.INFO.{stream}.*",
                         f"$JS.FC.{stream}.>"]
        return self

    def consumer(self, stream: str, name: str) -> Grants:
        """A durable push consumer of the topology: bind to it, take its deliveries, ack."""
        self.publish += [f"{JS_API}.CONSUMER.INFO.{stream}.{name}", f"$JS.ACK.{stream}.{name}.>"]
        self.subscribe.append(f"_router.deliver.{name}")
        return self

    def service(self) -> Grants:
        """What every service does: heartbeat under its own name, answer router.v1.health
        (which reads every heartbeat), answer callers and the classifier's done subjects."""
        self.kv(subjects.HEALTH_BUCKET, keys=f"{self.name}.>")
        self.subscribe.append(subjects.HEALTH)
        self.publish += ["_INBOX.>", f"{subjects.DONE_PREFIX}.*"]
        return self

    def permissions(self) -> Permissions:
        return Permissions(tuple(dict.fromkeys(self.publish)), tuple(dict.fromkeys(self.subscribe)))


def service_grants() -> dict[str, Grants]:
    requests, results = subjects.REQUESTS_BUCKET, f"{subjects.RESULTS_PREFIX}.>"
    ending = [results, subjects.REQUEST_EVENTS, subjects.DEAD_LETTER_EVENTS]  # outcomes.fail
    classifier = Grants("classifier").service().consumer(subjects.JOBS_STREAM, "classifier")
    classifier.kv(requests)
    classifier.publish += [subjects.DISPATCH, *ending]
    classifier.subscribe += [*subjects.with_tenants(subjects.CHAT), f"{subjects.DONE_PREFIX}.*"]
    dispatcher = Grants("dispatcher").service().consumer(subjects.PIPELINE_STREAM, "dispatcher")
    dispatcher.kv(requests).kv(subjects.HOPS_BUCKET)
    dispatcher.publish += [subjects.SCORE, subjects.ATTEMPT_EVENTS, *ending]
    dispatcher.subscribe.append(subjects.CANCELS)  # a streaming caller that left
    escalator = Grants("escalator").service().consumer(subjects.PIPELINE_STREAM, "escalator")
    escalator.kv(requests).kv(subjects.HOPS_BUCKET, keys="*.*.*")  # its paid checks, by answer
    escalator.publish += [subjects.DISPATCH, subjects.ATTEMPT_EVENTS, *ending]
    ledger = (Grants("ledger").service().consumer(subjects.EVENTS_STREAM, "ledger")
              .consumer(subjects.ADVISORIES_STREAM, "exhausted").kv(requests))
    ledger.publish += [*ending]
    for stream in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM):  # crash-looped messages
        ledger.publish += [f"{JS_API}.STREAM.MSG.GET.{stream}",
                           f"{JS_API}.STREAM.MSG.DELETE.{stream}"]
    for stream in (subjects.JOBS_STREAM, subjects.PIPELINE_STREAM, subjects.EVENTS_STREAM):
        ledger.publish.append(f"{JS_API}.STREAM.INFO.{stream}")  # how full, for health
    ledger.subscribe += [subjects.STATS, *subjects.with_tenants(subjects.FEEDBACK)]
    # The HTTP gateway authenticates its callers itself: it asks for them on the shared
    # subjects, naming their tenant in the body. It reads no results.
    gateway = Grants("gateway").service()
    gateway.publish += [subjects.CHAT, subjects.JOBS, subjects.STATS, subjects.FEEDBACK,
                        subjects.CANCELS]
    return {g.name: g for g in (classifier, dispatcher, escalator, ledger, gateway)}


def client_grants(tenant: str) -> Grants:
    token = checked_tenant(tenant)
    grants = Grants(client_user(tenant)).watch(subjects.RESULTS_STREAM)
    # Its ordered consumers may filter on its own results only (the filter is in the subject).
    grants.publish = [p for p in grants.publish if ".CONSUMER.CREATE." not in p] + [
        f"{JS_API}.CONSUMER.CREATE.{subjects.RESULTS_STREAM}.*.{subjects.RESULTS_PREFIX}.{token}.>",
        subjects.chat(tenant), subjects.jobs(tenant), subjects.feedback(tenant),
        subjects.HEALTH,
    ]
    return grants


def admin_grants() -> Grants:
    grants = Grants(ADMIN).watch(subjects.RESULTS_STREAM)
    grants.kv(subjects.HEALTH_BUCKET, write=False)
    grants.publish += [subjects.STATS, subjects.HEALTH, subjects.CHAT, subjects.JOBS,
                       subjects.FEEDBACK,
                       f"{JS_API}.STREAM.INFO.*", f"{JS_API}.CONSUMER.INFO.*.*"]
    return grants


def setup_grants() -> Grants:
    grants = Grants(SETUP)
    grants.publish.append(f"{JS_API}.>")
    return grants


def client_user(tenant: str) -> str:
    return f"{CLIENT_PREFIX}{checked_tenant(tenant)}"


def checked_tenant(tenant: str) -> str:
    """A tenant a credential names (a client identity, an HTTP API key) must be a subject token
    as it is (never hashed): the classifier takes the token from the subject as the tenant's
    name, and the ledger books a key's requests to the same name."""
    if not subjects.TENANT_TOKEN_RE.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r}: use 1-64 letters, digits, '_' or '-', starting "
                         "with a letter or digit")
    return tenant


def identities(tenants: list[str]) -> dict[str, Permissions]:
    grants = [*service_grants().values(), setup_grants(), admin_grants(),
              *(client_grants(t) for t in tenants)]
    return {g.name: g.permissions() for g in grants}


def inbox_prefix(user: str) -> str:
    """The inbox prefix an identity must connect with (NATS_INBOX_PREFIX): a client's is its
    tenant's; the others start with '_', which no tenant token does."""
    if user.startswith(CLIENT_PREFIX):
        return subjects.inbox_prefix(user.removeprefix(CLIENT_PREFIX))
    return f"_INBOX._{user}"


def identity_env(user: str, password: str) -> dict[str, str]:
    """The environment a process runs with as `user` (see Settings): its credentials, its
    inbox prefix, its tenant for a client; a service leaves the topology to `setup`."""
    env = {"NATS_USER": user, "NATS_PASSWORD": password,
           "NATS_INBOX_PREFIX": inbox_prefix(user)}
    if user.startswith(CLIENT_PREFIX):
        env["ROUTER_TENANT"] = user.removeprefix(CLIENT_PREFIX)
    elif user not in (SETUP, ADMIN):
        env["NATS_DECLARE"] = "false"
    return env


def new_passwords(tenants: list[str]) -> dict[str, str]:
    return {user: secrets.token_urlsafe(24) for user in identities(tenants)}


def server_config(passwords: dict[str, str], tenants: list[str]) -> str:
    """The nats-server configuration: account ROUTER with JetStream, one user per identity.
    A password is written as given: a literal, or `$NAME` for an environment variable."""
    users = []
    for user, permissions in identities(tenants).items():
        secret = passwords[user]
        password = secret if secret.startswith("$") else json.dumps(secret)
        users.append(
            f"      {{user: {json.dumps(user)}, password: {password}, permissions: {{\n"
            f"        publish: {{allow: {_list(permissions.publish)}}}\n"
            f"        subscribe: {{allow: {_list(permissions.subscribe)}}}\n"
            f"      }}}}"
        )
    return (
        "# Smart Router: least-privilege identities (generated by shared/nats_auth.py).\n"
        "accounts {\n"
        f"  {ACCOUNT} {{\n"
        "    jetstream: enabled\n"
        "    users: [\n" + "\n".join(users) + "\n    ]\n"
        "  }\n"
        "}\n"
    )


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def password_variable(user: str) -> str:
    """The environment variable the printed config reads a user's password from."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def with_demo(tenants: list[str]) -> list[str]:
    """The tenants that get a client identity: the demo tenant `default`, then those named."""
    return list(dict.fromkeys([DEMO_TENANT, *(checked_tenant(t) for t in tenants)]))


def deploy_config(tenants: list[str]) -> str:
    """The printed config: the shipped identities, a client per tenant, passwords from the
    environment."""
    return server_config({u: f"${password_variable(u)}" for u in identities(tenants)}, tenants)


SERVER_FOLDER = "server"  # no identity has this name: a client's starts with CLIENT_PREFIX


def config_file(folder: Path, *, apart: bool = False) -> Path:
    """Where write_identities puts nats.conf: `apart`, in a sub-folder of its own."""
    return folder / SERVER_FOLDER / "nats.conf" if apart else folder / "nats.conf"


def identity_file(folder: Path, user: str, *, apart: bool = False) -> Path:
    """Where write_identities puts a user's <identity>.env: `apart`, in a sub-folder named
    after it, which a container can mount alone."""
    return folder / user / f"{user}.env" if apart else folder / f"{user}.env"


def write_identities(folder: Path, tenants: list[str], url: str | None = None, *,
                     apart: bool = False) -> dict[str, Path]:
    """nats.conf and one <identity>.env per identity under `folder` (folders 0700, files
    0600), each in a sub-folder of its own when `apart`; the env files name `url` when given.
    A password already in its file is kept, so a restart or a new version changes no
    credential; a missing one is generated. Switching to `apart` keeps the passwords of the
    files at the top and then removes those, so that only the server's and each identity's
    sub-folder hold a secret. Returns each identity's file."""
    _private_folder(folder)
    passwords, files = {}, {}
    for user in identities(tenants):
        files[user] = identity_file(folder, user, apart=apart)
        earlier = dict.fromkeys((files[user], identity_file(folder, user)))
        kept = (read_env(f).get("NATS_PASSWORD") for f in earlier if f.exists())
        passwords[user] = next(filter(None, kept), None) or secrets.token_urlsafe(24)
        env = ({"NATS_URL": url} if url else {}) | identity_env(user, passwords[user])
        _private_folder(files[user].parent)
        write_private(files[user], "".join(f"{k}={v}\n" for k, v in env.items()))
    config = config_file(folder, apart=apart)
    _private_folder(config.parent)
    write_private(config, server_config(passwords, tenants))
    if apart:
        for flat in [config_file(folder), *(identity_file(folder, u) for u in files)]:
            flat.unlink(missing_ok=True)
    return files


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)


def read_env(path: Path) -> dict[str, str]:
    """An identity file's variables (KEY=value lines, as write_identities writes them)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def write_private(path: Path, text: str) -> None:
    """Readable by its owner only from the start, and replaced whole (a reader never sees half)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.nats_auth",
        description="Print the nats-server config (passwords from NATS_PASSWORD_* variables), "
        "or write the config and each identity's credentials into a folder.")
    parser.add_argument("--write", metavar="DIR", type=Path,
                        help="write DIR/nats.conf and DIR/<identity>.env (passwords kept)")
    parser.add_argument("--folder-per-identity", action="store_true",
                        help="with --write: DIR/server/nats.conf and DIR/<identity>/"
                        "<identity>.env instead, one sub-folder for each container to mount")
    parser.add_argument("--tenant", metavar="NAME", action="append", default=[],
                        help="a client identity (client-NAME) for this tenant too, besides "
                        f"'{DEMO_TENANT}'; repeat for more")
    args = parser.parse_args(argv)
    try:
        tenants = with_demo(args.tenant)
    except ValueError as exc:
        parser.error(str(exc))
    if args.write is None:
        if args.folder_per_identity:
            parser.error("--folder-per-identity goes with --write")
        sys.stdout.write(deploy_config(tenants))
        return
    files = write_identities(args.write, tenants, apart=args.folder_per_identity)
    print(f"wrote {config_file(args.write, apart=args.folder_per_identity)} and {len(files)} "
          "identities", file=sys.stderr)


if __name__ == "__main__":
    main()
