"""What the command line does over NATS, as plain functions: the same calls a program of yours
would make with nats-py (request on router.v1.chat, JetStream publish on router.v1.jobs...)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, PubAck
from nats.js.errors import NoStreamResponseError, NotFoundError

from shared import health, jsonl, subjects
from shared.messages import TOKEN_RE

CONNECT_TIMEOUT_S = 2.0
# A command is short-lived: one retry, soon, then a clear error. nats-py's own default retries for
# minutes (allow_reconnect=False does not stop the first connect from retrying: 61 tries, 120 s).
RECONNECT_ATTEMPTS = 1
RECONNECT_WAIT_S = 0.25


async def connect(url: str) -> Client:
    """A connection that fails fast and quietly: nats-py's default error callback logs a
    traceback for every failed attempt; here the last error goes into one message instead."""
    last_error: list[BaseException] = []

    async def remember(exc: BaseException) -> None:
        last_error[:] = [exc]

    try:
        return await nats.connect(
            servers=[u.strip() for u in url.split(",")], error_cb=remember,
            connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=RECONNECT_ATTEMPTS,
            reconnect_time_wait=RECONNECT_WAIT_S,
        )
    except Exception as exc:
        cause = last_error[0] if last_error else exc
        raise ConnectionError(f"cannot reach NATS at {url} ({_reason(cause)}): "
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


@dataclass
class Submission:
    job_id: str
    request_ids: list[str] = field(default_factory=list)  # every line sent, in file order
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


def job_id_for(path: Path, content: bytes) -> str:
    """The same file gives the same job id, so re-submitting it runs nothing twice."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)[:40] or "job"
    return f"{stem}-{hashlib.sha256(content).hexdigest()[:12]}"


async def submit(
    nc: Client,
    path: Path,
    job_id: str | None,
    progress: Callable[[int, int], None],
    in_flight: int = 256,
) -> Submission:
    """Publish one job per line to router.v1.jobs with Nats-Msg-Id = <job_id>.<request_id>.

    Each line's job_id is set to the job's; a line without request_id gets one from its line
    number. Lines that are not valid requests are reported with their number, not sent; lines
    whose id JetStream has seen within its dedup window (the same file sent again) are reported
    as duplicates. Ids are scoped by job: two jobs never collide.
    """
    content = await asyncio.to_thread(path.read_bytes)
    submission = Submission(check_id(job_id, "job id") if job_id else job_id_for(path, content))
    jobs: list[tuple[int, dict]] = []
    first_line: dict[str, int] = {}
    for line_no, line in jsonl.numbered_lines(content, str(path)):
        try:
            job = _job(line, submission.job_id, line_no, first_line)
        except ValueError as exc:
            submission.invalid.append({"line": line_no, "error": str(exc)})
            continue
        first_line[job["request_id"]] = line_no
        jobs.append((line_no, job))
    submission.request_ids = [job["request_id"] for _, job in jobs]
    js = nc.jetstream()
    gate = asyncio.Semaphore(in_flight)
    done = 0

    async def publish(line_no: int, job: dict) -> None:
        nonlocal done
        async with gate:
            ack = await _publish(js, job)
        if ack.duplicate:
            submission.duplicate_lines.append({"line": line_no, "request_id": job["request_id"]})
        else:
            submission.fresh.append(job["request_id"])
        done += 1
        progress(done, len(jobs))

    await asyncio.gather(*(publish(line_no, job) for line_no, job in jobs))
    submission.duplicate_lines.sort(key=lambda d: d["line"])
    return submission


def _job(line: str, job_id: str, line_no: int, first_line: dict[str, int]) -> dict:
    """One line as a job of this batch, or a ValueError saying what is wrong with it."""
    try:
        job = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(job, dict):
        raise ValueError("not a JSON object")
    job["job_id"] = job_id
    request_id = job.setdefault("request_id", f"{job_id}-{line_no}")
    if not isinstance(request_id, str) or not TOKEN_RE.fullmatch(request_id):
        raise ValueError("request_id must be 1-128 letters, digits, '_' or '-'")
    if request_id in first_line:
        raise ValueError(f"request_id {request_id!r} is already on line {first_line[request_id]}")
    return job


def job_msg_id(job_id: str, request_id: str) -> str:
    """A job's JetStream dedup id: scoped by its job, so the same request_id in two jobs runs
    in both."""
    return f"{job_id}.{request_id}"


async def _publish(js: JetStreamContext, job: dict) -> PubAck:
    try:
        return await js.publish(subjects.JOBS, json.dumps(job).encode(),
                                headers={subjects.MSG_ID: job_msg_id(job["job_id"],
                                                                     job["request_id"])})
    except NoStreamResponseError:
        raise ConnectionError(f"no stream stores {subjects.JOBS}: is the router running?") from None


async def stored_results(nc: Client, job_id: str) -> int:
    """How many results the job has in the results stream (0 for a job never seen)."""
    subject = subjects.results(job_id)
    try:
        info = await nc.jetstream().stream_info(subjects.RESULTS_STREAM, subjects_filter=subject)
    except NotFoundError:
        raise ConnectionError("the results stream does not exist: has the router run?") from None
    return (info.state.subjects or {}).get(subject, 0)


async def results(
    nc: Client, job_id: str, *, follow: bool = False, expect: set[str] | None = None,
    idle_timeout: float = 5.0,
) -> AsyncIterator[dict]:
    """The job's results, oldest first, one per request_id. Stops when the stream has no more,
    or with a non-empty `expect` when every expected request_id has its result; `follow` never
    stops. A lost connection ends it with nats.errors.ConnectionClosedError, never a hang."""
    pending = set(expect or ())
    waiting = follow or bool(pending)
    if not waiting and not await stored_results(nc, job_id):
        return
    seen: set[str] = set()
    sub = await nc.jetstream().subscribe(subjects.results(job_id), ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if waiting else idle_timeout)
            except nats.errors.TimeoutError:
                return
            result = json.loads(msg.data)
            request_id = result.get("request_id")
            if request_id not in seen:
                seen.add(request_id)
                yield result
            pending.discard(request_id)
            if follow:
                continue
            if (not pending) if expect else msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def service_health(nc: Client) -> dict:
    js = nc.jetstream()
    try:
        kv = await js.key_value(subjects.HEALTH_BUCKET)
    except Exception:
        return {"ok": False, "services": {s: {"up": False, "instances": []}
                                          for s in health.SERVICES}}
    return await health.snapshot(kv)
