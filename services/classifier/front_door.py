"""The online front door: router.v1.chat on plain nats-py subscriptions, no framework hop, so
admission costs far less than the work it refuses and a burst is answered at once. A refusal
(`overloaded`) is answered in the callback; an admitted request becomes a task of its own.

Refusals come first on the one event loop: admitted requests start once the messages already
delivered are handled, and the refusals' ledger rows wait for a lull, so a burst's refusals are
not queued behind the work of the requests it admitted (each a few hundred microseconds of the
loop) or behind their own rows' storage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Coroutine
from typing import Any, NamedTuple

import structlog
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import outcomes, runtime, subjects
from shared.config import RouterConfig
from shared.errors import ErrorCode, RouterError
from shared.messages import ErrorBody, ErrorReply, Origin, RequestEvent, new_request_id

from .admission import Admission, Refused
from .intake import Intake

log = structlog.get_logger(__name__)

# A body is read for its ids and tenant up to this size: about 44 us, what hashing it for its
# row costs anyway; past it a refusal would cost what it saves (1.2 ms a MiB).
SALVAGE_MAX_BYTES = 65536
REFUSAL_ROWS_HELD = 100_000  # past this a refusal waits for room: no row is dropped
REFUSAL_BATCH = 4096  # rows published together, their receipts awaited together
RECORD_WAIT_S = 10.0
LULL_S = 0.1  # no refusal for this long: the burst is answered, deferred work may go on
RECORD_DEFER_MAX_S = 1.0  # under a steady overload the rows are stored at least this often
START_DEFER_MAX_S = 0.2  # and admitted requests start at least this often
CROWD = 16  # delivered messages waiting, more than the free slots: a burst is arriving
SUSPECT = 8  # requests admitted in one read: a glance at the next before starting them
GLANCE_S = 0.005


NOTHING = outcomes.Salvaged()


class Refusal(NamedTuple):
    """What a refusal's ledger row needs, noted in a few microseconds; the row is made later."""

    trace_id: str
    request_id: str
    origin: Origin
    prompt: tuple[str, int]
    received_at: float
    finished_at: float
    tenant: str | None

    def row(self) -> RequestEvent:
        return outcomes.rejection_event(
            trace_id=self.trace_id, request_id=self.request_id, origin=self.origin,
            prompt=self.prompt, received_at=self.received_at, finished_at=self.finished_at,
            tenant=self.tenant, error_code=ErrorCode.OVERLOADED)


