"""NATS subjects, streams and consumer names. The `router.v1.*` public ones are contracts (see
DESIGN.md); `router.v1.pipeline.*` and the KV buckets are internal."""

import hashlib
import re

CHAT = "router.v1.chat"
JOBS = "router.v1.jobs"
RESULTS_PREFIX = "router.v1.results"
STATS = "router.v1.stats"
FEEDBACK = "router.v1.feedback"
HEALTH = "router.v1.health"

DISPATCH = "router.v1.pipeline.dispatch"
SCORE = "router.v1.pipeline.score"
DONE_PREFIX = "router.v1.pipeline.done"
CANCEL_PREFIX = "router.v1.cancel"
CANCELS = f"{CANCEL_PREFIX}.>"

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
# The tenant of a request on the shared chat subject, as the gateway names it from the API key:
# the classifier counts a tenant's online requests against its share of admission before it
# reads their bodies. Only the gateway and admin identities may publish there.
TENANT_HEADER = "Smart-Router-Tenant"


# A tenant as one subject token: a name of letters, digits, '_' and '-' (not starting with '_')
# is itself; any other name is hashed, and no tenant at all is NO_TENANT. Permissions name
# these tokens, so a client identity's subjects and inbox are its tenant's alone.
TENANT_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NO_TENANT = "_none"


def tenant_token(tenant: str | None) -> str:
    if tenant is None:
        return NO_TENANT
    if TENANT_TOKEN_RE.fullmatch(tenant):
        return tenant
    # surrogatepass: a lone surrogate from a salvaged body must hash, not raise.
    return "_h" + hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def results(tenant: str | None, job_id: str) -> str:
    """A batch job's results subject: under its tenant, so a client reads only its own."""
    return f"{RESULTS_PREFIX}.{tenant_token(tenant)}.{job_id}"


def with_tenants(subject: str) -> tuple[str, str]:
    """A subject and its per-tenant ones: the shared one (open mode, admin) and those client
    identities use, whose last token is their tenant."""
    return subject, f"{subject}.*"


def chat(tenant: str) -> str:
    """Where a client identity asks: its tenant is vouched for by the server's permissions."""
    return f"{CHAT}.{tenant_token(tenant)}"


def jobs(tenant: str) -> str:
    return f"{JOBS}.{tenant_token(tenant)}"


def feedback(tenant: str) -> str:
    """Where a client identity gives its verdict on an answer: its own tenant's requests only."""
    return f"{FEEDBACK}.{tenant_token(tenant)}"


def inbox_prefix(tenant: str) -> str:
    """A client identity's reply inboxes: nobody else may subscribe under it."""
    return f"_INBOX.{tenant_token(tenant)}"


def tenant_of(subject: str) -> str | None:
    """The tenant a per-tenant chat, jobs or feedback subject names; None on the shared
    subjects."""
    for base in (CHAT, JOBS, FEEDBACK):
        if subject.startswith(base + "."):
            return subject[len(base) + 1:]
    return None


def own_inbox(tenant: str | None, reply_to: str | None) -> bool:
    """A tenant's own subject may only be answered in that tenant's inboxes: a reply must not
    become a way to publish into another tenant's."""
    return tenant is None or (reply_to or "").startswith(inbox_prefix(tenant) + ".")


def cancel(reply_to: str) -> str:
    """Where a streaming caller says it has gone (its reply subject names the request): the
    dispatcher streaming the answer stops the provider call."""
    return f"{CANCEL_PREFIX}.{reply_to}"


def cancelled(cancel_subject: str) -> str:
    """The reply subject a cancel names (the inverse of `cancel`)."""
    return cancel_subject.removeprefix(f"{CANCEL_PREFIX}.")


def done(instance: str) -> str:
    """Where the stage that answers an online request tells the classifier that admitted it."""
    return f"{DONE_PREFIX}.{instance}"


def max_deliveries(stream: str, consumer: str) -> str:
    return f"{MAX_DELIVERIES_PREFIX}.{stream}.{consumer}"
