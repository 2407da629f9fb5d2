"""NATS subjects, streams and consumer names. The `router.v1.*` public ones are contracts (see
DESIGN.md); `router.v1.pipeline.*` and the KV buckets are internal."""

CHAT = "router.v1.chat"
JOBS = "router.v1.jobs"
RESULTS_PREFIX = "router.v1.results"
STATS = "router.v1.stats"
HEALTH = "router.v1.health"

DISPATCH = "router.v1.pipeline.dispatch"
SCORE = "router.v1.pipeline.score"
DONE_PREFIX = "router.v1.pipeline.done"

EVENTS_PREFIX = "router.v1.events"
REQUEST_EVENTS = f"{EVENTS_PREFIX}.request"
ATTEMPT_EVENTS = f"{EVENTS_PREFIX}.attempt"
DEAD_LETTER_EVENTS = f"{EVENTS_PREFIX}.dead_letter"

JOBS_STREAM = "ROUTER_JOBS"
PIPELINE_STREAM = "ROUTER_PIPELINE"
RESULTS_STREAM = "ROUTER_RESULTS"
EVENTS_STREAM = "ROUTER_EVENTS"
ADVISORIES_STREAM = "ROUTER_ADVISORIES"

# JetStream's own advisory, published when a message is given up after its last delivery.
MAX_DELIVERIES_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

HOPS_BUCKET = "router_hops"
REQUESTS_BUCKET = "router_requests"
HEALTH_BUCKET = "router_health"

MSG_ID = "Nats-Msg-Id"


def results(job_id: str) -> str:
    return f"{RESULTS_PREFIX}.{job_id}"


def done(instance: str) -> str:
    """Where the stage that answers an online request tells the classifier that admitted it."""
    return f"{DONE_PREFIX}.{instance}"


def max_deliveries(stream: str, consumer: str) -> str:
    return f"{MAX_DELIVERIES_PREFIX}.{stream}.{consumer}"
