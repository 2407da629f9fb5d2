"""The gateway's only way out: requests on the router's public NATS subjects. It never calls a
provider and keeps no state, so any number of copies can run side by side."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from shared import health, subjects
from shared.errors import ErrorCode, RouterError

# The escalator answers a request that ran out of time itself, at its deadline; the gateway
# waits this much longer before it gives up on hearing anything at all.
REPLY_GRACE_S = 5.0
STATS_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 2.0  # each of the heartbeats' reads; past it, /v1/health says so (503)


class Unavailable(Exception):
    """Nothing answers on a router subject: the router is not running, or not all of it."""


class RouterStream:
    """A streamed request (README, "Streaming"): its pieces, then its reply, on an inbox of its
    own. `leave` tells the dispatcher the caller has gone, which stops the provider call."""

    def __init__(self, nc: Client, inbox: str, timeout_s: float) -> None:
        self._nc, self._inbox, self._timeout_s = nc, inbox, timeout_s
        self._sub: Any = None

    async def open(self, body: bytes, tenant: str | None) -> None:
        try:
            self._sub = await self._nc.subscribe(self._inbox)
            await self._nc.publish(subjects.CHAT, body, reply=self._inbox,
                                   headers=_named(tenant))
        except BaseException as exc:
            if self._sub is not None:
                with contextlib.suppress(Exception):  # gone with its connection
                    await self._sub.unsubscribe()
            if isinstance(exc, nats.errors.Error):
                raise Unavailable(f"NATS refused the request: {exc}") from None
            raise

    async def next(self) -> dict[str, Any]:
        """The next piece (`delta`) or the reply; RouterError on a silence past the timeout."""
        try:
            msg = await self._sub.next_msg(timeout=self._timeout_s)
        except nats.errors.TimeoutError:
            raise RouterError(ErrorCode.TIMEOUT, f"no word from the router within "
                              f"{self._timeout_s:g} s") from None
        if not msg.data and (msg.headers or {}).get("Status") == "503":
            raise Unavailable(f"no service answers on {subjects.CHAT}: is the router running?")
        return json.loads(msg.data)

    def close(self, *, left: bool) -> None:
        """Stop listening (and, when the caller left early, say so), in a task of its own: this
        runs while the HTTP response is being cancelled."""
        task = asyncio.get_running_loop().create_task(self._close(left))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close(self, left: bool) -> None:
        if left:
            await self._nc.publish(subjects.cancel(self._inbox), b"")
        if self._sub is not None:
            await self._sub.unsubscribe()


_closing: set[asyncio.Task] = set()


def _named(tenant: str | None) -> dict[str, str] | None:
    return {subjects.TENANT_HEADER: tenant} if tenant is not None else None


class RouterLink:
    def __init__(self, connection: Callable[[], Client], request_timeout_s: float) -> None:
        self._connection = connection
        self._chat_timeout_s = request_timeout_s + REPLY_GRACE_S

    async def chat(self, body: bytes, tenant: str | None) -> tuple[dict[str, Any], bytes]:
        """The router's reply to a request body (as on router.v1.chat), parsed and raw.
        `tenant`, the API key's, is named in a header for the classifier's admission count."""
        raw = await self._request(subjects.CHAT, body, self._chat_timeout_s, _named(tenant))
        return json.loads(raw), raw

    async def stream(self, body: bytes, tenant: str | None) -> RouterStream:
        nc = self._connection()
        stream = RouterStream(nc, nc.new_inbox(), self._chat_timeout_s)
        await stream.open(body, tenant)
        return stream

    async def stats(self, days: int) -> tuple[dict[str, Any], bytes]:
        raw = await self._request(subjects.STATS, json.dumps({"days": days}).encode(),
                                  STATS_TIMEOUT_S)
        return json.loads(raw), raw

    async def feedback(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        """The ledger's answer to a verdict (as on router.v1.feedback), parsed and raw."""
        raw = await self._request(subjects.FEEDBACK, body, STATS_TIMEOUT_S)
        return json.loads(raw), raw

    async def health(self) -> dict[str, Any]:
        try:
            return await health.snapshot(self._connection().jetstream(timeout=HEALTH_TIMEOUT_S))
        except (nats.errors.Error, TimeoutError) as exc:
            return health.unreadable(f"{type(exc).__name__}: {exc}")

    async def _request(self, subject: str, body: bytes, timeout: float,
                       headers: dict[str, str] | None = None) -> bytes:
        try:
            msg = await self._connection().request(subject, body, timeout=timeout,
                                                   headers=headers)
        except nats.errors.NoRespondersError:
            raise Unavailable(f"no service answers on {subject}: is the router running?") from None
        except nats.errors.TimeoutError:
            raise RouterError(ErrorCode.TIMEOUT,
                              f"no reply from the router within {timeout:g} s") from None
        except nats.errors.Error as exc:  # not connected, or a message over max_payload
            raise Unavailable(f"NATS refused the request: {exc}") from None
        return msg.data
