"""Judge sampling: labels for the learned router beyond what escalation sees. A configured share
of the answers served below the top tier (`escalation.sampling.share`, a fixed lot per request)
is also asked of the top tier's first model, after the caller has its reply, and the judge model
(`escalation.judge`'s provider and model) says whether the served answer was as good.

Both calls are attempts of the request (outcome "sample"), each recorded as soon as it returns;
they are not in the request's cost, which was billed before, and stats shows them as
`sampling_cost_usd`. The comparison's verdict is its attempt's reason (SampleVerdict), which
`train-router --from-ledger` reads.

A request the caller pinned (a tier or a model) or capped below the top tier is never sampled:
its prompt goes to no model the caller ruled out.

A sample is best effort: it runs in the background, after the escalator's handler is done, so a
failure in it never redelivers a finished request nor holds a worker slot; at most
`pipeline.escalator_concurrency` run at once (a lot drawn when none is free is skipped), and at
shutdown the running ones finish within their calls' timeouts.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

import structlog

from shared.config import ModelRef, RouterConfig
from shared.messages import Attempt, Envelope, Outcome, SampleVerdict
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import Providers

from .calls import json_verdict, paid_call, tagged

log = structlog.get_logger(__name__)

EXCERPT_CHARS = 2000
VERDICT_TOKENS = 20
INSTRUCTIONS = (
    "Compare an AI assistant's answer with a reference answer to the same question. Reply "
    'with JSON only: {"correct": true} if the answer is as good as the reference (as correct '
    'and as complete), or {"correct": false} if it falls short of it.'
)

Record = Callable[[list[Attempt]], Awaitable[None]]


class Sampler:
    def __init__(self, cfg: RouterConfig, providers: Providers, pricer: Pricer) -> None:
        top = cfg.tiers[cfg.top_tier_index]
        self._share = cfg.escalation.sampling.share
        self._top_index, self._top, self._reference = cfg.top_tier_index, top.name, top.models[0]
        judge = cfg.escalation.judge
        self._judge, self._judge_timeout_s = ModelRef(provider=judge.provider,
                                                      model=judge.model), judge.timeout_s
        self._limits = cfg.limits
        self._providers, self._pricer = providers, pricer
        self._max_cost_usd = cfg.escalation.sampling.max_cost_usd
        # The judge reads three excerpts of EXCERPT_CHARS characters, four bytes each at most.
        self._judge_worst = pricer.cost(self._judge, worst_case_input_tokens(
            [INSTRUCTIONS, "x" * (3 * 4 * EXCERPT_CHARS + 100)]), VERDICT_TOKENS)
        self._slots = cfg.pipeline.escalator_concurrency
        self._running: set[asyncio.Task[None]] = set()  # referenced, so none is collected
        self.skipped = 0  # lots drawn while every slot was taken, or after stop()
        self._stopped = False

    def picks(self, envelope: Envelope, served: Attempt) -> bool:
        """An answer served below the top tier, in the share (by the request's trace, so a
        redelivery decides the same), of a request the caller left free to reach the top
        tier: a pinned tier or model, or a max_tier below the top, rules the top tier out."""
        pinned = (envelope.classification.decided_by == "request"
                  or envelope.request.model is not None)
        if pinned or envelope.max_tier_index < self._top_index:
            return False
        lot = zlib.crc32(f"sample\x00{envelope.trace_id}".encode()) / 2**32
        return served.tier != self._top and lot < self._share and self._affordable(envelope)

    def _affordable(self, envelope: Envelope) -> bool:
        """Both calls, at their worst, within escalation.sampling.max_cost_usd."""
        request = envelope.request
        reference = self._pricer.cost(
            self._reference, worst_case_input_tokens(m.content for m in request.chat),
            request.max_tokens or self._limits.default_max_tokens)
        return reference + self._judge_worst <= self._max_cost_usd

    def start(self, envelope: Envelope, answer: str, record: Record) -> None:
        """Compare in the background, best effort: skipped when every slot is taken, and any
        failure is logged and dropped (the caller has its answer; the label is a bonus)."""
        if self._stopped or len(self._running) >= self._slots:
            self.skipped += 1
            log.debug("sample.skipped", request_id=envelope.request_id,
                      running=len(self._running))
            return
        task = asyncio.create_task(self._compare_quietly(envelope, answer, record),
                                   name=envelope.request_id)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self) -> None:
        """At shutdown: none starts after, and the running ones finish (their calls are paid
        and each is recorded when it returns), bounded by the calls' own timeouts; what is
        still running then is cancelled."""
        self._stopped = True
        if self._running:
            await asyncio.wait(self._running,
                               timeout=self._limits.provider_timeout_s + self._judge_timeout_s)
        for task in self._running:
            log.warning("sample.cancelled_at_stop", request_id=task.get_name())
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _compare_quietly(self, envelope: Envelope, answer: str, record: Record) -> None:
        try:
            await self.compare(envelope, answer, record)
        except Exception as exc:  # best effort: nothing may reach the handler
            log.warning("sample.failed", request_id=envelope.request_id,
                        error=type(exc).__name__)

    async def compare(self, envelope: Envelope, answer: str, record: Record) -> list[Attempt]:
        """Ask the top tier, then the judge; each call is recorded as soon as it returns."""
        request = envelope.request
        n = len(envelope.attempts) + 1
        reference, call = await paid_call(
            self._providers, self._pricer, self._reference,
            [m.model_dump() for m in request.chat], outcome=Outcome.SAMPLE, n=n,
            hop=envelope.hop, tier=self._top,
            max_tokens=request.max_tokens or self._limits.default_max_tokens,
            timeout=self._limits.provider_timeout_s, json_format=False,
            temperature=request.temperature)
        call = call.model_copy(update={"reason": call.reason or "sample: the top tier's answer"})
        await record([call])
        if reference is None:
            return [call]
        messages = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": tagged(question=request.prompt_text[:EXCERPT_CHARS],
                                               reference=reference[:EXCERPT_CHARS],
                                               answer=answer[:EXCERPT_CHARS])},
        ]
        text, judged = await paid_call(
            self._providers, self._pricer, self._judge, messages, outcome=Outcome.SAMPLE,
            n=n + 1, hop=envelope.hop, tier=self._top, max_tokens=VERDICT_TOKENS,
            timeout=self._judge_timeout_s, json_format=True)
        verdict = _verdict(text)
        judged = judged.model_copy(update={
            "reason": verdict if text is not None else f"{verdict}: {judged.reason}"})
        await record([judged])
        return [call, judged]


def _verdict(text: str | None) -> SampleVerdict:
    correct = json_verdict(text, "correct")
    if correct is None:
        return SampleVerdict.NONE
    return SampleVerdict.AS_GOOD if correct else SampleVerdict.FELL_SHORT
