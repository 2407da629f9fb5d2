"""Dispatcher worker: calls the envelope's tier through the providers' official SDKs and hands
the answer (or the failed attempts) to the escalator.

Provider calls are slow I/O, so one process keeps `pipeline.dispatcher_concurrency` of them in
flight. A hop's result (its attempts and answer, not the whole envelope) is written to a KV
bucket before it is forwarded: a message redelivered after a crash forwards that result again
instead of paying for the same call twice. A streamed hop whose first piece went out before its
dispatcher died is not called again (the caller would be sent the answer twice): it ends as a
stream that broke after its release.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from nats.aio.msg import Msg
from pydantic import BaseModel

from services.escalator.scoring import Scorer
from shared import hop_records, outcomes, payload, subjects
from shared.config import RouterConfig, Settings
from shared.errors import ErrorCode
from shared.messages import Answer, Attempt, Envelope, Outcome
from shared.pricing import Pricer, worst_case_input_tokens
from shared.providers import Providers
from shared.runtime import Service

from .streaming import Cancels, Relay, Released, released_key, wants_stream
from .tier_call import TierCaller, TierResult

log = structlog.get_logger(__name__)

LOST_STREAM = "stream stopped: its dispatcher died after releasing it"


class HopResult(BaseModel):
    """What replaying a hop needs: the calls it made and the answer it got."""

    attempts: list[Attempt]
    answer: Answer | None
    ttft_ms: float | None = None  # a streamed answer's release
    cancelled: bool = False  # the streaming caller left


def create_app(config: RouterConfig | None = None,
               settings: Settings | None = None) -> FastStream:
    service = Service("dispatcher", config, settings)
    dispatcher = Dispatcher(service.broker, service.config)
    service.consume("dispatcher", service.config.pipeline.dispatcher_concurrency,
                    dispatcher.dispatch, keepalive=True)

    @service.app.after_startup
    async def hear_cancels() -> None:
        """Every copy hears every cancel (no queue group): any of them may hold, or yet get,
        the hop. On nats-py, not a FastStream subscriber: a flood of cancels cost 65 us each
        through FastStream's path."""
        await service.broker.connection.subscribe(subjects.CANCELS, cb=dispatcher.on_cancel)

    service.app.after_shutdown(dispatcher.providers.aclose)  # once the calls in flight ended
    return service.app


