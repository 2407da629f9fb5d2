"""Gathers the events JetStream pushes into batches for the writers.

A batch closes when it holds `size` events or its first event has waited `max_wait_s`. Closed
batches wait in a queue for the writers. Adding never blocks: a blocked callback would leave the
next deliveries in nats-py's own buffer, where nothing tells JetStream they are in hand, so it
would send them again after the ack wait, and again, while the database is down. What is held
is bounded by the consumer's max_ack_pending instead, and every message held, waiting or being
written, is reported in progress until its writer acks it. Appending in a callback costs far
less per event than nats-py's fetch(), which starts a task for every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from nats.aio.msg import Msg

TICK_SLICE = 1_000  # progress reports sent between two turns of the event loop


class Batcher:
    def __init__(self, size: int, max_wait_s: float) -> None:
        self.batches: asyncio.Queue[list[Msg]] = asyncio.Queue()
        self._size = size
        self._max_wait_s = max_wait_s
        self._buffer: list[Msg] = []
        self._opened_at = 0.0
        self._held: dict[int, Msg] = {}  # every message added and not yet acked, by id()

    async def add(self, msg: Msg) -> None:
        self._held[id(msg)] = msg
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

    def settled(self, messages: list[Msg]) -> None:
        """Its writer acked them: no longer held."""
        for msg in messages:
            self._held.pop(id(msg), None)

    async def keep_held_alive(self, every_s: float, connected: Callable[[], bool]) -> None:
        """Runs for the service's life: tell JetStream every held message is being worked on.
        Not while disconnected: the reports would fill nats-py's reconnect buffer, which the
        writers' acks need. One at a time, letting others run every TICK_SLICE."""
        while True:
            await asyncio.sleep(every_s)
            if not connected():
                continue
            with contextlib.suppress(Exception):  # a lost tick only risks a harmless duplicate
                for n, msg in enumerate(list(self._held.values()), 1):
                    await msg.in_progress()
                    if n % TICK_SLICE == 0:
                        await asyncio.sleep(0)
