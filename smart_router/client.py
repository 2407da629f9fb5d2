"""What the command line does over NATS, as plain functions: the same calls a program of yours
would make with nats-py (request on router.v1.chat, JetStream publish on router.v1.jobs...)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats import nuid
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from shared import connection, health, jsonl, outcomes, payload, subjects
from shared.config import Settings
from shared.messages import TOKEN_RE

CONNECT_TIMEOUT_S = 2.0
# A command is short-lived: one retry, soon, then a clear error. nats-py's own default retries for
# minutes (allow_reconnect=False does not stop the first connect from retrying: 61 tries, 120 s).
RECONNECT_ATTEMPTS = 1
RECONNECT_WAIT_S = 0.25
HEALTH_TIMEOUT_S = 2.0


async def connect(settings: Settings) -> Client:
    """A connection that fails fast and quietly: nats-py's default error callback logs a
    traceback for every failed attempt; here the cause goes into one message instead.
    Servers, credentials and TLS come from the settings (shared/connection.py)."""
    errors: list[BaseException] = []

    async def remember(exc: BaseException) -> None:
        errors.append(exc)

    options = connection.nats_options(settings)
    try:
        return await nats.connect(
            **options, error_cb=remember,
            connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=RECONNECT_ATTEMPTS,
            reconnect_time_wait=RECONNECT_WAIT_S,
        )
    except Exception as exc:
        where = connection.redact(options["servers"])
        # Over TLS a refusal may be followed by a broken pipe: the refusal is the cause.
        refused = [e for e in errors if "authorization" in _reason(e).lower()]
        if refused:
            raise ConnectionError(f"NATS at {where} refused these credentials "
                                  f"({_reason(refused[0])}): see NATS_USER / NATS_CREDS / "
                                  "NATS_TOKEN, or ROUTER_DATA_DIR for `up`'s") from None
        cause = errors[-1] if errors else exc
        raise ConnectionError(f"cannot reach NATS at {where} ({_reason(cause)}): "
                              "is the router running (`smart-router up`)?") from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def check_id(value: str, what: str) -> str:
    """Job and request ids become NATS subject tokens: a bad one would read or write elsewhere."""
    if not TOKEN_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-128 letters, digits, '_' or '-'")
    return value


async def request(nc: Client, subject: str, payload: dict, timeout: float) -> dict:
    try:
        msg = await nc.request(subject, json.dumps(payload).encode(), timeout=timeout)
    except nats.errors.NoRespondersError:
        raise ConnectionError(f"no service answers on {subject}: is the router running?") from None
    except nats.errors.TimeoutError:
        raise TimeoutError(f"no reply on {subject} within {timeout:g} s") from None
    return json.loads(msg.data)


class ResultTenants(dict[str, str]):
    """Under which tenant each request's result comes (its results subject's token): the
    submission's own, kept once, unless its line named another (open mode, the admin
    identity): another tenant's job of the same name may answer the same request_ids."""

    def __init__(self, own: str) -> None:
        super().__init__()
        self.own = own

    def __missing__(self, request_id: str) -> str:
        return self.own


@dataclass
class Submission:
    job_id: str
    request_ids: list[str] = field(default_factory=list)  # every line sent, in file order
    result_tenants: ResultTenants = field(
        default_factory=lambda: ResultTenants(subjects.tenant_token(None)))
    fresh: list[str] = field(default_factory=list)  # the ones JetStream took as new
    duplicate_lines: list[dict] = field(default_factory=list)  # {line, request_id}: not run again
    invalid: list[dict] = field(default_factory=list)  # {line, error}: not sent

    @property
    def submitted(self) -> int:
        return len(self.fresh)

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_lines)

    def summary(self) -> dict:
        return {"job_id": self.job_id, "submitted": self.submitted,
                "duplicates": self.duplicates, "duplicate_lines": self.duplicate_lines,
                "invalid": self.invalid}


_Line = tuple[int, str, bytes, str]  # line number, request_id, body, Nats-Msg-Id
BATCH_LINES = 512  # parsed in a thread at a time
BATCH_BYTES = 4 << 20


