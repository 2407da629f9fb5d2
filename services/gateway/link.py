"""The gateway's only way out: requests on the router's public NATS subjects. It never calls a
provider and keeps no state, so any number of copies can run side by side."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from shared import health, subjects
from shared.errors import ErrorCode, RouterError

# The escalator answers a request that ran out of time itself, at its deadline; the gateway
# waits this much longer before it gives up on hearing anything at all.
REPLY_GRACE_S = 5.0
STATS_TIMEOUT_S = 10.0


class Unavailable(Exception):
    """Nothing answers on a router subject: the router is not running, or not all of it."""


class RouterLink:
    def __init__(self, connection: Callable[[], Client],
                 health_bucket: Callable[[], Awaitable[KeyValue]],
                 request_timeout_s: float) -> None:
        self._connection = connection
        self._health_bucket = health_bucket
        self._chat_timeout_s = request_timeout_s + REPLY_GRACE_S

    async def chat(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        """The router's reply to a request body (as on router.v1.chat), parsed and raw."""
        raw = await self._request(subjects.CHAT, body, self._chat_timeout_s)
        return json.loads(raw), raw

    async def stats(self, days: int) -> tuple[dict[str, Any], bytes]:
        raw = await self._request(subjects.STATS, json.dumps({"days": days}).encode(),
                                  STATS_TIMEOUT_S)
        return json.loads(raw), raw

    async def health(self) -> dict[str, Any]:
        return await health.snapshot(await self._health_bucket())

    async def _request(self, subject: str, body: bytes, timeout: float) -> bytes:
        try:
            msg = await self._connection().request(subject, body, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise Unavailable(f"no service answers on {subject}: is the router running?") from None
        except nats.errors.TimeoutError:
            raise RouterError(ErrorCode.TIMEOUT,
                              f"no reply from the router within {timeout:g} s") from None
        return msg.data
