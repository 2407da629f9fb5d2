"""`submit` reads its file a chunk at a time, never whole: its memory follows the publishers'
window (and one request id per line), not the file's size; the job id of a file is what it was
when the file was read whole; a byte that is not UTF-8 anywhere still sends nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from shared import jsonl, subjects
from smart_router import client
from smart_router.embedded import EmbeddedNats
from tests.harness import ROOT

# --- the job id and the lines, read a chunk at a time ----------------------------------------

def test_a_files_job_id_is_its_name_and_the_sha256_of_its_content(tmp_path, monkeypatch):
    """Re-submitting a file must keep its job id (else every line runs again): the value is
    pinned, and read in chunks of 7 bytes it is the same."""
    path = tmp_path / "nightly batch.jsonl"
    content = b'{"prompt": "hi"}\n\n{"prompt": "caf\xc3\xa9"}\r\n'
    path.write_bytes(content)

    sha256, lines = client.scan(path)
    monkeypatch.setattr(jsonl, "CHUNK", 7)

    assert client.job_id_for(path, sha256) == "nightly-batch-f3ce3637a7e3"
    assert sha256 == hashlib.sha256(content).hexdigest()
    assert client.scan(path) == (sha256, lines) and lines == 2


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_lines_read_a_chunk_at_a_time_are_the_lines_of_the_whole_content(tmp_path, monkeypatch,
                                                                         chunk):
    content = ("\ufeff{\"a\": 1}\r\n\n  \n{\"b\": \"x\u2028y\u0085z\"}\n\u3000\n"
               "{\"c\": \"\u00e9\u20ac\U0001f600\"}").encode()
    path = tmp_path / "lines.jsonl"
    path.write_bytes(content)
    monkeypatch.setattr(jsonl, "CHUNK", chunk)
    digest = hashlib.sha256()

    read = list(jsonl.numbered_lines_from(path, digest))

    assert read == list(jsonl.numbered_lines(content, str(path))) == [
        (1, '{"a": 1}'), (4, '{"b": "x\u2028y\u0085z"}'), (6, '{"c": "\u00e9\u20ac\U0001f600"}')]
    assert digest.hexdigest() == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("chunk", [1, 4, 1 << 20])
def test_a_bad_byte_is_named_by_its_line_and_its_offset_in_the_file(tmp_path, monkeypatch,
                                                                    chunk):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{}\n\n\xff\n')
    monkeypatch.setattr(jsonl, "CHUNK", chunk)

    with pytest.raises(ValueError) as bad:
        list(jsonl.numbered_lines_from(path))

    # Read whole, it was "line 1 ... offset 4": the offset counted after the BOM, and the
    # newlines before it counted up to that offset in the file with its BOM.
    assert str(bad.value) == f"{path}, line 3: not UTF-8 text (a bad byte at offset 7)"


# --- against a NATS of its own, nothing draining the jobs stream ------------------------------

@pytest.fixture(scope="module")
def jobs_nats(tmp_path_factory: pytest.TempPathFactory):
    server = EmbeddedNats.start(tmp_path_factory.mktemp("submit-nats"))
    yield server.url
    server.stop()


@pytest.fixture
async def nc(jobs_nats: str) -> AsyncIterator[nats.NATS]:
    """A connection to that NATS, its jobs stream new and empty."""
    connection = await nats.connect(jobs_nats)
    js = connection.jetstream()
    try:
        await js.delete_stream(subjects.JOBS_STREAM)
    except NotFoundError:
        pass
    await js.add_stream(StreamConfig(name=subjects.JOBS_STREAM,
                                     subjects=list(subjects.with_tenants(subjects.JOBS)),
                                     duplicate_window=600))
    yield connection
    await connection.close()


async def stored(nc: nats.NATS) -> int:
    return (await nc.jetstream().stream_info(subjects.JOBS_STREAM)).state.messages


def write_lines(path: Path, count: int, prompt: str = "What is {} plus 1?") -> bytes:
    content = "".join(json.dumps({"prompt": prompt.format(i)}) + "\n"
                      for i in range(count)).encode()
    path.write_bytes(content)
    return content


CHILD = """
import asyncio, json, sys
from pathlib import Path
import nats
from smart_router import client

def kib(field):
    # VmHWM, the peak, is this program's own: ru_maxrss keeps the pytest process's, forked.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

