"""A streamed hop: the provider's pieces go to the caller's reply subject as they are made, except
the opening, which is held back and scored first. A weak opening (refusal, hedge, empty) stops
the provider call and goes to the escalator like any weak answer, so the caller never sees it;
once the opening is released the stream is the answer, and is never replaced.

What a streaming caller receives on its reply subject, in order: pieces `{"delta": "..."}`
(the first also names request_id, model, provider, tier, difficulty_tag and escalated), then
the ordinary reply (ChatReply or ErrorReply), whose `response` is the whole answer. A caller
that leaves publishes anything on `router.v1.cancel.<its reply subject>`; the provider call
stops, or is never made if the request has not reached a dispatcher yet (Cancels).

The first piece is released only once a mark of it is kept (hop_records): a hop redelivered
after its dispatcher died mid-stream must not stream the answer again from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable

from cachetools import TTLCache
from nats.aio.client import Client
from pydantic import BaseModel

from services.escalator.scoring import Scorer
from shared import payload
from shared.config import EscalationConfig, ModelRef, Tier
from shared.messages import Answer, Envelope
from shared.providers import Completion, well_formed

# A first sentence ends the opening early: a stop, question or exclamation mark followed by a
# space or a line end, or a line end (Latin and CJK punctuation).
SENTENCE_END = re.compile(r"[.!?](\s)|[\u3002\uff01\uff1f]|\n")
MIN_OPENING_CHARS = 12  # "Sure." alone says too little to judge
# Reply subjects of callers who left, kept at most: a flood of cancels evicts the oldest, and
# costs no more memory than this.
CANCELS_KEPT = 65_536


class StreamStopped(Exception):
    """The provider call was stopped before its end; its usage is not known (providers report
    it only at the end of a stream)."""

    def __init__(self, why: str, text: str = "", pieces: int = 0) -> None:
        super().__init__(why)
        self.why, self.text, self.pieces = why, text, pieces
        self.emulated = False  # set by the provider adapter the stream was stopped in

    def of(self, text: str, pieces: int) -> StreamStopped:
        self.text, self.pieces = text, pieces
        return self


class WeakOpening(StreamStopped):
    pass


class CallerGone(StreamStopped):
    pass


class DeadlinePassed(StreamStopped):
    pass


class Released(BaseModel):
    """A hop's first piece went to the caller, at ttft_ms, from call n of this model: what the
    ledger needs of that call should its dispatcher die before recording it."""

    ttft_ms: float
    n: int
    ref: ModelRef


def released_key(envelope: Envelope) -> str:
    """Where a hop's Released mark is kept (hop_records)."""
    return f"{envelope.trace_id}.{envelope.hop}.released"


class Cancels:
    """The reply subjects whose streaming caller left, heard by every dispatcher copy on one
    subscription from its start: a cancel sent while the request still waited (at the
    classifier, or in the pipeline) is remembered until the request's deadline could have
    passed, and its hop is never called."""

    def __init__(self, ttl_s: float, maxsize: int = CANCELS_KEPT) -> None:
        self._left: TTLCache[str, bool] = TTLCache(maxsize, ttl_s)
        self._watched: dict[str, list[asyncio.Event]] = {}

    def heard(self, reply_to: str) -> None:
        self._left[reply_to] = True
        for gone in self._watched.get(reply_to, ()):
            gone.set()

    def watch(self, reply_to: str) -> asyncio.Event:
        """An event set when that caller leaves, already set if it has."""
        gone = asyncio.Event()
        if reply_to in self._left:
            gone.set()
        self._watched.setdefault(reply_to, []).append(gone)
        return gone

    def unwatch(self, reply_to: str, gone: asyncio.Event) -> None:
        watchers = self._watched[reply_to]
        watchers.remove(gone)
        if not watchers:
            del self._watched[reply_to]


