"""Classifier worker: the front door. Validates each request, tags its difficulty, picks the
starting tier and hands the envelope to the dispatcher through JetStream.

Online requests arrive on router.v1.chat (core request-reply; the caller's inbox travels in the
envelope and the escalator answers it). Batch jobs arrive on the ROUTER_JOBS stream.
"""

from __future__ import annotations

import asyncio
import sys

from faststream import FastStream
from faststream.nats import NatsMessage

from shared import outcomes, subjects
from shared.config import RouterConfig, Settings
from shared.messages import Origin
from shared.runtime import Service

from .batch_pace import BatchPace
from .chain import Classifier
from .front_door import FrontDoor
from .intake import Intake

# The model's thread runs Python between its numpy and ONNX calls; with the default 5 ms switch
# interval it kept the event loop, which answers refusals, waiting behind it.
SWITCH_INTERVAL_S = 0.0005


def create_app(config: RouterConfig | None = None,
               settings: Settings | None = None) -> FastStream:
    service = Service("classifier", config, settings)
    cfg = service.config
    classifier = Classifier(cfg.classifier,
                            router_shares=(cfg.routing.strong_share, cfg.routing.medium_share),
                            store_features=cfg.ledger.store_features,
                            counters=service.counters)
    intake = Intake(service.broker, cfg, classifier)
    front_door = FrontDoor(service.broker, cfg, intake)
    pace = BatchPace(cfg.pipeline.max_batch_in_flight, service.counters)

    @service.app.on_startup
    async def load_models() -> None:
        await asyncio.to_thread(classifier.warm_up)
        sys.setswitchinterval(SWITCH_INTERVAL_S)

    async def on_job(msg: NatsMessage) -> None:
        meta = msg.raw_message.metadata
        trace_id = outcomes.job_trace_id(meta.sequence.stream, meta.timestamp)
        origin = Origin(kind="batch", tenant=subjects.tenant_of(msg.raw_message.subject),
                        done_subject=pace.done_subject)
        taken = await pace.take(trace_id, cfg.limits.batch_timeout_s)
        handed_on = False
        try:
            handed_on = await intake.hand_on(msg.body, origin, trace_id)
        finally:
            if taken and not handed_on:  # not a redelivery whose first copy holds the slot
                pace.done(trace_id)

    # keepalive: a job waiting for a slot (batch_pace.py) must not be redelivered meanwhile
    service.consume("classifier", cfg.pipeline.classifier_concurrency, on_job, keepalive=True)

    @service.app.after_startup
    async def count_batch_out() -> None:
        await pace.open(service.broker.connection)

    service.app.after_startup(front_door.open)
    service.app.on_shutdown(front_door.close)
    return service.app
