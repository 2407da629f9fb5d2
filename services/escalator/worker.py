"""Escalator worker: scores each answer, sends a weak one back to the dispatcher one tier up,
and finishes the request: the best answer obtained goes to the caller, every attempt and the
request itself go to the ledger.

With `escalation.sampling.share`, a share of the answers served below the top tier is then
compared with the top tier's (sampling.py), in the background once the request is finished:
labels for the learned router, paid apart.

Escalation stops at the request's highest tier, at its budget, at its deadline, or after
`escalation.max_attempts` answers, so a request can never loop. Every publish carries a
message id derived from the request's trace and hop, so a redelivered message repeats nothing.
"""

from __future__ import annotations

import asyncio
import hashlib

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel

from shared import hop_records, outcomes, payload
from shared.config import RouterConfig, Settings, Signal
from shared.errors import ErrorCode
from shared.messages import (
    Answer,
    Attempt,
    AttemptView,
    ChatReply,
    ClassifierView,
    Envelope,
    Outcome,
)
from shared.pricing import Pricer
from shared.providers import Providers
from shared.runtime import Service

from .calls import MIN_CALL_S
from .judge import Judge
from .sampling import Sampler
from .scoring import CAPS, Scorer
from .verify import Verifier

log = structlog.get_logger(__name__)

MONEY_DIGITS = 10  # the ledger's numeric scale
ANSWERED = (Outcome.OK, Outcome.WEAK)
CHECKS = (Outcome.JUDGE, Outcome.VERIFY)  # paid checks of answers: verification_cost_usd


def create_app(config: RouterConfig | None = None,
               settings: Settings | None = None) -> FastStream:
    service = Service("escalator", config, settings)
    escalator = Escalator(service.broker, service.config)
    # keepalive: a check's paid call, and recording it while JetStream is away (up to about
    # outcomes.BILL_PATIENCE_S), can outlast ack_wait; a redelivery meanwhile would pay again.
    service.consume("escalator", service.config.pipeline.escalator_concurrency,
                    escalator.on_score, keepalive=True)
    if escalator.sampler is not None:
        service.app.on_shutdown(escalator.sampler.stop)
    service.app.after_shutdown(escalator.aclose)  # after the calls and samples
    return service.app


class Checked(BaseModel):
    """An answer's score, and the paid checks' calls that made it (kept for a redelivery)."""

    attempts: list[Attempt]
    value: float
    signals: list[Signal]


class SampleStarted(BaseModel):
    """The mark a sampled request's comparison leaves in the hop records."""


def sample_mark_key(envelope: Envelope) -> str:
    """Three tokens, as every key the escalator may write in the hop records (its grant)."""
    return f"{envelope.trace_id}.{envelope.hop}.sample"