def job_id_for(path: Path, sha256: str) -> str:
    """The same file gives the same job id, so re-submitting it runs nothing twice: its name's
    stem and the start of the SHA-256 (hex) of its content."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)[:40] or "job"
    return f"{stem}-{sha256[:12]}"


def scan(path: Path, source: Path | None = None) -> tuple[str, int]:
    """A file's SHA-256 (hex) and its number of non-blank lines, read a chunk at a time; a
    ValueError with the line number (in `source`, by default `path`) when a byte is not
    UTF-8."""
    digest = hashlib.sha256()
    lines = sum(1 for _ in jsonl.numbered_lines_from(path, digest, str(source or path)))
    return digest.hexdigest(), lines


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reading, target.open("wb") as writing:
        shutil.copyfileobj(reading, writing, jsonl.CHUNK)


async def submit(
    nc: Client,
    path: Path,
    job_id: str | None,
    progress: Callable[[int, int], None],
    in_flight: int = 256,
    tenant: str | None = None,
) -> Submission:
    """Publish one job per line to router.v1.jobs (router.v1.jobs.<tenant> for a client
    identity) with Nats-Msg-Id = <job_id>.<request_id>.<digest of the tenant>.

    Each line's job_id is set to the job's; a line without request_id gets one from its line
    number. Lines that are not valid requests are reported with their number, not sent; lines
    whose id JetStream has seen within its dedup window (the same file sent again) are reported
    as duplicates. Ids are scoped by job: two jobs never collide.

    The file is read twice, a chunk at a time, never whole: first to hash it (the job id), count
    its lines and check it is all UTF-8 (else nothing is sent); then line by line as the
    `in_flight` publishers take them: memory holds the lines being sent, as many waiting and a
    batch being parsed (BATCH_LINES, BATCH_BYTES), plus one request id per line (160-250 bytes).
    `progress(done, total)`: total is the lines that may still be sent, the file's non-blank
    lines less the bad ones found so far; the last call is (all sent, all sent).
    """
    if await asyncio.to_thread(path.is_file):
        return await _submit(nc, path, path, job_id, progress, in_flight, tenant)
    # A pipe (/dev/stdin, say) gives its lines once only: copied aside, it is read twice.
    with tempfile.TemporaryDirectory(prefix="smart-router-submit-") as folder:
        copy = Path(folder) / "input.jsonl"
        await asyncio.to_thread(_copy, path, copy)
        return await _submit(nc, path, copy, job_id, progress, in_flight, tenant)


async def _submit(nc: Client, path: Path, readable: Path, job_id: str | None,
                  progress: Callable[[int, int], None], in_flight: int, tenant: str | None
                  ) -> Submission:
    sha256, lines = await asyncio.to_thread(scan, readable, path)
    submission = Submission(check_id(job_id, "job id") if job_id else job_id_for(path, sha256),
                            result_tenants=ResultTenants(subjects.tenant_token(tenant)))
    subject = subjects.jobs(tenant) if tenant else subjects.JOBS
    reread = hashlib.sha256()
    lines_read = jsonl.numbered_lines_from(readable, reread, str(path))
    jobs = _jobs(lines_read, submission, subject, nc.max_payload, tenant)
    waiting: asyncio.Queue[_Line | None] = asyncio.Queue(in_flight)
    publishers = max(1, min(in_flight, lines))
    reading: asyncio.Future[list[_Line]] | None = None  # a batch being parsed in a thread
    js = nc.jetstream()
    done = 0
    shown = (0, 0)

    def total() -> int:
        return max(lines - len(submission.invalid), done)

    async def reader() -> None:
        """Parses the next lines in a thread while the publishers send the last ones."""
        nonlocal reading
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(_take, jobs))
            try:
                batch = await asyncio.shield(reading)  # cancelled, the thread ends its batch
            except ValueError as exc:  # a byte that was UTF-8 in the first reading
                raise _changed(path, submission.job_id, f" ({exc})") from None
            if not batch:
                break
            for line in batch:
                await waiting.put(line)
        for _ in range(publishers):
            await waiting.put(None)

    async def publisher() -> None:
        """One of `in_flight`, each taking the next line when its last is stored: no task per
        line (a million lines made a million tasks at once)."""
        nonlocal done, shown
        while (line := await waiting.get()) is not None:
            line_no, request_id, body, msg_id = line
            ack = await _publish(js, subject, body, msg_id)
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                # nats-py's request (asyncio.wait_for) drops a cancellation that comes with its
                # reply: taking another line would wait for ever on a queue no one fills.
                raise asyncio.CancelledError
            if ack.duplicate:
                submission.duplicate_lines.append({"line": line_no, "request_id": request_id})
            else:
                submission.fresh.append(request_id)
            done += 1
            shown = (done, total())
            progress(*shown)

    try:  # the first failure stops the other publishers: the count below is then final
        async with asyncio.TaskGroup() as group:
            group.create_task(reader())
            for _ in range(publishers):
                group.create_task(publisher())
    except* APIError as refused:  # the jobs stream full (its max_bytes), or JetStream refusing
        reason = getattr(refused.exceptions[0], "description", refused.exceptions[0])
        raise ConnectionError(
            f"the router's job queue refused a line ({reason}) "
            f"after {len(submission.fresh) + submission.duplicates} of {total()} were "
            f"stored: send the file again later with --job {submission.job_id} (what is stored "
            "is not run twice)") from None
    except* Exception as failed:
        raise failed.exceptions[0] from None
    finally:
        if reading is not None:  # the generator cannot be closed while a thread runs it
            await asyncio.wait([reading])
            if not reading.cancelled():
                reading.exception()  # retrieved: its reader may have been cancelled first
        jobs.close()
        lines_read.close()  # and the file with it
    if shown != (done, done):  # bad lines after the last good one were read after its ack
        progress(done, done)
    if reread.hexdigest() != sha256:
        raise _changed(path, submission.job_id)
    submission.duplicate_lines.sort(key=lambda d: d["line"])
    return submission


def _changed(path: Path, job_id: str, detail: str = "") -> ValueError:
    return ValueError(f"{path} changed while it was being sent{detail}: send it again with "
                      f"--job {job_id} once it is complete (what is stored is not run twice)")


def _take(jobs: Iterator[_Line]) -> list[_Line]:
    """The next lines to send, up to BATCH_LINES or BATCH_BYTES of bodies; [] at the end."""
    batch: list[_Line] = []
    size = 0
    for line in jobs:
        batch.append(line)
        size += len(line[2])
        if len(batch) == BATCH_LINES or size >= BATCH_BYTES:
            break
    return batch


def _jobs(lines: Iterator[tuple[int, str]], submission: Submission, subject: str,
          max_payload: int, tenant: str | None) -> Generator[_Line, None, None]:
    """Each good line of the file, ready to publish; the bad ones go to submission.invalid,
    the good ones' request ids to submission.request_ids."""
    first_line: dict[str, int] = {}
    for line_no, line in lines:
        try:
            job = _job(line, submission.job_id, line_no, first_line)
            body = json.dumps(job).encode()
            msg_id = job_msg_id(job["job_id"], job["request_id"], tenant or job.get("tenant"))
            payload.check(max_payload, subject, body, {subjects.MSG_ID: msg_id})
        except (ValueError, payload.TooLarge) as exc:
            submission.invalid.append({"line": line_no, "error": str(exc)})
            continue
        first_line[job["request_id"]] = line_no
        submission.request_ids.append(job["request_id"])
        # As the router names it: a line with a tenant that is no name is refused, and its
        # refusal goes to the results of no tenant.
        token = subjects.tenant_token(tenant or outcomes.name_or_none(job.get("tenant")))
        if token != submission.result_tenants.own:
            submission.result_tenants[job["request_id"]] = token
        yield line_no, job["request_id"], body, msg_id


