"""The `smart-router` command. Reports go to stdout as JSON (exactly one document, or JSONL for
streams of results, with --json); logs and progress go to stderr."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from shared import db, logs, subjects
from shared.config import settings

from . import client

app = typer.Typer(
    name="smart-router",
    help="Routes LLM prompts to the cheapest model tier that answers them well.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="One compact JSON document on stdout.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the answer.")]


def main() -> None:
    logs.configure(settings().log_level, settings().log_format)
    app()


def _run(work: Coroutine[Any, Any, int | None]) -> None:
    """Run a command; a failure is one clear line on stderr and a non-zero exit, no traceback."""
    try:
        code = asyncio.run(work)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code or 0)


def _emit(document: Any, compact: bool) -> None:
    typer.echo(json.dumps(document, separators=(",", ":")) if compact
               else json.dumps(document, indent=2, ensure_ascii=False))


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Embedded NATS/PostgreSQL data.")] = Path(".data"),
    config: Annotated[Path | None, typer.Option(help="Router TOML (merged over defaults).")] = None,
) -> None:
    """Run the whole stack here: NATS, PostgreSQL, the four services (Ctrl-C stops it)."""
    from .stack import Stack

    _run(Stack(data_dir=data_dir.resolve(), config_path=config).run())


@app.command()
def ask(
    prompt: str,
    tier: Annotated[str | None, typer.Option(help="Pin the starting tier.")] = None,
    max_tier: Annotated[str | None, typer.Option(help="Highest tier to escalate to.")] = None,
    tenant: Annotated[str | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    max_cost_usd: Annotated[float | None, typer.Option()] = None,
    timeout: Timeout = 90.0,
    as_json: JsonFlag = False,
) -> None:
    """Send one online request on router.v1.chat and print the reply JSON."""
    request = {"prompt": prompt, "tier": tier, "max_tier": max_tier, "tenant": tenant,
               "max_tokens": max_tokens, "max_cost_usd": max_cost_usd}

    async def work() -> int:
        nc = await client.connect(settings().nats_url)
        try:
            reply = await client.request(
                nc, subjects.CHAT, {k: v for k, v in request.items() if v is not None}, timeout
            )
        finally:
            await nc.close()
        _emit(reply, as_json)
        return 1 if "error" in reply else 0

    _run(work())


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of requests.")],
    job: Annotated[str | None, typer.Option(help="Job id (default: from the file).")] = None,
    wait: Annotated[bool, typer.Option(help="Print each result (JSONL) as it arrives.")] = False,
    timeout: Timeout = 600.0,
) -> None:
    """Publish one job per line to router.v1.jobs; re-submitting a file runs nothing twice."""

    def progress(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            typer.echo(f"published {done}/{total}", err=True)

    async def work() -> int:
        nc = await client.connect(settings().nats_url)
        try:
            submission = await client.submit(nc, file, job, progress)
            for problem in submission.invalid:
                typer.echo(f"line {problem['line']}: {problem['error']}", err=True)
            if not wait:
                _emit(submission.summary(), compact=True)
                return 1 if submission.invalid else 0
            typer.echo(json.dumps(submission.summary()), err=True)
            async with asyncio.timeout(timeout):
                async for result in client.results(nc, submission.job_id,
                                                   expect=set(submission.request_ids)):
                    _emit(result, compact=True)
        finally:
            await nc.close()
        return 1 if submission.invalid else 0

    _run(work())


@app.command()
def results(
    job: str,
    follow: Annotated[bool, typer.Option(help="Keep printing new results.")] = False,
) -> None:
    """Print a job's results from router.v1.results.<job>, one JSON object per line."""

    async def work() -> None:
        nc = await client.connect(settings().nats_url)
        try:
            async for result in client.results(nc, job, follow=follow):
                _emit(result, compact=True)
        finally:
            await nc.close()

    _run(work())


