"""The command line as a user meets it: exit codes, one clear line on stderr when something is
wrong (never a traceback), help that reads naturally, and JSONL read by newline only."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from smart_router import embedded

CLI = [sys.executable, "-m", "smart_router.cli"]
# Characters that str.splitlines() breaks on and that JSON keeps raw inside a string.
LINE_BREAKS_IN_STRINGS = "\u0085\u2028\u2029\x1c\x1d\x1e\x0b\x0c"


def run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LOG_LEVEL": "INFO", **env})


def assert_fails_with_one_line(done: subprocess.CompletedProcess, code: int, says: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("error: ") and says in done.stderr, done.stderr


def closed_port_url() -> str:
    return f"nats://127.0.0.1:{embedded.free_port()}"


def jsonl(path: Path, *rows: dict | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
                            + "\n" for r in rows), encoding="utf-8")
    return path


def results_of(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.split("\n") if line]


def summary_of(done: subprocess.CompletedProcess) -> dict:
    """`submit --wait` prints its summary on stderr, among the progress and problem lines."""
    return next(json.loads(line) for line in done.stderr.splitlines() if line.startswith("{"))


# --- the stack is down ---------------------------------------------------------------------

@pytest.mark.parametrize(("args", "code"), [(["ask", "hello"], 2), (["health"], 1),
                                            (["stats"], 2), (["results", "some-job"], 2)])
def test_with_the_stack_down_a_command_says_so_in_one_line(args, code):
    done = run(*args, NATS_URL=closed_port_url())

    assert_fails_with_one_line(done, code, "cannot reach NATS at nats://127.0.0.1:")


def test_with_the_database_down_migrate_says_so_in_one_line():
    done = run("migrate", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/x")

    assert_fails_with_one_line(done, 2, "cannot reach PostgreSQL at DATABASE_URL: connection ")


def test_a_key_value_database_url_is_refused_without_its_password():
    """yoyo reads URLs only; its error quoted the whole string, password included."""
    done = run("migrate", DATABASE_URL="host=127.0.0.1 port=1 user=u password=SECRET-PW dbname=x")

    assert "SECRET-PW" not in done.stdout + done.stderr
    assert_fails_with_one_line(done, 2, "DATABASE_URL must be a postgresql:// URL")


# --- help and version ----------------------------------------------------------------------

def test_help_reads_naturally():
    done = run("ask", "--help", COLUMNS="100")
    options = {line.split()[0]: line for line in done.stdout.splitlines()
               if line.strip().startswith("--")}

    assert done.returncode == 0
    assert "Usage: smart-router ask [OPTIONS] PROMPT\n" in done.stdout
    assert "<" not in done.stdout and "{" not in done.stdout  # no <str>/<bool> tags, no {prompt}
    assert options["--json"].split()[1] == "One"  # a flag takes no value
    for option, value in [("--tenant", "NAME"), ("--max-tokens", "N"),
                          ("--max-cost-usd", "USD"), ("--timeout", "SECONDS")]:
        assert options[option].split()[1] == value
        assert len(options[option].split()) > 3, f"{option} has no help"


def test_command_list_shows_whole_sentences():
    done = run("--help")
    listed = done.stdout.split("Commands:\n")[1].splitlines()

    assert done.returncode == 0
    assert [line for line in listed if "submit" in line.split()[:1]] == [
        "  submit           Send a JSONL file of requests as a batch job."]


def test_version():
    done = run("--version")

    assert done.returncode == 0
    assert done.stdout == f"smart-router {importlib.metadata.version('smart-router')}\n"


# --- ids are checked before anything is read ------------------------------------------------

@pytest.mark.parametrize("job", ["bad/id!", ">", "a.b", "x" * 129])
def test_results_rejects_a_job_id_that_is_not_a_subject_token(job):
    done = run("results", job, "--follow", NATS_URL=closed_port_url())

    assert_fails_with_one_line(done, 2, "invalid job id")


# --- classify and eval, no NATS --------------------------------------------------------------

def test_classify_only_ollama_without_ollama_fails_in_one_line():
    done = run("classify", "What is 2+2?", "--backend", "ollama",
               OLLAMA_HOST=f"127.0.0.1:{embedded.free_port()}")

    assert_fails_with_one_line(done, 1, "cannot reach Ollama at 127.0.0.1:")
    assert done.stdout == ""


def test_classify_only_ollama_answers_with_ollama_when_it_is_up(emulator):
    done = run("classify", "What is 2+2?", "--backend", "ollama", OLLAMA_HOST=emulator.base)

    assert done.returncode == 0, done.stderr
    assert results_of(done)[0]["backend"] == "ollama"


def test_classify_skips_an_ollama_that_is_not_there_without_trying_it():
    done = run("classify", "What is 2+2?", OLLAMA_HOST=f"127.0.0.1:{embedded.free_port()}")

    assert done.returncode == 0, done.stderr
    assert results_of(done)[0]["backend"] == "local"
    assert "ollama_unavailable" not in done.stderr  # no connection was tried: nothing to log


def test_classify_times_each_prompt_without_the_models_start_up(tmp_path):
    # A prompt the fast model is unsure of (it goes on to e5, whose engine takes ~1.6 s to load):
    # its latency_ms is the prompt's own, a few ms; 500 ms is a wide margin for a loaded machine.
    prompts = jsonl(tmp_path / "prompts.jsonl", {"prompt": "a\u2028b"}, {"prompt": "hi"})

    done = run("classify", "--input", str(prompts), "--backend", "local")

    assert done.returncode == 0, done.stderr
    assert [r["latency_ms"] < 500 for r in results_of(done)] == [True, True]


def test_classify_reads_jsonl_by_newline_only(tmp_path):
    prompts = jsonl(tmp_path / "prompts.jsonl",
                    {"id": "breaks", "prompt": f"Translate{LINE_BREAKS_IN_STRINGS}'cat' to French"},
                    "", {"id": "crlf", "prompt": "What is 7 times 8?"})
    prompts.write_bytes(prompts.read_bytes().replace(b"\n", b"\r\n"))

    done = run("classify", "--input", str(prompts), "--backend", "rules")

    assert done.returncode == 0, done.stderr
    assert [(r["id"], r["index"]) for r in results_of(done)] == [("breaks", 0), ("crlf", 2)]


def test_eval_reads_jsonl_by_newline_only_and_aligns_its_language_columns(tmp_path):
    labelled = jsonl(
        tmp_path / "labelled.jsonl",
        {"prompt": f"What is the capital{LINE_BREAKS_IN_STRINGS} of France?", "label": "simple",
         "lang": "en"},
        {"prompt": "What is 2+2?", "label": "complex", "lang": "xx"},  # labelled wrong on purpose
        {"prompt": "Convert 5 km to miles.", "label": "simple", "lang": "xx"},
    )

    done = run("eval", str(labelled), timeout=300)
    per_language = done.stdout.split("per language\n")[1].split("\n\n")[0].splitlines()

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("prompts 3 ")
    assert len(per_language) == 2
    assert len({line.index("(") for line in per_language}) == 1, per_language


def test_eval_names_the_line_that_is_not_labelled(tmp_path):
    labelled = jsonl(tmp_path / "labelled.jsonl", {"prompt": "hi", "label": "simple"}, "",
                     '{"prompt": "cut short', {"prompt": "hello"})

    done = run("eval", str(labelled))

    assert_fails_with_one_line(done, 2, "labelled.jsonl, line 3: invalid JSON")


# --- against the running router ----------------------------------------------------------------

def test_ask_prints_the_reply(stack):
    done = run("ask", "Name three primary colours.", "--json", NATS_URL=stack.nats_url)

    assert done.returncode == 0, done.stderr
    assert results_of(done)[0]["response"]


@pytest.mark.parametrize("content", ["", "\n\n", "[1, 2]\n"])
def test_submit_wait_with_nothing_to_send_ends_at_once(stack, tmp_path, content):
    empty = tmp_path / f"empty-{uuid.uuid4().hex[:8]}.jsonl"
    empty.write_text(content)

    done = run("submit", str(empty), "--wait", NATS_URL=stack.nats_url, timeout=60)

    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {empty} has no request to send"
    assert done.stdout == ""


def test_submit_reports_each_bad_line_and_still_runs_the_good_ones(stack, tmp_path):
    rid = f"good-{uuid.uuid4().hex[:8]}"
    batch = jsonl(tmp_path / "mixed.jsonl",
                  {"prompt": "What is 3 plus 4?", "request_id": rid},
                  '{"prompt": "cut sh',
                  '["a", "list"]',
                  {"prompt": "x", "request_id": "has spaces"},
                  {"prompt": f"Say{LINE_BREAKS_IN_STRINGS}hello"},
                  {"prompt": "again", "request_id": rid},
                  {"prompt": "y" * 2_000_000},  # over NATS' max_payload
                  "[" * 100_000 + "]" * 100_000)  # nested past the parser's depth

    done = run("submit", str(batch), "--wait", "--timeout", "60", NATS_URL=stack.nats_url)
    stderr = done.stderr.splitlines()

    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert stderr[0] == "published 2/2"
    assert stderr[1].startswith("line 2: invalid JSON: Unterminated string")
    assert stderr[2:5] == ["line 3: not a JSON object",
                           "line 4: request_id must be 1-128 letters, digits, '_' or '-'",
                           f"line 6: request_id '{rid}' is already on line 1"]
    # Before, the first of these two stopped the whole submit (its connection lost), the
    # second raised RecursionError; now each is a bad line with its number.
    assert stderr[5].startswith("line 7: a ") and "over the server's max_payload" in stderr[5]
    assert stderr[6] == "line 8: invalid JSON: nested too deeply"
    answers = results_of(done)
    assert {r["request_id"] for r in answers} == {rid, f"{summary_of(done)['job_id']}-5"}
    assert len(answers) == 2 and all("error" not in r for r in answers)


def test_the_same_request_id_in_two_jobs_runs_in_both(stack, tmp_path):
    shared_id = f"shared-{uuid.uuid4().hex[:8]}"
    first = jsonl(tmp_path / "first.jsonl",
                  {"prompt": "What is 1 plus 1?", "request_id": shared_id})
    second = jsonl(tmp_path / "second.jsonl", {"prompt": "What is 2 plus 2?"},
                   {"prompt": "What is 9 plus 9?", "request_id": shared_id})
    assert run("submit", str(first), "--wait", "--timeout", "60",
               NATS_URL=stack.nats_url).returncode == 0

    done = run("submit", str(second), "--wait", "--timeout", "60", NATS_URL=stack.nats_url)
    summary = summary_of(done)

    assert done.returncode == 0, done.stderr
    assert summary["duplicates"] == 0
    assert sorted(r["request_id"] for r in results_of(done)) == sorted(
        [f"{summary['job_id']}-1", shared_id])
    assert all("error" not in r for r in results_of(done))


def test_resubmitting_a_file_with_wait_prints_its_results_again(stack, tmp_path):
    batch = jsonl(tmp_path / f"again-{uuid.uuid4().hex[:8]}.jsonl", {"prompt": "What is 5 plus 5?"})
    once = run("submit", str(batch), "--wait", "--timeout", "60", NATS_URL=stack.nats_url)

    again = run("submit", str(batch), "--wait", "--timeout", "60", NATS_URL=stack.nats_url)

    assert once.returncode == 0 and again.returncode == 0, again.stderr
    assert results_of(again) == results_of(once)
    assert "was sent before" in again.stderr


def test_submit_wait_that_times_out_says_what_is_missing(stack, tmp_path):
    batch = jsonl(tmp_path / "slow.jsonl", {"prompt": f"What is {uuid.uuid4().int % 97} plus 1?"})

    done = run("submit", str(batch), "--wait", "--timeout", "0.001", NATS_URL=stack.nats_url)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 1 results still missing after 0.001 s")


def test_results_of_an_unknown_job_fail_and_a_known_one_prints(stack, tmp_path):
    batch = jsonl(tmp_path / f"known-{uuid.uuid4().hex[:8]}.jsonl", {"prompt": "What is 6 plus 6?"})
    submitted = run("submit", str(batch), "--wait", "--timeout", "60", NATS_URL=stack.nats_url)
    job_id = summary_of(submitted)["job_id"]

    unknown = run("results", "no-such-job", NATS_URL=stack.nats_url)
    known = run("results", job_id, NATS_URL=stack.nats_url)

    assert_fails_with_one_line(unknown, 1, "unknown job 'no-such-job'")
    assert known.returncode == 0, known.stderr
    assert results_of(known) == results_of(submitted)
