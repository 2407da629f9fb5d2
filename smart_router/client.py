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
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from shared import health, subjects


async def connect(url: str) -> Client:
    try:
        return await nats.connect(url, connect_timeout=3, max_reconnect_attempts=2)
    except Exception as exc:
        raise ConnectionError(f"cannot reach NATS at {url}: {exc}") from None


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
    submitted: int = 0
    duplicates: int = 0
    invalid: list[dict] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"job_id": self.job_id, "submitted": self.submitted,
                "duplicates": self.duplicates, "invalid": self.invalid}


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
    """Publish one job per line to router.v1.jobs with Nats-Msg-Id = request_id.

    Each line's job_id is set to the job's; a line without request_id gets one from its line
    number. Lines that are not JSON objects are reported, not sent.
    """
    content = await asyncio.to_thread(path.read_bytes)
    submission = Submission(job_id or job_id_for(path, content))
    js = nc.jetstream()
    lines = content.decode().splitlines()
    gate = asyncio.Semaphore(in_flight)

    async def publish(line_no: int, job: dict) -> None:
        async with gate:
            ack = await js.publish(subjects.JOBS, json.dumps(job).encode(),
                                   headers={subjects.MSG_ID: job["request_id"]})
        if ack.duplicate:
            submission.duplicates += 1
        else:
            submission.submitted += 1
        progress(submission.submitted + submission.duplicates, len(lines))

    tasks = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except ValueError:
            job = None
        if not isinstance(job, dict):
            submission.invalid.append({"line": line_no, "error": "not a JSON object"})
            continue
        job["job_id"] = submission.job_id
        if not isinstance(job.get("request_id"), str):
            job["request_id"] = f"{submission.job_id}-{line_no}"
        submission.request_ids.append(job["request_id"])
        tasks.append(publish(line_no, job))
    await asyncio.gather(*tasks)
    return submission


async def results(
    nc: Client, job_id: str, *, follow: bool = False, expect: set[str] | None = None,
    idle_timeout: float = 5.0,
) -> AsyncIterator[dict]:
    """The job's results, oldest first, one per request_id. Stops when the stream has no more,
    or with `expect` when every expected request_id has its result; `follow` never stops."""
    js = nc.jetstream()
    subject = subjects.results(job_id)
    waiting = follow or expect is not None
    try:
        info = await js.stream_info(subjects.RESULTS_STREAM, subjects_filter=subject)
    except NotFoundError:
        raise ConnectionError("the results stream does not exist: has the router run?") from None
    if not waiting and not (info.state.subjects or {}).get(subject):
        return
    seen: set[str] = set()
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if waiting else idle_timeout)
            except nats.errors.TimeoutError:
                return
            result = json.loads(msg.data)
            if result.get("request_id") not in seen:
                seen.add(result.get("request_id"))
                yield result
            if expect is not None and expect <= seen:
                return
            if not waiting and msg.metadata.num_pending == 0:
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
