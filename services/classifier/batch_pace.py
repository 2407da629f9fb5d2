"""Batch jobs are taken into the pipeline at most `pipeline.max_batch_in_flight` at a time per
classifier: past that, a job waits in its own stream (its message kept alive) until one taken
before it ends, and its deadline starts when it is taken.

Without it the classifier moved a whole job into the pipeline stream far ahead of the
dispatchers: the deadlines of the job's tail ran out there before any call was made (26 lines of
40 ended `timeout` with no attempt, in a review), and a large job could fill the pipeline stream
that online requests need too.

A job taken counts until the stage that answers it says so on this classifier's batch done
subject, or at most SLOT_HELD_AT_MOST_S (or its deadline, if sooner): a notice lost (a
reconnect) must not hold the slot for the hour of a batch deadline, and the waiting jobs hold
this copy's handlers, which the jobs consumer shares with the other copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import subjects
from shared.health import Counters
from shared.messages import new_request_id

from .admission import Admission

RECHECK_S = 1.0  # a waiting job looks again this often: a slot may free at its deadline
# A request ends within minutes (its tiers' provider timeouts and retries); one that runs longer
# is let out of the count, at worst a few more in the pipeline than the bound.
SLOT_HELD_AT_MOST_S = 300.0


class BatchPace:
    """`counters.batch_stalled_since` goes in the heartbeat: jobs waiting while no request of
    the pipeline ends for long (lost done notices, stuck stages) turn health red."""

    def __init__(self, limit: int, counters: Counters | None = None) -> None:
        self._taken = Admission(limit)  # limit 0: no bound
        self._counters = counters or Counters()
        self._waiting = 0
        self._freed = asyncio.Event()
        self._counting = asyncio.Event()
        self.done_subject = subjects.done(new_request_id())

    async def open(self, nc: Client) -> None:
        await nc.subscribe(self.done_subject, cb=self._count_out)
        self._counting.set()

    async def take(self, trace_id: str, lifetime_s: float) -> bool:
        """Once a slot is free: the job counts from now, for `lifetime_s` at most (its
        deadline, counted from when it is taken, not from when it began to wait); False when
        it was counted already (a redelivery of a job in the pipeline), which takes nothing.
        None is taken before the done subject is listened to (jobs are delivered from the
        start), or its notice could be missed."""
        await self._counting.wait()
        if self._taken.holds(trace_id):
            return False
        lifetime_s = min(lifetime_s, SLOT_HELD_AT_MOST_S)
        if self._taken.admit(trace_id, time.time() + lifetime_s) is None:
            return True
        self._waiting += 1
        if self._counters.batch_stalled_since is None:
            self._counters.batch_stalled_since = time.time()
        try:
            while self._taken.admit(trace_id, time.time() + lifetime_s) is not None:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), RECHECK_S)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._counters.batch_stalled_since = None
        return True

    def done(self, trace_id: str) -> None:
        if self._taken.holds(trace_id) and self._waiting:
            self._counters.batch_stalled_since = time.time()  # progress: the wait starts anew
        self._taken.done(trace_id)
        self._freed.set()

    @property
    def in_flight(self) -> int:
        return self._taken.in_flight

    async def _count_out(self, msg: Msg) -> None:
        self.done(msg.data.decode())