def _job(line: str, job_id: str, line_no: int, first_line: dict[str, int]) -> dict:
    """One line as a job of this batch, or a ValueError saying what is wrong with it."""
    try:
        job = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if not isinstance(job, dict):
        raise ValueError("not a JSON object")
    job["job_id"] = job_id
    request_id = job.setdefault("request_id", f"{job_id}-{line_no}")
    if not isinstance(request_id, str) or not TOKEN_RE.fullmatch(request_id):
        raise ValueError("request_id must be 1-128 letters, digits, '_' or '-'")
    if request_id in first_line:
        raise ValueError(f"request_id {request_id!r} is already on line {first_line[request_id]}")
    return job


def job_msg_id(job_id: str, request_id: str, tenant: object) -> str:
    """A job's JetStream dedup id: a request_id sent again in the same job by the same tenant
    is a duplicate (edited or not: the router keeps its first answer); in another job, or for
    another tenant, it is not. JetStream dedups across the whole jobs stream, so the tenant's
    digest keeps two tenants' jobs of the same name from dropping each other's lines. The
    tenant as the line gives it, whatever its type: the classifier refuses a wrong one."""
    digest = hashlib.sha256(json.dumps(tenant).encode()).hexdigest()[:12]
    return f"{job_id}.{request_id}.{digest}"


