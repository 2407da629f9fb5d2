"""Dispatcher worker: calls the envelope's tier through the providers' official SDKs and hands
the answer (or the failed attempts) to the escalator.

Provider calls are slow I/O, so one process keeps `pipeline.dispatcher_concurrency` of them in
flight. A hop's result is written to a KV bucket before it is forwarded: a message redelivered
after a crash forwards that result again instead of paying for the same call twice.
"""

from __future__ import annotations

from faststream.nats import NatsMessage
from nats.js.errors import KeyNotFoundError

from shared import subjects
from shared.messages import Envelope
from shared.pricing import Pricer
from shared.providers import Providers
from shared.runtime import Service

from .tier_call import TierCaller

service = Service("dispatcher")
broker, cfg = service.broker, service.config
providers = Providers(connections=cfg.pipeline.dispatcher_concurrency)
providers.prepare({ref.provider for tier in cfg.tiers for ref in tier.models})
caller = TierCaller(
    providers, Pricer(cfg.pricing), cfg.limits,
    want_logprobs="logprob" in cfg.escalation.signals,
)


@service.consumer("dispatcher", cfg.pipeline.dispatcher_concurrency)
async def on_dispatch(_body: object) -> None:
    msg = service.message()
    await service.settle(msg, lambda: dispatch(msg), keepalive=True)


async def dispatch(msg: NatsMessage) -> None:
    envelope = Envelope.model_validate_json(msg.body)
    hops = await broker.key_value(subjects.HOPS_BUCKET, declare=False)  # cached by FastStream
    key = f"{envelope.trace_id}.{envelope.hop}"
    if msg.raw_message.metadata.num_delivered > 1:
        try:
            recorded = await hops.get(key)
        except KeyNotFoundError:
            recorded = None
        if recorded is not None and recorded.value:
            await _forward(recorded.value, key)
            return
    result = await caller.call(envelope, cfg.tiers[envelope.tier_index])
    scored = envelope.model_copy(
        update={"attempts": [*envelope.attempts, *result.attempts], "answer": result.answer}
    )
    body = scored.model_dump_json().encode()
    await hops.put(key, body)
    await _forward(body, key)


async def _forward(body: bytes, key: str) -> None:
    await broker.publish(body, subjects.SCORE, headers={subjects.MSG_ID: f"{key}.s"},
                         stream=subjects.PIPELINE_STREAM)