class Dispatcher:
    """Calls each envelope's tier once, whatever the redeliveries, and forwards the result."""

    def __init__(self, broker: NatsBroker, cfg: RouterConfig,
                 providers: Providers | None = None) -> None:
        """`providers` defaults to the official SDKs, configured from the environment."""
        Pricer.check(cfg)  # no configured model may cost a guessed $0
        self.broker, self.cfg = broker, cfg
        if providers is None:
            providers = Providers(connections=cfg.pipeline.dispatcher_concurrency)
            providers.prepare({ref.provider for tier in cfg.tiers for ref in tier.models})
        self.providers = providers
        self.pricer = Pricer(cfg.pricing)
        self.caller = TierCaller(
            providers, self.pricer, cfg.limits,
            want_logprobs="logprob" in cfg.escalation.signals,
        )
        self.opening_scorer = Scorer(cfg.escalation)  # a streamed answer's opening
        self.cancels = Cancels(ttl_s=cfg.limits.request_timeout_s)

    async def on_cancel(self, msg: Msg) -> None:
        self.cancels.heard(subjects.cancelled(msg.subject))

    async def dispatch(self, msg: NatsMessage) -> None:
        envelope = Envelope.read(msg.body, len(self.cfg.tiers))
        key = f"{envelope.trace_id}.{envelope.hop}"
        redelivered = msg.raw_message.metadata.num_delivered > 1
        result = await self._replayed(envelope, key) if redelivered else None
        # The calls are paid: their events are published before anything after them can fail, on
        # a replay too (they dedup on their call), at once with the hop record and settled only
        # when both writes are: a failed event publish is then redelivered to a replay. A crash
        # that loses the record calls again: new calls, with ledger rows of their own.
        if result is None:
            result = bounded(await self.call(envelope), self.cfg.limits.max_answer_bytes)
            await all_settled(hop_records.keep(self.broker, key, result),
                              outcomes.record_attempts(self.broker, envelope, result.attempts))
        else:
            await outcomes.record_attempts(self.broker, envelope, result.attempts)
        scored = envelope.model_copy(update={
            "attempts": [*envelope.attempts, *result.attempts], "answer": result.answer,
            "ttft_ms": result.ttft_ms, "cancelled": result.cancelled,
        })
        try:
            await payload.publish(self.broker, scored.model_dump_json().encode(), subjects.SCORE,
                                  headers={subjects.MSG_ID: f"{key}.s"},
                                  stream=subjects.PIPELINE_STREAM)
        except payload.TooLarge as exc:
            await self._give_up(scored, exc)


    async def call(self, envelope: Envelope) -> HopResult:
        """The tier's call, streamed to the self.caller when it asked for a stream."""
        tier = self.cfg.tiers[envelope.tier_index]
        if not wants_stream(envelope):
            call: TierResult = await self.caller.call(envelope, tier)
            return HopResult(attempts=call.attempts, answer=call.answer)
        with Relay(self.broker.connection, envelope, tier, self.cfg.escalation,
                   self.opening_scorer, self.cfg.limits.max_answer_bytes, self.cancels,
                   lambda mark: hop_records.keep(self.broker, released_key(envelope), mark)
                   ) as relay:
            call = await self.caller.call(envelope, tier, relay)
        return HopResult(attempts=call.attempts, answer=call.answer, ttft_ms=relay.ttft_ms,
                         cancelled=relay.cancelled and not call.answer)

    async def _replayed(self, envelope: Envelope, key: str) -> HopResult | None:
        """What an earlier delivery of this hop did: its kept result, or, for a stream released
        before that delivery died, a release with no answer and the call it had made."""
        result = await hop_records.kept(self.broker, key, HopResult)
        if result is not None or not wants_stream(envelope):
            return result
        mark = await hop_records.kept(self.broker, released_key(envelope), Released)
        if mark is None:
            return None
        log.warning("stream.restart_refused", request_id=envelope.request_id, hop=envelope.hop,
                    reason="released before its dispatcher stopped")
        return HopResult(attempts=[self._lost_call(envelope, mark)], answer=None,
                         ttft_ms=mark.ttft_ms)

    def _lost_call(self, envelope: Envelope, mark: Released) -> Attempt:
        """The paid call whose dispatcher died mid-stream, for the ledger: what it received
        died too, so it is billed at its floor, its input at the worst-case bound and no
        output (the same call number as its own row, which the ledger keeps if it got one)."""
        input_bound = worst_case_input_tokens(m.content for m in envelope.request.chat)
        return Attempt(n=mark.n, hop=envelope.hop, model=mark.ref.model,
                       provider=mark.ref.provider, tier=self.cfg.tiers[envelope.tier_index].name,
                       outcome=Outcome.ERROR,
                       reason=f"{LOST_STREAM}; usage unknown: input at its bound, no output",
                       input_tokens=input_bound,
                       cost_usd=self.pricer.cost(mark.ref, input_bound, 0))

    async def _give_up(self, envelope: Envelope, too_large: payload.TooLarge) -> None:
        """The hop's result cannot travel on (its calls are recorded already): end the request with
        an error, rather than redeliver it and pay for the same calls again."""
        log.error("hop.too_large", request_id=envelope.request_id, size=too_large.size,
                  limit=too_large.limit)
        await outcomes.fail(
            self.broker,
            origin=envelope.origin,
            request_id=envelope.request_id,
            trace_id=envelope.trace_id,
            code=ErrorCode.PROMPT_TOO_LARGE,
            message=f"the request and its answer cannot travel between the router's stages: "
                    f"{too_large}",
            event=outcomes.request_event(envelope, store_prompt=self.cfg.ledger.store_prompt_text,
                                         status="error"),
        )


async def all_settled(*writes: Awaitable[None]) -> None:
    """Run `writes` at once, wait for every one, then raise the first failure. asyncio.gather
    raises at the first failure and leaves the others running: the message could be redelivered
    before the hop record is in, and its calls paid for again."""
    for outcome in await asyncio.gather(*writes, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def bounded(result: HopResult, max_bytes: int) -> HopResult:
    """An answer over `max_bytes` (limits.max_answer_bytes) is cut there, and its attempt says
    so."""
    answer = result.answer
    if answer is None:
        return result
    text, cut = payload.bound_text(answer.text, max_bytes)
    if not cut:
        return result
    reason = f"answer cut to {max_bytes} bytes (limits.max_answer_bytes)"
    log.warning("answer.cut", attempt=answer.attempt, limit=max_bytes)
    return HopResult(
        attempts=[a.model_copy(update={"reason": reason}) if a.n == answer.attempt else a
                  for a in result.attempts],
        answer=answer.model_copy(update={"text": text}),
        ttft_ms=result.ttft_ms, cancelled=result.cancelled,
    )
