"""The JetStream topology, declared idempotently by every service at start-up, or once by the
setup identity where services may not (`python -m shared.topology`, NATS_DECLARE=false).

Streams and durable consumers are declared here rather than left to FastStream's auto-declare, so
retention, dedup windows and redelivery limits are set on purpose and a changed setting is applied
to an existing stream or consumer on the next start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TypedDict

import nats
import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from shared import connection, logs, subjects
from shared.config import LedgerConfig, PipelineConfig, RouterConfig, Settings

log = structlog.get_logger(__name__)

# Dedup windows of the internal hops: long enough to cover every redelivery of one message. The
# hop records live as long, for the same reason.
HOP_DEDUP_WINDOW_S = 600.0
# Small streams and buckets whose size no setting needs to change.
ADVISORIES_MAX_BYTES = 64 << 20
HEALTH_MAX_BYTES = 8 << 20


class _Placement(TypedDict):
    """Where every stream of ours is kept: the StreamConfig fields they share."""

    storage: StorageType
    num_replicas: int


@dataclass(frozen=True)
class PushConsumer:
    """A durable push consumer shared by every copy of a service through its deliver group."""

    stream: str
    name: str
    filter_subject: str
    max_ack_pending: int
    ack_wait_s: float
    max_deliver: int
    # More subjects it takes besides filter_subject (the per-tenant ones).
    also: tuple[str, ...] = ()

    @property
    def deliver_subject(self) -> str:
        # Outside every stream's subjects, so JetStream never stores its own deliveries.
        return f"_router.deliver.{self.name}"


def streams(pipeline: PipelineConfig) -> list[StreamConfig]:
    """Every stream is bounded on disk. Work that was accepted is never dropped to make room:
    a full work queue refuses new messages (the producer hears it); only the results stream,
    which callers read at leisure, drops its oldest. Jobs have no age limit: one waiting its
    turn (batch_pace.py) would otherwise vanish with no result, row or dead letter."""
    common = _Placement(storage=StorageType.FILE, num_replicas=pipeline.stream_replicas)
    return [
        StreamConfig(
            name=subjects.JOBS_STREAM,
            subjects=list(subjects.with_tenants(subjects.JOBS)),
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=pipeline.dedup_window_s,
            max_bytes=pipeline.jobs_max_bytes,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        StreamConfig(
            name=subjects.PIPELINE_STREAM,
            subjects=[subjects.DISPATCH, subjects.SCORE],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=HOP_DEDUP_WINDOW_S,
            max_age=pipeline.events_max_age_s,
            max_bytes=pipeline.pipeline_max_bytes,
            discard=DiscardPolicy.NEW,
            **common,
        ),
        StreamConfig(
            name=subjects.RESULTS_STREAM,
            subjects=[f"{subjects.RESULTS_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=pipeline.results_max_age_s,
            max_bytes=pipeline.results_max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=HOP_DEDUP_WINDOW_S,
            **common,
        ),
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[f"{subjects.EVENTS_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            max_age=pipeline.events_max_age_s,
            max_bytes=pipeline.events_max_bytes,
            discard=DiscardPolicy.NEW,
            duplicate_window=HOP_DEDUP_WINDOW_S,
            **common,
        ),
        # A message that crash-loops a stage exhausts its deliveries without any handler
        # settling it; JetStream's advisory, kept here, lets the ledger dead-letter it.
        StreamConfig(
            name=subjects.ADVISORIES_STREAM,
            subjects=[subjects.max_deliveries(c.stream, c.name)
                      for c in _stages(pipeline).values()],
            retention=RetentionPolicy.WORK_QUEUE,
            max_age=pipeline.events_max_age_s,
            max_bytes=ADVISORIES_MAX_BYTES,
            discard=DiscardPolicy.NEW,
            **common,
        ),
    ]


def push_consumers(pipeline: PipelineConfig) -> dict[str, PushConsumer]:
    """The pipeline's stages, and the ledger's reader of their max-deliveries advisories."""
    exhausted = PushConsumer(subjects.ADVISORIES_STREAM, "exhausted",
                             f"{subjects.MAX_DELIVERIES_PREFIX}.>", 16, pipeline.ack_wait_s,
                             pipeline.max_deliver)
    return {**_stages(pipeline), "exhausted": exhausted}


def _stages(pipeline: PipelineConfig) -> dict[str, PushConsumer]:
    # A consumer's pending limit covers all copies of a service: leave room for several.
    def stage(stream: str, name: str, subject: str, concurrency: int,
              also: tuple[str, ...] = ()) -> PushConsumer:
        return PushConsumer(stream, name, subject, 4 * concurrency, pipeline.ack_wait_s,
                            pipeline.max_deliver, also)

    classifier = stage(subjects.JOBS_STREAM, "classifier", subjects.JOBS,
                       pipeline.classifier_concurrency, also=(f"{subjects.JOBS}.*",))
    return {
        # No room beyond the handlers, whatever the copies: a job may wait in its handler for
        # a place in the pipeline (batch_pace.py), kept alive there; one delivered behind them
        # would wait unseen, be redelivered every ack_wait_s and end as a dead letter.
        "classifier": replace(classifier, max_ack_pending=pipeline.classifier_concurrency),
        "dispatcher": stage(subjects.PIPELINE_STREAM, "dispatcher", subjects.DISPATCH,
                            pipeline.dispatcher_concurrency),
        "escalator": stage(subjects.PIPELINE_STREAM, "escalator", subjects.SCORE,
                           pipeline.escalator_concurrency),
    }


def ledger_consumer(pipeline: PipelineConfig, ledger: LedgerConfig) -> PushConsumer:
    """Room for every writer's batch and a full queue behind them, for two ledger copies; a short
    ack wait (a stopped ledger's batches come back quickly; a slow database does not trip it,
    because the batcher reports progress on every event a copy holds); deliveries without
    limit, because the events are the record and the ledger retries a failing database
    forever."""
    in_hand = ledger.batch_size * (2 * ledger.writers + 1)
    return PushConsumer(subjects.EVENTS_STREAM, "ledger", f"{subjects.EVENTS_PREFIX}.>",
                        2 * in_hand, ack_wait_s=10.0, max_deliver=-1)


def push_consumer_config(consumer: PushConsumer) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer.name,
        deliver_subject=consumer.deliver_subject,
        deliver_group=consumer.name,
        filter_subject=None if consumer.also else consumer.filter_subject,
        filter_subjects=[consumer.filter_subject, *consumer.also] if consumer.also else None,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=consumer.ack_wait_s,
        max_deliver=consumer.max_deliver,
        max_ack_pending=consumer.max_ack_pending,
    )


async def declare(js: JetStreamContext, pipeline: PipelineConfig, ledger: LedgerConfig) -> None:
    """Create or update every stream, consumer and bucket. Safe to run from many processes."""
    for config in streams(pipeline):
        await _declare_stream(js, config)
    for consumer in [*push_consumers(pipeline).values(), ledger_consumer(pipeline, ledger)]:
        await _declare_consumer(js, consumer.stream, push_consumer_config(consumer))
    for bucket in buckets(pipeline):
        await _declare_bucket(js, bucket)


async def declare_as(identity: Settings, router: RouterConfig) -> None:
    """Connect as `identity` (the setup identity) and declare everything: with least-privilege
    identities, the step before the services start (`up`, compose)."""
    nc = await nats.connect(**connection.nats_options(identity))
    try:
        await declare(nc.jetstream(), router.pipeline, router.ledger)
    finally:
        await nc.close()


async def latest_values(js: JetStreamContext, bucket: str) -> dict[str, bytes]:
    """Each key's latest value in a KV bucket (deleted, purged, expired and empty ones left
    out), the keys listed from the bucket's stream. Not KeyValue.keys(): its ordered consumer
    may end the listing before the first key arrives and report an empty bucket (nats-py 2.16:
    10-37 calls in 1,000 here while keys were written). A missing bucket has none. The server
    details at most 100,000 subjects: far more than these buckets hold."""
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    try:
        info = await js.stream_info(stream, subjects_filter=f"{prefix}>")
    except NotFoundError:
        return {}
    listed = list(info.state.subjects or {})
    found = await asyncio.gather(*(js.get_last_msg(stream, subject) for subject in listed),
                                 return_exceptions=True)
    values = {}
    for subject, msg in zip(listed, found, strict=True):
        if isinstance(msg, NotFoundError):  # expired since it was listed
            continue
        if isinstance(msg, BaseException):
            raise msg
        if msg.data:  # an empty one is a deletion's marker
            values[subject.removeprefix(prefix)] = msg.data
    return values


def buckets(pipeline: PipelineConfig) -> list[KeyValueConfig]:
    return [
        KeyValueConfig(bucket=subjects.HOPS_BUCKET, ttl=HOP_DEDUP_WINDOW_S, history=1,
                       max_bytes=pipeline.hops_max_bytes, replicas=pipeline.stream_replicas),
        KeyValueConfig(bucket=subjects.REQUESTS_BUCKET, ttl=pipeline.dedup_window_s, history=1,
                       max_bytes=pipeline.requests_max_bytes,
                       replicas=pipeline.stream_replicas),
        KeyValueConfig(bucket=subjects.HEALTH_BUCKET, ttl=15, history=1,
                       max_bytes=HEALTH_MAX_BYTES, replicas=pipeline.stream_replicas),
    ]


async def _declare_bucket(js: JetStreamContext, config: KeyValueConfig) -> None:
    """create_key_value does not change an existing bucket: its stream is updated instead."""
    try:
        await js.create_key_value(config)
    except BadRequestError:
        stream = (await js.stream_info(f"KV_{config.bucket}")).config
        stream.max_bytes, stream.max_age = config.max_bytes, config.ttl
        await _declare_stream(js, stream)


async def _declare_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None, "every stream of ours is named"
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            pass  # another process created it a moment ago: fall through to update
    try:
        await js.update_stream(config)
    except BadRequestError as exc:
        # An immutable setting (retention, storage) changed: keep the stream, say so loudly.
        log.warning("stream.update_refused", stream=config.name, reason=exc.description)


async def _declare_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, config)
    except BadRequestError as exc:
        log.warning("consumer.update_refused", consumer=config.durable_name,
                    reason=exc.description)


def main() -> None:
    """`python -m shared.topology`: declare as this process's settings say (compose)."""
    from shared.config import config, settings
    from shared.runtime import command_line

    command_line("shared.topology", "Declares the router's JetStream streams, consumers and "
                 "buckets, as the settings and the configuration say, then exits.")
    logs.configure(settings().log_level, settings().log_format)
    asyncio.run(declare_as(settings(), config()))


if __name__ == "__main__":
    main()
