"""Gathers the events JetStream pushes into batches for the writers.

A batch closes when it holds `size` events or its first event has waited `max_wait_s`. Closed
batches wait in a bounded queue: when the writers fall behind, adding blocks, nats-py stops
reading, and the consumer's max_ack_pending stops the server sending, so memory stays bounded.
Appending in a callback costs far less per event than nats-py's fetch(), which starts a task
for every message.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg


class Batcher:
    def __init__(self, size: int, max_wait_s: float, depth: int) -> None:
        self.batches: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=depth)
        self._size = size
        self._max_wait_s = max_wait_s
        self._buffer: list[Msg] = []
        self._opened_at = 0.0

    async def add(self, msg: Msg) -> None:
        if not self._buffer:
            self._opened_at = time.monotonic()
        self._buffer.append(msg)
        if len(self._buffer) >= self._size:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            await self.batches.put(batch)

    async def close_late_batches(self) -> None:
        """Runs for the service's life: a quiet stream's last events do not wait for company."""
        while True:
            await asyncio.sleep(self._max_wait_s / 2)
            if self._buffer and time.monotonic() - self._opened_at >= self._max_wait_s:
                await self.flush()