class Relay:
    """One streamed hop's pieces, from whichever model of the tier answers, to the caller.

    What the caller is sent is a prefix of the reply's `response`: the text well-formed (a
    surrogate pair split across two pieces is sent whole, with the second), and no more of it
    than limits.max_answer_bytes, where the whole answer is cut too (payload.bound_text).
    `keep_release` keeps the Released mark before the first piece goes."""

    def __init__(self, nc: Client, envelope: Envelope, tier: Tier, escalation: EscalationConfig,
                 scorer: Scorer, max_answer_bytes: int, cancels: Cancels,
                 keep_release: Callable[[Released], Awaitable[None]]) -> None:
        self._nc = nc
        self._cancels = cancels
        self._keep_release = keep_release
        self._max_answer_bytes = max_answer_bytes
        self._envelope = envelope
        self._tier = tier
        self._threshold = escalation.threshold
        self._opening_chars = escalation.stream_opening_chars
        self._scorer = scorer
        self._reply_to = envelope.origin.reply_to or ""
        self._ref: ModelRef | None = None
        self._pieces: list[str] = []
        self._sent_bytes = 0  # what the caller was sent of this model's answer, as JSON
        self._held = ""  # a high surrogate waiting for its pair
        self._full = False  # the answer's byte bound was reached: nothing more is sent
        self.ttft_ms: float | None = None

    @property
    def released(self) -> bool:
        return self.ttft_ms is not None

    @property
    def cancelled(self) -> bool:
        return self._gone.is_set()

    def begin(self, ref: ModelRef, n: int) -> None:
        """A new model's call, the request's n-th: nothing of it received or sent yet."""
        self._ref, self._n, self._pieces = ref, n, []
        self._sent_bytes, self._held, self._full = 0, "", False

    def received(self) -> StreamStopped:
        """What the current model streamed so far, for a call that failed part-way: billed like
        a stopped stream (completion_of), since the provider charges for what it sent."""
        return StreamStopped("the stream broke").of("".join(self._pieces), len(self._pieces))

    def __enter__(self) -> Relay:
        self._gone = self._cancels.watch(self._reply_to)
        return self

    def __exit__(self, *_: object) -> None:
        self._cancels.unwatch(self._reply_to, self._gone)

    async def run(self, call: Awaitable[Completion]) -> Completion:
        """The model's streamed call (after `begin`), stopped when the caller leaves
        (CallerGone) or the request's deadline passes (DeadlinePassed): the SDK's timeout only
        bounds each wait for the next piece."""
        task = asyncio.ensure_future(call)
        gone = asyncio.create_task(self._gone.wait())
        try:
            await asyncio.wait({task, gone}, timeout=max(self._envelope.seconds_left(), 0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            stop = CallerGone("the caller left") if self.cancelled else DeadlinePassed(
                "the request's deadline passed")
            raise stop.of("".join(self._pieces), len(self._pieces))
        return task.result()

    async def on_text(self, text: str) -> None:
        """Each piece of the provider's stream: held back until the opening can be judged,
        passed straight on after it was released."""
        self._pieces.append(text)
        if self.released:
            if delta := self._unsent(text):
                await self._publish({"delta": delta})
            return
        opening = "".join(self._pieces)
        if len(opening) < self._opening_chars and not _first_sentence_done(opening):
            return
        score = self._scorer.score(Answer(text=opening, attempt=1, tier_index=0,  # text only
                                          finish_reason="stop"))
        if score.weak(self._threshold):
            raise WeakOpening(f"weak opening ({','.join(score.signals)})", opening,
                              len(self._pieces))
        await self.release(opening)

    async def release(self, text: str) -> None:
        """The first piece the caller sees, with what it needs to label the stream."""
        envelope, ref = self._envelope, self._ref
        assert ref is not None, "a piece comes from a call begun"
        self.ttft_ms = (time.time() - envelope.received_at) * 1000
        await self._keep_release(Released(ttft_ms=self.ttft_ms, n=self._n, ref=ref))
        await self._publish({
            "delta": self._unsent(text), "request_id": envelope.request_id,
            "model": ref.model, "provider": ref.provider,
            "tier": self._tier.name, "difficulty_tag": envelope.classification.difficulty,
            "escalated": self._tier.name != envelope.start_tier,
        })

    def _unsent(self, text: str) -> str:
        """Of `text`, the next text received, what may be sent: a trailing high surrogate waits
        for its pair, and nothing past the answer's byte bound goes (a string's JSON size is
        the sum of its characters', so cutting piece by piece cuts where bound_text cuts the
        whole)."""
        if self._full:
            return ""
        text, self._held = self._held + text, ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._held = text[:-1], text[-1]
        text, self._full = payload.bound_text(well_formed(text),
                                              self._max_answer_bytes - self._sent_bytes)
        self._sent_bytes += payload.json_size(text) - 2  # without the quotes
        return text

    async def _publish(self, piece: dict) -> None:
        await self._nc.publish(self._reply_to, json.dumps(piece, ensure_ascii=False).encode())


def _first_sentence_done(text: str) -> bool:
    return len(text) >= MIN_OPENING_CHARS and SENTENCE_END.search(text, MIN_OPENING_CHARS - 1) \
        is not None


def wants_stream(envelope: Envelope) -> bool:
    """An online caller with a reply subject asked for pieces, and none was released yet."""
    return (envelope.request.stream and envelope.origin.kind == "online"
            and bool(envelope.origin.reply_to) and envelope.ttft_ms is None)


def completion_of(stopped: StreamStopped, input_bound: int) -> Completion:
    """What a stopped stream is billed as: the input at its worst-case bound and one output token
    per piece received, since the provider reports usage only at the end."""
    return Completion(text=stopped.text, finish_reason="stop", input_tokens=input_bound,
                      output_tokens=stopped.pieces, emulated=stopped.emulated)
