"""Intake: validates a request, tags its difficulty, picks its starting tier and hands the
envelope to the dispatcher; or answers it at once with the reason it cannot go on (invalid, a
reused request_id, too large, the queues full). Online requests and batch jobs both come here.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import APIError

from shared import idempotency, outcomes, payload, subjects
from shared.config import RouterConfig
from shared.errors import ErrorCode, RouterError
from shared.messages import (
    ChatRequest,
    Claim,
    Classification,
    DecidedBy,
    Envelope,
    Origin,
    parse_request,
)

from .admission import release
from .chain import Classifier

# Online requests that may wait at once for the reply of a first one with their request_id: each
# costs nothing, so without a bound a caller could hold the router's attention for free.
MAX_WAITING_PER_KEY = 4
# ...and in all, on one classifier: each waiter reads the request store until its reply comes,
# and waiters are out of the admission count, so a tenant holding its share of first requests
# could otherwise add four waiters to each.
MAX_WAITING = 64
MAX_WAITING_PER_TENANT = 16  # of those, one tenant's: its retries leave room for the others'

log = structlog.get_logger(__name__)


class Intake:
    """The front door's work behind admission, shared by online requests and batch jobs."""

    def __init__(self, broker: NatsBroker, cfg: RouterConfig, classifier: Classifier) -> None:
        self.broker, self.cfg, self.classifier = broker, cfg, classifier
        self._waiting: Counter[str] = Counter()  # online duplicates waiting, by key
        self._waiting_of: Counter[str | None] = Counter()  # and by tenant

    async def hand_on(self, body: bytes, origin: Origin, trace_id: str) -> bool:
        """Validate, classify and hand the request to the dispatcher; False when it was answered
        here instead (rejected), or was handed on already (a redelivered job)."""
        received_at = time.time()
        try:
            request = vouched(parse_request(body, self.cfg.limits), origin)
            pinned, top = self.tier_bounds(request)
        except RouterError as invalid:
            await self.reject(body, origin, trace_id, received_at, invalid)
            return False
        request_id = request.request_id or trace_id
        if origin.kind == "batch":
            origin = origin.model_copy(update={
                "job_id": request.job_id or outcomes.DEFAULT_JOB_ID, "tenant": request.tenant})
        claim = idempotency.claim_for(request, origin)
        if claim is not None:
            try:
                earlier = await idempotency.take(self.broker, claim, trace_id)
            except APIError as exc:  # the bucket is full: no key can be honoured now
                if origin.kind == "batch":
                    raise  # redelivered after a backoff
                await self.reject(body, origin, trace_id, received_at, self._overloaded(exc),
                                  tenant=request.tenant)
                return False
            if earlier is not None and earlier.trace_id != trace_id:  # not our own redelivery
                await self._answer_reused_id(body, request, origin, trace_id, received_at,
                                             claim, earlier)
                return False
            origin = origin.model_copy(update={"claim": claim})
        try:
            verdict = await self.classifier.classify(request.prompt_text)
            features = (await self.classifier.features(request.prompt_text)
                        if self.cfg.ledger.store_features else None)
            # A router model, when configured, picks the routing row; the tag stays in the reply.
            decided_by: DecidedBy = ("request" if pinned is not None
                          else "router_model" if verdict.routed_as is not None else "difficulty")
            start = pinned if pinned is not None else min(
                self.cfg.start_tier(verdict.routed_as or verdict.difficulty), top)
            envelope = Envelope(
                request_id=request_id,
                trace_id=trace_id,
                request=request,
                origin=origin,
                received_at=received_at,
                deadline=received_at + (self.cfg.limits.batch_timeout_s if origin.kind == "batch"
                                        else self.cfg.limits.request_timeout_s),
                classification=Classification(
                    difficulty=verdict.difficulty,
                    confidence=verdict.confidence,
                    backend=verdict.backend,
                    latency_ms=verdict.latency_ms,
                    strong_score=verdict.strong_score,
                    decided_by=decided_by,
                ),
                start_tier=self.cfg.tiers[start].name,
                tier_index=start,
                max_tier_index=top,
                features=features,
            )
            handed_on = await payload.dispatch(self.broker, envelope)
        except payload.TooLarge as exc:
            error = RouterError(ErrorCode.PROMPT_TOO_LARGE, f"the request cannot travel: {exc}")
        except APIError as exc:  # the pipeline stream is full (its max_bytes) or refuses for now
            error = self._overloaded(exc)
            if claim is not None:  # a passing refusal: the same id may be tried again
                await idempotency.release(self.broker, claim)
                origin = origin.model_copy(update={"claim": None})
            if origin.kind == "batch":
                raise  # a job waits in its stream and is redelivered after a backoff
        except Exception:
            if claim is not None:  # the key must not stay pending for the whole window
                await idempotency.release(self.broker, claim)
            raise
        else:
            return handed_on
        await self.reject(body, origin, trace_id, received_at, error, tenant=request.tenant)
        return False

    def _overloaded(self, exc: APIError) -> RouterError:
        return RouterError(ErrorCode.OVERLOADED, f"the router's queues refuse the request for "
                           f"now: {exc.description}", self.cfg.pipeline.overloaded_retry_after_s)

    async def _answer_reused_id(
        self, body: bytes, request: ChatRequest, origin: Origin, trace_id: str,
        received_at: float, claim: Claim, earlier: idempotency.Record,
    ) -> None:
        """A request_id seen within the window: the first reply again for the same request (no
        provider call, nothing billed), `duplicate_request` for a different one."""
        if earlier.fingerprint != claim.fingerprint:
            await self.reject(body, origin, trace_id, received_at, RouterError(
                ErrorCode.DUPLICATE_REQUEST,
                f"request_id '{request.request_id}' was used for a different request in the "
                f"last {self.cfg.pipeline.dedup_window_s:.0f} s; give this request an id of its "
                "own"),
                tenant=request.tenant)
            return
        reply = earlier.reply
        if reply is None and origin.kind == "online":  # the first is still running: wait for it
            tenant = request.tenant
            crowded = (f"{MAX_WAITING_PER_KEY} requests with this request_id already wait"
                       if self._waiting[claim.key] >= MAX_WAITING_PER_KEY else
                       f"{MAX_WAITING_PER_TENANT} requests of this tenant already wait"
                       if tenant is not None and self._waiting_of[tenant] >= MAX_WAITING_PER_TENANT
                       else
                       f"{MAX_WAITING} requests already wait"
                       if self._waiting.total() >= MAX_WAITING else None)
            if crowded:
                await self.reject(body, origin, trace_id, received_at, RouterError(
                    ErrorCode.OVERLOADED, f"{crowded} for the first one's reply",
                    self.cfg.pipeline.overloaded_retry_after_s), tenant=request.tenant)
                return
            self._waiting[claim.key] += 1  # counted before anything yields: the bound holds
            self._waiting_of[tenant] += 1
            try:
                if origin.done_subject:  # a wait, not work: out of the admission count
                    await self.broker.publish(trace_id.encode(), origin.done_subject)
                reply = await idempotency.reply_when_done(
                    self.broker, claim, received_at + self.cfg.limits.request_timeout_s)
            finally:
                release(self._waiting, claim.key)
                release(self._waiting_of, tenant)
        if reply is None:  # a batch duplicate: the first's result goes to the same job
            log.info("request.duplicate_pending", request_id=request.request_id)
            if origin.kind == "online":
                await self.reject(body, origin, trace_id, received_at, RouterError(
                    ErrorCode.TIMEOUT,
                    "the first request with this request_id is still running"),
                    tenant=request.tenant)
            return
        log.info("request.replayed", request_id=request.request_id)
        await outcomes.send_reply(self.broker, origin, json.dumps(reply).encode(),
                                  earlier.trace_id)

    def tier_bounds(self, request: ChatRequest) -> tuple[int | None, int]:
        """The pinned starting tier, if any, and the highest tier this request may reach."""
        if request.model is not None:
            own = self._model_tier(request)
            return own, own
        names = [t.name for t in self.cfg.tiers]
        for field in ("tier", "max_tier"):
            value = getattr(request, field)
            if value is not None and value not in names:
                raise RouterError(ErrorCode.INVALID_REQUEST,
                                  f"'{field}': unknown tier '{value}' "
                                  f"(tiers: {', '.join(names)})")
        top = self.cfg.top_tier_index
        if request.max_tier:
            top = min(top, self.cfg.tier_index(request.max_tier))
        pinned = self.cfg.tier_index(request.tier) if request.tier else None
        if pinned is not None and pinned > top:
            raise RouterError(ErrorCode.INVALID_REQUEST,
                              f"'tier' is above the highest tier this request may reach "
                              f"({self.cfg.tiers[top].name})")
        return pinned, top

    def _model_tier(self, request: ChatRequest) -> int:
        """The first tier that lists the model the request names."""
        if request.tier is not None or request.max_tier is not None:
            raise RouterError(ErrorCode.INVALID_REQUEST,
                              "'model' pins its own tier: give 'model' or 'tier'/'max_tier'")
        for index, tier in enumerate(self.cfg.tiers):
            if any(ref.named(request.model or "") for ref in tier.models):
                return index
        known = sorted({ref.model for tier in self.cfg.tiers for ref in tier.models})
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"'model': '{request.model}' is not a configured model "
                          f"({', '.join(known)})")

    async def reject(
        self, body: bytes, origin: Origin, trace_id: str, received_at: float,
        error: RouterError, *, tenant: str | None = None,
    ) -> None:
        """Answer with the error and record the refusal; `tenant` once the request is valid."""
        found = outcomes.salvage(body)
        request_id = found.request_id or trace_id  # a redelivered job: rejected under one id
        if origin.kind == "batch":
            origin = origin.model_copy(update={
                "job_id": found.job_id or outcomes.DEFAULT_JOB_ID,
                "tenant": origin.tenant or found.tenant})
        log.info("request.rejected", request_id=request_id, code=error.code, bytes=len(body))
        await outcomes.fail(
            self.broker,
            origin=origin.model_copy(update={"done_subject": None}),  # never counted in
            request_id=request_id,
            trace_id=trace_id,
            code=error.code,
            message=error.message,
            retry_after_s=error.retry_after_s,
            event=outcomes.rejection_event(trace_id=trace_id, request_id=request_id,
                                           origin=origin,
                                           prompt=outcomes.body_fingerprint(body),
                                           received_at=received_at,
                                           tenant=tenant),
        )


def vouched(request: ChatRequest, origin: Origin) -> ChatRequest:
    """The request with the tenant its subject names: a client identity may publish only on
    its own tenant's subjects (the server's permissions vouch for it), and a body naming
    another tenant is refused. On the shared subjects the body's tenant stands (open mode)."""
    tenant = origin.tenant
    if tenant is None:
        return request
    if not subjects.TENANT_TOKEN_RE.fullmatch(tenant):
        raise RouterError(ErrorCode.INVALID_REQUEST, f"'{tenant}' is not a tenant name")
    if request.tenant is not None and request.tenant != tenant:
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"'tenant': this connection is tenant '{tenant}', not "
                          f"'{request.tenant}'")
    if origin.kind == "online" and origin.reply_to and not subjects.own_inbox(
            tenant, origin.reply_to):
        raise RouterError(ErrorCode.INVALID_REQUEST,
                          f"replies to tenant '{tenant}' go to its own inbox "
                          f"({subjects.inbox_prefix(tenant)}.>), not {origin.reply_to}")
    return request.model_copy(update={"tenant": tenant})