class Escalator:
    """Decides each scored hop: answer, climb a tier, or fail."""

    def __init__(self, broker: NatsBroker, cfg: RouterConfig) -> None:
        Pricer.check(cfg)  # no configured model may cost a guessed $0
        self.broker, self.cfg = broker, cfg
        self.scorer = Scorer(cfg.escalation)
        self.pricer = Pricer(cfg.pricing)
        # The checks' calls are on the request's path; the background samples get connections
        # of their own, so a burst of samples cannot hold up a request's verdict.
        self.providers, self.sample_providers = Providers(), Providers()
        self.judge = (Judge(cfg.escalation.judge, self.providers, self.pricer)
                      if cfg.escalation.judge.enabled and "judge" in cfg.escalation.signals
                      else None)
        self.verifier = (Verifier(cfg.escalation.verify, self.providers, self.pricer)
                         if cfg.escalation.verify.enabled else None)
        self.sampler = (Sampler(cfg, self.sample_providers, self.pricer)
                        if cfg.escalation.sampling.share > 0 else None)

    async def aclose(self) -> None:
        """Close the providers' clients, at the service's stop."""
        try:
            await self.providers.aclose()
        finally:
            await self.sample_providers.aclose()

    async def on_score(self, msg: NatsMessage) -> None:
        await self.decide(Envelope.read(msg.body, len(self.cfg.tiers)),
                          redelivered=msg.raw_message.metadata.num_delivered > 1)

    async def decide(self, envelope: Envelope, *, redelivered: bool = False) -> None:
        if envelope.cancelled:
            await self._fail(envelope, ErrorCode.CANCELLED)
            return
        envelope = await self._scored(envelope, redelivered)
        answer = envelope.answer
        released = envelope.ttft_ms is not None  # a stream the caller has seen is never replaced
        if answer is not None and (released or not self._is_weak(answer)):
            await self._succeed(envelope, answer)  # a late weak verdict stays on its attempt's row
            return
        if released:
            await self._fail(envelope, ErrorCode.UPSTREAM_ERROR)
            return
        stop = self.stop_reason(envelope)
        if stop is None:
            await self._escalate(envelope)
        elif envelope.best is not None:
            await self._succeed(envelope, envelope.best)
        else:
            await self._fail(envelope, stop)


    async def _scored(self, envelope: Envelope, redelivered: bool = False) -> Envelope:
        """The envelope with this hop's answer scored, its attempt marked and the best kept.
        The paid checks' verdict is kept for a redelivery, which replays it unpaid."""
        answer = envelope.answer
        if answer is None:
            return envelope
        # The answer's own digest in the key: a hop called again (its record lost) is checked anew.
        digest = hashlib.blake2b(answer.text.encode(), digest_size=8).hexdigest()
        key = f"{envelope.trace_id}.{envelope.hop}.checks-{digest}"
        checked = await hop_records.kept(self.broker, key, Checked) if redelivered else None
        if checked is None:
            checked = await self._checked(envelope, answer)
            if checked.attempts:
                await hop_records.keep(self.broker, key, checked)
        value, signals = checked.value, checked.signals
        attempts = [*envelope.attempts, *checked.attempts]
        answer = answer.model_copy(update={"score": value, "signals": signals})
        if value < self.cfg.escalation.threshold:
            attempts = [
                a.model_copy(update={"outcome": Outcome.WEAK, "reason": ",".join(signals)})
                if a.n == answer.attempt else a
                for a in attempts
            ]
            weak = [a for a in attempts if a.n == answer.attempt]
            await outcomes.record_attempts(self.broker, envelope, weak, verdict=True)
        best = envelope.best
        if best is None or (answer.score or 0) > (best.score or 0):
            best = answer
        return envelope.model_copy(update={"answer": answer, "attempts": attempts, "best": best})

    async def _checked(self, envelope: Envelope, answer: Answer) -> Checked:
        """The answer's score: the free signals, then the paid checks if none fired (each call
        recorded in the ledger as it is made)."""
        score = self.scorer.score(answer)
        value, signals, attempts = score.value, list(score.signals), list(envelope.attempts)
        if (self.judge is not None and not signals and envelope.seconds_left() >= MIN_CALL_S
                and self._judge_affordable(envelope)):
            served = next(a for a in attempts if a.n == answer.attempt)
            addresses, call = await self.judge.addresses(
                envelope.request.prompt_text, answer.text, n=len(attempts) + 1,
                hop=envelope.hop, tier=served.tier, seconds_left=envelope.seconds_left())
            await outcomes.record_attempts(self.broker, envelope, [call])  # paid: recorded at once
            attempts.append(call)
            if addresses is False:
                value, signals = CAPS["judge"], ["judge"]
        if not signals and self.verifier is not None and self._verifiable(envelope):
            served = next(a for a in attempts if a.n == answer.attempt)
            check = await self.verifier.check(
                envelope.model_copy(update={"attempts": attempts}), answer.text, tier=served.tier,
                record=lambda calls: outcomes.record_attempts(self.broker, envelope, calls))
            attempts += check.calls
            if check.wrong_by is not None:
                value, signals = CAPS[check.wrong_by], [check.wrong_by]
        return Checked(attempts=attempts[len(envelope.attempts):], value=value, signals=signals)

    def _judge_affordable(self, envelope: Envelope) -> bool:
        """The judge's call fits in what is left of the request's own budget, at its worst."""
        ceiling = envelope.request.max_cost_usd
        if ceiling is None or self.judge is None or envelope.answer is None:
            return ceiling is None
        worst = self.judge.worst_cost(envelope.request.prompt_text, envelope.answer.text)
        return envelope.cost_usd + worst <= ceiling


    def _verifiable(self, envelope: Envelope) -> bool:
        """Worth a paid check: an answer not yet shown to the caller, on a tier that can still
        climb, of a request the verification policy picks."""
        return (self.verifier is not None and envelope.ttft_ms is None
                and envelope.tier_index < envelope.max_tier_index
                and self.verifier.eligible(envelope))


    def _is_weak(self, answer: Answer) -> bool:
        return (answer.score if answer.score is not None else 1.0) < self.cfg.escalation.threshold


    def stop_reason(self, envelope: Envelope) -> ErrorCode | None:
        """Why the request may not climb further, or None when it may."""
        request = envelope.request
        if envelope.seconds_left() <= 0:
            return ErrorCode.TIMEOUT
        if request.max_cost_usd is not None and envelope.cost_usd >= request.max_cost_usd:
            return ErrorCode.BUDGET_EXCEEDED
        answers = sum(1 for a in envelope.attempts if a.outcome in ANSWERED)
        if (envelope.tier_index >= envelope.max_tier_index
                or answers >= self.cfg.escalation.max_attempts):
            if envelope.attempts and all(a.outcome == Outcome.SKIPPED for a in envelope.attempts):
                return ErrorCode.BUDGET_EXCEEDED
            return ErrorCode.NO_PROVIDER_AVAILABLE
        return None


    async def _escalate(self, envelope: Envelope) -> None:
        onward = envelope.model_copy(
            update={"tier_index": envelope.tier_index + 1, "hop": envelope.hop + 1,
                    "answer": None}
        )
        log.debug("request.escalated", request_id=envelope.request_id,
                  to_tier=self.cfg.tiers[onward.tier_index].name)
        try:
            await payload.dispatch(self.broker, onward)
        except payload.TooLarge as exc:  # it cannot climb: the best answer so far, or the error
            log.error("escalation.too_large", request_id=envelope.request_id, size=exc.size)
            if envelope.best is not None:
                await self._succeed(envelope, envelope.best)
            else:
                await self._fail(envelope, ErrorCode.PROMPT_TOO_LARGE)


    async def _succeed(self, envelope: Envelope, answer: Answer) -> None:
        served = next(a for a in envelope.attempts if a.n == answer.attempt)
        cost = envelope.cost_usd
        baseline = self.pricer.cost(self.cfg.baseline_model, served.input_tokens,
                                    served.output_tokens)
        answered_tiers = {a.tier for a in envelope.attempts if a.outcome in ANSWERED}
        event = outcomes.request_event(
            envelope, store_prompt=self.cfg.ledger.store_prompt_text, status="ok"
        ).model_copy(update={
            "tier": served.tier,
            "model_used": served.model,
            "provider": served.provider,
            "escalated": len(answered_tiers) > 1,
            "baseline_cost_usd": baseline,
            # the answers not served; the checks' calls are verification_cost_usd
            "escalation_cost_usd": sum(a.cost_usd for a in envelope.attempts
                                       if a.n != served.n and a.outcome not in CHECKS),
        })
        reply = ChatReply(
            request_id=envelope.request_id,
            job_id=envelope.origin.job_id,
            response=answer.text,
            model_used=served.model,
            provider=served.provider,
            difficulty_tag=envelope.classification.difficulty,
            tier=served.tier,
            cost_usd=round(cost, MONEY_DIGITS),
            baseline_cost_usd=round(baseline, MONEY_DIGITS),
            saved_usd=round(baseline - cost, MONEY_DIGITS),
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            latency_ms=event.latency_ms,
            escalated=event.escalated,
            emulated=event.emulated,
            attempts=[AttemptView(**a.model_dump()) for a in envelope.attempts],
            classifier=ClassifierView(**envelope.classification.model_dump()),
        )
        await asyncio.gather(
            outcomes.deliver(self.broker, envelope.origin, reply, msg_id=envelope.trace_id),
            outcomes.publish_event(self.broker, event),
        )
        if (self.sampler is not None and self.sampler.picks(envelope, served)
                and await self._first_sample(envelope)):
            self.sampler.start(
                envelope, answer.text,
                record=lambda calls: outcomes.record_attempts(self.broker, envelope, calls))


    async def _first_sample(self, envelope: Envelope) -> bool:
        """Whether this request's comparison is not started yet: a finished request delivered
        again (its ack lost) would otherwise pay for a second one, and label the answer twice."""
        key = sample_mark_key(envelope)
        try:
            if await hop_records.kept(self.broker, key, SampleStarted) is not None:
                return False
        except Exception as exc:  # unknown: no sample rather than maybe a second
            log.warning("sample.skipped", request_id=envelope.request_id,
                        reason=type(exc).__name__)
            return False
        await hop_records.keep(self.broker, key, SampleStarted())
        return True


    async def _fail(self, envelope: Envelope, code: ErrorCode) -> None:
        reasons = "; ".join(f"{a.model}: {a.reason}" for a in envelope.attempts if a.reason)
        message = {
            ErrorCode.TIMEOUT: "no answer before the request's deadline",
            ErrorCode.BUDGET_EXCEEDED: "every call would exceed max_cost_usd",
            ErrorCode.PROMPT_TOO_LARGE: "the request cannot travel to the next tier",
            ErrorCode.CANCELLED: "the caller left before the end of the stream",
            ErrorCode.UPSTREAM_ERROR: "the stream broke after it was released",
        }.get(code, "no model answered")
        await outcomes.fail(
            self.broker,
            origin=envelope.origin,
            request_id=envelope.request_id,
            code=code,
            message=f"{message} ({reasons})" if reasons else message,
            trace_id=envelope.trace_id,
            event=outcomes.request_event(
                envelope, store_prompt=self.cfg.ledger.store_prompt_text, status="error"
            ),
        )