class FrontDoor:
    """Admits online requests to the intake, or refuses them with `overloaded`."""

    def __init__(self, broker: NatsBroker, cfg: RouterConfig, intake: Intake) -> None:
        self.broker, self.cfg, self.intake = broker, cfg, intake
        self.admission = Admission(cfg.pipeline.max_online_in_flight,
                                   cfg.pipeline.max_online_in_flight_per_tenant)
        self.done_subject = subjects.done(new_request_id())
        self.chat_subscriptions: list[Subscription] = []
        self.chats: set[asyncio.Task] = set()  # requests in hand
        self.admitted: list[tuple[bytes, Origin, str, float]] = []  # not yet started
        self.burst_seen = 0.0  # time.monotonic() of a refusal, or of a crowd of messages
        self.has_admitted = asyncio.Event()
        self._starter: asyncio.Task | None = None
        # Refusals' ledger rows, published in the background: under a burst, a storage receipt
        # awaited per refusal would put every later refusal behind the earlier ones' rows.
        self.refusal_rows: asyncio.Queue[Refusal] = asyncio.Queue(REFUSAL_ROWS_HELD)
        self._recorder: asyncio.Task | None = None

    async def open(self) -> None:
        nc = self.broker.connection
        self._recorder = asyncio.create_task(self._record_refusals(), name="refusal_recorder")
        self._starter = asyncio.create_task(self._start_admitted(), name="admitted_starter")
        for task in (self._recorder, self._starter):
            task.add_done_callback(_exit_if_failed)
        await nc.subscribe(self.done_subject, cb=self._count_out)
        self.chat_subscriptions = await runtime.subscribe_with_tenants(
            nc, subjects.CHAT, "classifier", self.on_chat)

    async def close(self) -> None:
        """Take no more requests, and let the ones in hand reach the dispatcher."""
        await runtime.drain(self.chat_subscriptions)  # the requests already queued are served
        self._start_all()
        if self._starter is not None:
            self._starter.cancel()
        if self.chats:
            await asyncio.wait(self.chats, timeout=self.cfg.limits.provider_timeout_s)
        if self._recorder is not None:
            with contextlib.suppress(TimeoutError):  # the refusals' rows still in hand
                await asyncio.wait_for(self.refusal_rows.join(), RECORD_WAIT_S)
            self._recorder.cancel()

    async def _record_refusals(self) -> None:
        """Publish the refusals' rows, a batch at a time, their receipts awaited together: a
        few in a lull between refusals (or at least every RECORD_DEFER_MAX_S), a backlog of a
        batch or more at once, so a steady overload never fills the queue."""
        while True:
            batch = [await self.refusal_rows.get()]
            if self.refusal_rows.qsize() < REFUSAL_BATCH:
                await self._after_burst(RECORD_DEFER_MAX_S, LULL_S)
            while len(batch) < REFUSAL_BATCH and not self.refusal_rows.empty():
                batch.append(self.refusal_rows.get_nowait())
            results = await asyncio.gather(
                *(outcomes.publish_event(self.broker, refusal.row()) for refusal in batch),
                return_exceptions=True)
            for row, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # NATS away for longer than the receipt
                    log.error("chat.refusal_not_recorded", trace_id=row.trace_id,
                              reason=repr(result))
                self.refusal_rows.task_done()

    async def _count_out(self, msg: Msg) -> None:
        self.admission.done(msg.data.decode())

    async def on_chat(self, msg: Msg) -> None:
        """Runs in nats-py's delivery loop, so it never waits on work: a refusal is answered here
        (one publish), its row is queued for the recorder (a wait only when REFUSAL_ROWS_HELD
        rows are still unrecorded); admitted requests start once no delivered message waits."""
        if self.admission.limit:
            waiting = self._waiting()
            if waiting >= CROWD and self.admission.in_flight + waiting >= self.admission.limit:
                self.burst_seen = time.monotonic()  # refusals are coming: let them go first
        await self._admit_or_refuse(msg)
        if self.admitted:
            self.has_admitted.set()

    async def _start_admitted(self) -> None:
        """Start the admitted requests: once the delivered messages are handled (this task runs
        when the delivery loop yields) and, during a burst, in a lull between refusals (or after
        START_DEFER_MAX_S), since their classification would take the CPU the refusals need.
        A burst shows as a refusal, or before the first one as a crowd of delivered messages."""
        while True:
            await self.has_admitted.wait()
            if self.admission.limit:  # nothing is ever refused without one
                if len(self.admitted) >= SUSPECT:  # many at once: a burst's first read, maybe
                    await asyncio.sleep(GLANCE_S)  # its next read would show the crowd
                await self._after_burst(START_DEFER_MAX_S, LULL_S / 4)
            self._start_all()

    async def _after_burst(self, at_most_s: float, step_s: float) -> None:
        """Until LULL_S without a sign of a burst, or at most `at_most_s`."""
        until = time.monotonic() + at_most_s
        while time.monotonic() - self.burst_seen < LULL_S and time.monotonic() < until:
            await asyncio.sleep(step_s)

    def _start_all(self) -> None:
        self.has_admitted.clear()
        for admitted in self.admitted:
            self._spawn(self._serve_chat(*admitted))
        self.admitted.clear()

    async def _admit_or_refuse(self, msg: Msg) -> None:
        origin = Origin(kind="online", tenant=subjects.tenant_of(msg.subject),
                        reply_to=msg.reply or None,
                        correlation_id=(msg.headers or {}).get("correlation_id"))
        trace_id, received_at = new_request_id(), time.time()
        named = (msg.headers or {}).get(subjects.TENANT_HEADER)  # by the gateway (or admin)
        counted_as = origin.tenant or (subjects.tenant_token(named) if named else None)
        refused = self.admission.admit(
            trace_id, received_at + self.cfg.limits.request_timeout_s, counted_as)
        if refused is None:
            self.admitted.append((msg.data, origin, trace_id, received_at))
            return
        if refused is Refused.FULL or self._waiting() >= CROWD:
            # A burst: the admitted wait for a lull. One tenant past its share, alone, is no
            # burst: holding the others' requests back for it would give its share away.
            self.burst_seen = time.monotonic()
        found = outcomes.salvage(msg.data) if len(msg.data) <= SALVAGE_MAX_BYTES else NOTHING
        request_id = found.request_id or trace_id
        if origin.reply_to:
            refusal = ErrorReply(request_id=request_id, error=ErrorBody(
                code=ErrorCode.OVERLOADED,
                message=self._refusal_message(refused, counted_as),
                retry_after_s=self.cfg.pipeline.overloaded_retry_after_s))
            await outcomes.send_reply(self.broker, origin, refusal.model_dump_json().encode(),
                                      trace_id)
        await self.refusal_rows.put(Refusal(  # its row is made by the recorder, after the burst
            trace_id, request_id, origin, outcomes.body_fingerprint(msg.data), received_at,
            time.time(), origin.tenant or named or found.tenant))

    def _refusal_message(self, refused: Refused, tenant: str | None) -> str:
        admission = self.admission
        if refused is Refused.FULL or tenant is None:  # a share refuses named tenants only
            return (f"the router holds {admission.limit} online requests already; "
                    "try again shortly")
        if refused is Refused.TENANT_FULL:
            return (f"the router holds {admission.per_tenant} online requests of this tenant "
                    "already; try again shortly")
        return (f"the router is nearly full and holds {admission.held_by(tenant)} online requests "
                f"of this tenant, at or above its fair share of {admission.fair_share(tenant)}; "
                "try again shortly")

    def _waiting(self) -> int:
        """Chat messages delivered and not yet read."""
        return sum(s.pending_msgs for s in self.chat_subscriptions)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.chats.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self.chats.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat.task_failed", reason=repr(task.exception()))

    async def _serve_chat(self, body: bytes, origin: Origin, trace_id: str,
                          received_at: float) -> None:
        handed_on = False
        try:
            handed_on = await self.intake.hand_on(
                body, origin.model_copy(update={"done_subject": self.done_subject}), trace_id)
        except outcomes.NotRecorded as exc:  # answered already: a second reply would confuse
            log.error("chat.not_recorded", trace_id=trace_id, reason=str(exc))
        except Exception as exc:  # a core message has no redelivery: answer now, whatever
            log.exception("chat.failed", trace_id=trace_id)
            await self.intake.reject(body, origin, trace_id, received_at, RouterError(
                ErrorCode.INTERNAL, f"the router failed: {type(exc).__name__}"))
        finally:
            if not handed_on:
                self.admission.done(trace_id)


def _exit_if_failed(task: asyncio.Task) -> None:
    """Without its refusal recorder or its starter the front door would stall (the recorder's
    queue full, admitted requests never started) with the process still beating: exit instead,
    so the supervisor starts a fresh one."""
    if task.cancelled():
        return
    log.critical("chat.front_door_task_failed", task=task.get_name(), reason=repr(task.exception()),
                 exit_status=1)
    os._exit(1)