async def _publish(js: JetStreamContext, subject: str, body: bytes, msg_id: str) -> PubAck:
    try:
        return await js.publish(subject, body, headers={subjects.MSG_ID: msg_id})
    except NoStreamResponseError:
        raise ConnectionError(f"no stream stores {subjects.JOBS}: is the router running?") from None


def chat_subject(tenant: str | None) -> str:
    """Where to ask: a client identity's own tenant subject, else the shared one."""
    return subjects.chat(tenant) if tenant else subjects.CHAT


def feedback_subject(tenant: str | None) -> str:
    """Where to give feedback: a client identity's own tenant subject, else the shared one."""
    return subjects.feedback(tenant) if tenant else subjects.FEEDBACK


def results_subject(job_id: str, tenant: str | None) -> str:
    """A job's results: under the tenant when it is known, else under any tenant (open mode or
    the admin identity, which may read them all)."""
    if tenant:
        return subjects.results(tenant, job_id)
    return f"{subjects.RESULTS_PREFIX}.*.{job_id}"


async def _results_subscription(nc: Client, subject: str) -> JetStreamContext.PushSubscription:
    """An ordered consumer on the results stream, named so that its filter is in the API
    subject: a client identity's permission allows only its own tenant's filter there."""
    try:
        return await nc.jetstream().subscribe(
            subject, stream=subjects.RESULTS_STREAM, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            config=ConsumerConfig(name=f"results-{nuid.NUID().next().decode()}"))
    except NotFoundError:
        raise ConnectionError("the results stream does not exist: has the router run?") from None


async def _matching(sub: JetStreamContext.PushSubscription) -> int:
    """Messages the consumer's filter matches: those still pending and those the server has
    pushed already (a push consumer starts delivering at once)."""
    info = await sub.consumer_info()
    pushed = info.delivered.consumer_seq if info.delivered else None
    return (info.num_pending or 0) + (pushed or 0)


async def stored_results(nc: Client, job_id: str, tenant: str | None = None) -> int:
    """How many results the job has in the results stream (0 for a job never seen)."""
    sub = await _results_subscription(nc, results_subject(job_id, tenant))
    try:
        return await _matching(sub)
    finally:
        await sub.unsubscribe()


async def results(
    nc: Client, job_id: str, *, follow: bool = False, expect: set[str] | None = None,
    idle_timeout: float = 5.0, tenant: str | None = None,
    result_tenants: ResultTenants | None = None,
) -> AsyncIterator[dict]:
    """The job's results, oldest first, one per tenant and request_id. Stops when the stream
    has no more, or with a non-empty `expect` when every expected request_id has its result;
    `follow` never stops. A lost connection ends it with nats.errors.ConnectionClosedError,
    never a hang.

    Read across tenants (`tenant` None: open mode, the admin identity), results of several
    tenants' jobs of the same name come together: each is labelled with its tenant's token
    (`tenant`), and with `result_tenants` (a submission's) only the request's own count."""
    pending = set(expect or ())
    waiting = follow or bool(pending)
    seen: set[tuple[str, str]] = set()
    sub = await _results_subscription(nc, results_subject(job_id, tenant))
    try:
        if not waiting and not await _matching(sub):
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=None if waiting else idle_timeout)
            except nats.errors.TimeoutError:
                return
            result = json.loads(msg.data)
            request_id = result.get("request_id")
            token = msg.subject.split(".")[-2]  # router.v1.results.<tenant>.<job>
            # Not another tenant's request of the same id, in its job of this name:
            if result_tenants is None or result_tenants[request_id] == token:
                if (token, request_id) not in seen:
                    seen.add((token, request_id))
                    yield result if tenant else {**result, "tenant": token}
                pending.discard(request_id)
            if follow:
                continue
            if (not pending) if expect else msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def service_health(nc: Client) -> dict:
    """What the services answer on router.v1.health (any identity may ask); when none answers,
    what their heartbeats say (open mode and the admin identity may read them)."""
    with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return json.loads((await nc.request(subjects.HEALTH, b"", timeout=HEALTH_TIMEOUT_S)).data)
    try:
        return await health.snapshot(nc.jetstream(timeout=HEALTH_TIMEOUT_S))
    except Exception as exc:  # no right to read them (a tenant's identity), or no answer
        return health.unreadable(f"{type(exc).__name__}: {exc}")