async def main():
    nc = await nats.connect(sys.argv[1])
    before = kib("VmRSS")  # now, not the peak so far: importing may have peaked higher
    submission = await client.submit(nc, Path(sys.argv[2]), None, lambda done, total: None)
    peak = kib("VmHWM")
    await nc.close()
    print(json.dumps({"job_id": submission.job_id, "submitted": submission.submitted,
                      "growth_kib": peak - before}))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_submit_holds_the_publishers_window_not_the_file(nc, jobs_nats, tmp_path):
    """100,000 lines of 230 bytes (23 MB). Read whole, the old submit grew by 193 MB here (a
    job dict, its JSON and its text per line: ~1.9 KB a line); streamed it grows by 25 MB,
    mostly the request ids it keeps (~250 bytes a line, whatever the line's length). The
    bound, 60 MB, is 2.4 times that and under a third of the old growth."""
    lines = 100_000
    path = tmp_path / "big.jsonl"
    content = write_lines(path, lines, "Question {} " + "x" * 200)

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD, jobs_nats, str(path)], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child["submitted"] == lines == await stored(nc)
    assert child["job_id"] == f"big-{hashlib.sha256(content).hexdigest()[:12]}"
    assert child["growth_kib"] < 60 * 1024, child


@pytest.mark.slow
async def test_a_bad_byte_late_in_the_file_sends_nothing(nc, tmp_path):
    path = tmp_path / "late.jsonl"
    assert len(write_lines(path, 40_000)) > jsonl.CHUNK  # the bad byte is in a later chunk
    with path.open("ab") as file:
        file.write(b'{"prompt": "\xff"}\n{"prompt": "after"}\n')

    with pytest.raises(ValueError, match=r"late\.jsonl, line 40001: not UTF-8 text"):
        await client.submit(nc, path, None, lambda done, total: None)
    assert await stored(nc) == 0


@pytest.mark.slow
async def test_progress_counts_down_the_bad_lines_and_ends_on_all_sent(nc, tmp_path):
    """The total is the non-blank lines less the bad ones found so far; the last call is
    (sent, sent) even when bad lines follow the last good one."""
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"prompt": f"q{i}"}) for i in range(1_200)]
    path.write_text("\n".join([*good[:600], "not json", "", *good[600:], "[1]", "{"]) + "\n")
    calls: list[tuple[int, int]] = []

    submission = await client.submit(nc, path, f"job-{uuid.uuid4().hex[:8]}",
                                     lambda done, total: calls.append((done, total)),
                                     in_flight=8)

    totals = [total for _, total in calls]
    assert [i["line"] for i in submission.invalid] == [601, 1203, 1204]
    assert submission.submitted == 1_200 == len(submission.request_ids)
    assert [done for done, _ in calls][:1_200] == list(range(1, 1_201))
    assert calls[-1] == (1_200, 1_200) and calls.count((1_200, 1_200)) == 1
    assert totals == sorted(totals, reverse=True) and totals[0] <= 1_203


@pytest.mark.slow
async def test_a_file_that_changes_while_it_is_sent_fails_with_its_job(nc, tmp_path):
    """The job id is the content's first reading: lines that differ in the second are not that
    content. In-flight 1, the first ack comes before the second reading is past its first
    chunk; the line added then is read and sent, and the submit says what happened."""
    path = tmp_path / "growing.jsonl"
    write_lines(path, 30_000)

    def grow(done: int, total: int) -> None:
        if done == 1:
            with path.open("a") as file:
                file.write(json.dumps({"prompt": "added"}) + "\n")

    with pytest.raises(ValueError) as changed:
        await client.submit(nc, path, None, grow, in_flight=1)

    assert str(changed.value).startswith(f"{path} changed while it was being sent: send it "
                                         "again with --job growing-")


@pytest.mark.slow
async def test_a_bad_byte_that_appears_while_the_file_is_sent_ends_the_submit(nc, tmp_path):
    """The second reading meets a byte the first found UTF-8: before, the reader's error left
    publishers waiting for lines no one would send (a hang, in the review 2 runs of 2), and the
    message had no --job hint."""
    path = tmp_path / "spoiled.jsonl"
    assert len(write_lines(path, 40_000)) > jsonl.CHUNK  # the byte is in a later chunk

    def spoil(done: int, total: int) -> None:
        if done == 1:
            with path.open("r+b") as file:
                file.seek(-3, os.SEEK_END)
                file.write(b"\xff")

    with pytest.raises(ValueError) as changed:
        await asyncio.wait_for(client.submit(nc, path, None, spoil, in_flight=4), 60)

    assert str(changed.value).startswith(f"{path} changed while it was being sent (")
    assert "send it again with --job spoiled-" in str(changed.value)


async def test_lines_piped_in_are_sent(jobs_nats, nc, tmp_path):
    """A pipe gives its lines once: before, the second reading found none and submit failed
    saying the file had changed (`cat f | smart-router submit /dev/stdin`)."""
    path = tmp_path / "piped.jsonl"
    content = write_lines(path, 5)

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "smart_router.cli", "submit", "/dev/stdin"],
        input=content, capture_output=True, cwd=ROOT, timeout=60,
        env={**os.environ, "NATS_URL": jobs_nats, "PYTHONPATH": str(ROOT)})

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["submitted"] == 5 == await stored(nc)