@app.command()
def stats(
    days: Annotated[int, typer.Option(help="Window, in days (today included).")] = 30,
    timeout: Timeout = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Cost summary from the ledger (router.v1.stats): the dashboard's figures."""

    async def work() -> int:
        nc = await client.connect(settings().nats_url)
        try:
            summary = await client.request(nc, subjects.STATS, {"days": days}, timeout)
        finally:
            await nc.close()
        if as_json or "error" in summary:
            _emit(summary, compact=True)
        else:
            from .render import stats as render_stats

            typer.echo(render_stats(summary))
        return 1 if "error" in summary else 0

    _run(work())


@app.command()
def health(as_json: JsonFlag = False) -> None:
    """Which services are up (exit 1 when one is down)."""

    async def work() -> int:
        nc = await client.connect(settings().nats_url)
        try:
            report = await client.service_health(nc)
        finally:
            await nc.close()
        if as_json:
            _emit(report, compact=True)
        else:
            for name, service in report["services"].items():
                state = f"up ({len(service['instances'])})" if service["up"] else "DOWN"
                typer.echo(f"{name:<12} {state}")
        return 0 if report["ok"] else 1

    _run(work())


@app.command()
def classify(
    prompt: Annotated[str | None, typer.Argument(help="One prompt (or use --input).")] = None,
    input_file: Annotated[Path | None, typer.Option(
        "--input", exists=True, dir_okay=False, help="JSONL with a `prompt` per line.")] = None,
    backend: Annotated[str | None, typer.Option(
        help="Use only this backend: ollama, local or rules.")] = None,
) -> None:
    """The classifier alone: one JSON object per prompt (difficulty, confidence, backend,
    latency_ms) on stdout."""
    from .classify import classify_lines

    if (prompt is None) == (input_file is None):
        raise typer.BadParameter("give a PROMPT or --input FILE.jsonl")
    lines = (input_file.read_text().splitlines() if input_file
             else [json.dumps({"prompt": prompt})])
    _run(classify_lines(lines, backend, lambda result: _emit(result, compact=True)))


@app.command(name="eval")
def evaluate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="Labelled JSONL: prompt, label, lang.")],
    as_json: JsonFlag = False,
) -> None:
    """Accuracy of the local classifier on a labelled set, per language, with latency, memory
    and the effect of the cost/quality knob."""
    from .classify import evaluate_file

    report = evaluate_file(file)
    if as_json:
        _emit(report, compact=True)
    else:
        from .classify import render_report

        typer.echo(render_report(report))


@app.command(name="eval-escalation")
def eval_escalation(
    file: Annotated[Path | None, typer.Argument(
        exists=True, dir_okay=False,
        help="Labelled answers (JSONL: prompt, answer, finish_reason, label weak|good).")] = None,
    emulator: Annotated[str | None, typer.Option(
        help="Instead, ask the emulator at this URL: its market of models answers --prompts.")]
    = None,
    prompts: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="JSONL of prompts for --emulator.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Precision and recall of the escalator's "weak" verdict."""
    from .escalation import evaluate

    report = asyncio.run(evaluate(file, emulator, prompts))
    if as_json:
        _emit(report, compact=True)
    else:
        from .escalation import render

        typer.echo(render(report))


@app.command()
def bench(
    mode: Annotated[str, typer.Option(
        help="online (request-reply), batch (jobs), mixed (both), or ledger (write rate).")]
    = "online",
    requests: Annotated[int, typer.Option(help="Requests to send.")] = 2000,
    concurrency: Annotated[int, typer.Option(help="Online requests in flight at most.")] = 200,
    rate: Annotated[float | None, typer.Option(
        help="Online arrivals per second (open loop) instead of back-to-back callers.")] = None,
    emulator: Annotated[str | None, typer.Option(help="The provider emulator's URL.")] = None,
    provider_latency_ms: Annotated[float | None, typer.Option(
        help="Set the emulator's latency for the run (needs --emulator).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Load benchmark against the running stack; prints throughput, latency percentiles, the
    router's overhead and the ledger's lag."""
    from .bench.run import run

    _run(_bench(run(mode, requests, concurrency, rate, emulator, provider_latency_ms), as_json))


async def _bench(work: Coroutine[Any, Any, dict], as_json: bool) -> None:
    _emit(await work, compact=as_json)


@app.command()
def migrate(as_json: JsonFlag = False) -> None:
    """Apply the ledger's schema migrations to DATABASE_URL (safe to re-run)."""
    applied = db.migrate(settings().database_url)
    if as_json:
        _emit({"applied": applied}, compact=True)
    else:
        typer.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date",
                   err=True)


if __name__ == "__main__":
    sys.exit(main())
