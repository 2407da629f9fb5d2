"""The `smart-router` command. Reports go to stdout as JSON (exactly one document, or JSONL for
streams of results, with --json); logs and progress go to stderr."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any

import nats.errors
import typer

from shared import jsonl, logs, subjects
from shared.config import MAX_DAYS, settings

from . import client, up_auth
from .errors import CommandFailed
from .plain_help import PlainHelpCommand

app = typer.Typer(
    name="smart-router",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
command = functools.partial(app.command, cls=PlainHelpCommand)
api_key_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="The HTTP gateway's API keys, each naming a tenant.")
app.add_typer(api_key_app, name="api-key")
api_key_command = functools.partial(api_key_app.command, cls=PlainHelpCommand)

JsonFlag = Annotated[bool, typer.Option("--json", help="One compact JSON document on stdout.")]
Timeout = Annotated[float, typer.Option(metavar="SECONDS", help="How long to wait for the answer.")]


# The commands that talk to NATS: without NATS credentials, they use `up`'s (up_auth.py).
NATS_COMMANDS = {"ask", "submit", "results", "stats", "feedback", "health", "bench"}


def main() -> None:
    try:
        configured = settings()
    except ValueError as exc:  # an unreadable NATS_IDENTITY_FILE: the command cannot run
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(configured.log_level, configured.log_format)
    app(prog_name="smart-router")  # the same name in help when run as `python -m smart_router.cli`


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"smart-router {importlib.metadata.version('smart-router')}")
        raise typer.Exit()


@app.callback()
def _app(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Routes LLM prompts to the cheapest model tier that answers them well."""
    if ctx.invoked_subcommand in NATS_COMMANDS:
        with _one_line_errors():
            if up_auth.use_admin_identity():
                settings.cache_clear()


@contextlib.contextmanager
def _one_line_errors(unreachable: int = 2) -> Iterator[None]:
    """A failure is one line on stderr and a non-zero exit, never a traceback: 1 when the answer
    is a failure (CommandFailed), `unreachable` when NATS cannot be reached, 2 when the command
    could not run (timeout, bad input), 130 on Ctrl-C."""
    try:
        yield
    except CommandFailed as exc:
        _fail(exc, 1)
    except ConnectionError as exc:
        _fail(exc, unreachable)
    except (TimeoutError, RuntimeError, ValueError, OSError, nats.errors.Error) as exc:
        _fail(exc, 2)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        if not _database_unreachable(exc):
            raise
        from shared.db import first_line

        _fail(ConnectionError(f"cannot reach PostgreSQL at DATABASE_URL: {first_line(exc)}"),
              unreachable)


def _database_unreachable(exc: Exception) -> bool:
    """A PostgreSQL connection that failed (an error of the server itself, a deadlock say, has
    a SQLSTATE), without importing psycopg for commands that never load it."""
    psycopg = sys.modules.get("psycopg")
    return (psycopg is not None and isinstance(exc, psycopg.OperationalError)
            and exc.sqlstate is None)


def _fail(exc: BaseException, code: int) -> None:
    typer.echo(f"error: {str(exc) or type(exc).__name__}", err=True)
    raise typer.Exit(code) from None


def _run(work: Coroutine[Any, Any, int | None], unreachable: int = 2) -> None:
    """Run a command's coroutine; its result is the exit code."""
    with _one_line_errors(unreachable):
        code = asyncio.run(work)
    raise typer.Exit(code or 0)


def _emit(document: Any, compact: bool) -> None:
    typer.echo(json.dumps(document, separators=(",", ":")) if compact
               else json.dumps(document, indent=2, ensure_ascii=False))


@command()
def up(
    data_dir: Annotated[Path, typer.Option(
        metavar="DIR", envvar=up_auth.DATA_DIR_VARIABLE,
        help="Where the embedded NATS and PostgreSQL keep their data, and the NATS "
        "credentials the other commands use.")] = up_auth.DEFAULT_DATA_DIR,
    config: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Router TOML, merged over the defaults.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Run the embedded NATS open (no users): anyone who reaches it can "
        "read and forge every message. For local experiments only.")] = False,
    tenant: Annotated[list[str] | None, typer.Option(
        metavar="NAME", help="Make a NATS client identity for this tenant too "
        "(<data dir>/nats-auth/client-NAME.env), besides 'default'; repeat for more.")] = None,
) -> None:
    """Run the whole stack on this machine. NATS, PostgreSQL, the five services and the
    dashboard; Ctrl-C stops it."""
    from shared import nats_auth

    from .stack import Stack

    try:
        nats_auth.with_demo(tenant or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from None
    _run(Stack(data_dir=data_dir.resolve(), config_path=config, insecure=insecure,
               tenants=tenant or []).run())


@command()
def ask(
    prompt: Annotated[str, typer.Argument(help="The prompt to send.")],
    tier: Annotated[str | None, typer.Option(help="Start at this tier, not the classifier's.")]
    = None,
    max_tier: Annotated[str | None, typer.Option(
        metavar="TIER", help="Escalate no higher than this tier.")] = None,
    tenant: Annotated[str | None, typer.Option(
        metavar="NAME", help="Who the cost is booked to in the ledger.")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        metavar="N", help="Cap on the answer's length, in tokens.")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(
        metavar="USD", help="Budget for the whole request, escalations included.")] = None,
    timeout: Timeout = 90.0,
    as_json: JsonFlag = False,
) -> None:
    """Send one request and print the reply JSON. It goes on router.v1.chat; exit 1 on an
    error reply."""
    request = {"prompt": prompt, "tier": tier, "max_tier": max_tier, "tenant": tenant,
               "max_tokens": max_tokens, "max_cost_usd": max_cost_usd}

    async def work() -> int:
        nc = await client.connect(settings())
        try:
            reply = await client.request(
                nc, client.chat_subject(settings().router_tenant),
                {k: v for k, v in request.items() if v is not None}, timeout
            )
        finally:
            await nc.close()
        _emit(reply, as_json)
        return 1 if "error" in reply else 0

    _run(work())


@command()
def submit(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", exists=True, dir_okay=False, help="JSONL, one request per line.")],
    job: Annotated[str | None, typer.Option(
        metavar="ID", help="Job id (default: from the file's name and content).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Then print each new request's result (JSONL) as it arrives.")] = False,
    timeout: Timeout = 600.0,
) -> None:
    """Send a JSONL file of requests as a batch job. One job per line on router.v1.jobs;
    re-submitting a file runs nothing twice. Bad lines and duplicate request_ids are reported
    by line number; exit 1 when a line is bad or nothing could be sent."""

    def progress(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            typer.echo(f"published {done}/{total}", err=True)

    async def work() -> int:
        nc = await client.connect(settings())
        try:
            submission = await client.submit(nc, file, job, progress,
                                             tenant=settings().router_tenant)
            _report_lines(submission)
            if wait:
                typer.echo(json.dumps(submission.summary()), err=True)
            else:
                _emit(submission.summary(), compact=True)
            if not submission.request_ids:
                raise CommandFailed(f"{file} has no request to send")
            if wait and not await _print_results(nc, submission, timeout):
                return 1
        finally:
            await nc.close()
        return 1 if submission.invalid else 0

    _run(work())


def _report_lines(submission: client.Submission) -> None:
    for problem in submission.invalid:
        typer.echo(f"line {problem['line']}: {problem['error']}", err=True)
    if submission.invalid:  # the fixed file's own job id would run every line again
        typer.echo(f"fix these lines in place (none added or removed: a line's id is its "
                   f"number) and send the file again with --job {submission.job_id}: "
                   "the lines sent now are not run twice", err=True)
    for duplicate in submission.duplicate_lines:
        typer.echo(f"line {duplicate['line']}: request_id {duplicate['request_id']!r} was sent "
                   "before (dedup window): not run again", err=True)


async def _print_results(nc: client.Client, submission: client.Submission,
                         timeout: float) -> bool:
    """Print the job's results until each newly sent request has one; False when a duplicate
    line has no result under this job (it was sent by an earlier run and its result has aged
    out of the results stream, or it is still running)."""
    expected, seen = set(submission.fresh), set()
    try:
        async with asyncio.timeout(timeout):
            async for result in client.results(nc, submission.job_id, expect=expected,
                                               tenant=settings().router_tenant,
                                               result_tenants=submission.result_tenants):
                seen.add(result.get("request_id"))
                _emit(result, compact=True)
    except TimeoutError:
        raise TimeoutError(
            f"{len(expected - seen)} of {len(expected)} results still missing after {timeout:g} s;"
            f" `smart-router results {submission.job_id}` prints them when they come") from None
    elsewhere = [d["line"] for d in submission.duplicate_lines if d["request_id"] not in seen]
    if elsewhere:
        typer.echo(f"no result under job {submission.job_id} for {len(elsewhere)} duplicate "
                   f"line(s) ({_numbers(elsewhere)}): sent by an earlier run whose results "
                   "have aged out, or still running", err=True)
    return not elsewhere


def _numbers(values: list[int], shown: int = 10) -> str:
    listed = ", ".join(map(str, values[:shown]))
    return listed if len(values) <= shown else f"{listed} and {len(values) - shown} more"


@command()
def results(
    job: Annotated[str, typer.Argument(help="The job id `submit` printed.")],
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep printing new results until Ctrl-C.")] = False,
) -> None:
    """Print a batch job's results, one JSON object per line. They come from
    router.v1.results.<tenant>.<job>; exit 1 for a job with no results."""

    async def work() -> None:
        nc = await client.connect(settings())
        try:
            tenant = settings().router_tenant
            if not await client.stored_results(nc, job, tenant):
                if not follow:
                    raise CommandFailed(f"unknown job {job!r}: no results under "
                                        f"{client.results_subject(job, tenant)}")
                typer.echo(f"no results for job {job!r} yet; waiting (Ctrl-C stops)", err=True)
            async for result in client.results(nc, job, follow=follow, tenant=tenant):
                _emit(result, compact=True)
        finally:
            await nc.close()

    with _one_line_errors():
        client.check_id(job, "job id")
    _run(work())


@command()
def stats(
    days: Annotated[int, typer.Option(metavar="N", help="Window, in days (today included).")]
    = 30,
    timeout: Timeout = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Costs and savings from the ledger. The dashboard's figures, from router.v1.stats."""

    async def work() -> int:
        nc = await client.connect(settings())
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


@command()
def feedback(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID",
                                              help="The request_id of the reply.")],
    score: Annotated[float, typer.Argument(
        metavar="SCORE", help="0 (useless) to 1 (just right).")],
    tenant: Annotated[str | None, typer.Option(
        metavar="NAME", help="The request's tenant (a client identity's own by default).")]
    = None,
    comment: Annotated[str | None, typer.Option(
        metavar="TEXT", help="A short note (500 characters at most).")] = None,
    timeout: Timeout = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Record your verdict on an answer in the ledger: a label `train-router --from-ledger`
    learns from. Sent on router.v1.feedback; exit 1 when it is refused."""
    body = {"request_id": request_id, "score": score, "tenant": tenant, "comment": comment}

    async def work() -> int:
        nc = await client.connect(settings())
        try:
            reply = await client.request(
                nc, client.feedback_subject(settings().router_tenant),
                {k: v for k, v in body.items() if v is not None}, timeout)
        finally:
            await nc.close()
        if "error" in reply:
            error = reply["error"]
            raise CommandFailed(f"{error['code']}: {error['message']}")
        _emit(reply, as_json)
        return 0

    with _one_line_errors():
        client.check_id(request_id, "request id")
    _run(work())


@command()
def health(as_json: JsonFlag = False) -> None:
    """Which services are up, and the ledger's backlog (exit 1 when a service is down or the
    ledger is stuck: events wait and none was committed for `ledger.stuck_after_s`)."""

    async def work() -> int:
        nc = await client.connect(settings())
        try:
            report = await client.service_health(nc)
        finally:
            await nc.close()
        if as_json:
            _emit(report, compact=True)
            return 0 if report["ok"] else 1
        for name, service in report["services"].items():
            state = f"up ({len(service['instances'])})" if service["up"] else "DOWN"
            if service.get("stuck"):
                state += ", STUCK"
            backlog = service.get("backlog")
            if backlog:
                last = ("never" if backlog["last_commit_at"] is None
                        else f"{backlog['no_commit_for_s']:.0f} s ago")
                state += (f"  {backlog['pending'] or 0:,} pending, "
                          f"{backlog['ack_pending'] or 0:,} unacked, "
                          f"{backlog['redelivered'] or 0:,} redelivered; last commit {last}; "
                          f"writers {', '.join(backlog['writers'])}")
            typer.echo(f"{name:<12} {state}")
        for problem in report.get("problems", []):
            typer.echo(problem)
        return 0 if report["ok"] else 1

    _run(work(), unreachable=1)


@command()
def classify(
    prompt: Annotated[str | None, typer.Argument(help="One prompt (or use --input).")] = None,
    input_file: Annotated[Path | None, typer.Option(
        "--input", metavar="FILE", exists=True, dir_okay=False,
        help="JSONL with a `prompt` per line.")] = None,
    backend: Annotated[str | None, typer.Option(
        metavar="NAME", help="Use only this backend (ollama, local or rules); exit 1 when it "
        "does not answer.")] = None,
    router_model: Annotated[Path | None, typer.Option(
        metavar="PATH", exists=True, dir_okay=False,
        help="Also print this router model's strong_score and the row it routes to.")] = None,
) -> None:
    """Classify prompts here, without the router. One JSON object per prompt on stdout
    (difficulty, confidence, backend, latency_ms). Without --backend, the configured chain;
    Ollama is skipped when nothing listens at OLLAMA_HOST."""
    from .classify import classify_lines

    if (prompt is None) == (input_file is None):
        raise typer.BadParameter("give a PROMPT or --input FILE.jsonl")
    with _one_line_errors():
        lines = (jsonl.read_lines(input_file) if input_file
                 else [(1, json.dumps({"prompt": prompt}))])
    _run(classify_lines(lines, backend, lambda result: _emit(result, compact=True),
                        router_model))


@command(name="eval")
def evaluate(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", exists=True, dir_okay=False,
        help="Labelled JSONL: prompt, label, optional lang.")],
    as_json: JsonFlag = False,
) -> None:
    """Measure the local classifier on a labelled set. Accuracy per language, latency, memory
    and the effect of the cost/quality knob."""
    from .classify import evaluate_file

    with _one_line_errors():
        report = evaluate_file(file)
    if as_json:
        _emit(report, compact=True)
    else:
        from .classify import render_report

        typer.echo(render_report(report))


@command(name="eval-router")
def eval_router(
    file: Annotated[Path, typer.Argument(
        metavar="DATA.jsonl", exists=True, dir_okay=False,
        help="Outcome data: prompt and scores (or weak and strong) per line.")],
    router_model: Annotated[Path | None, typer.Option(
        metavar="PATH", exists=True, dir_okay=False,
        help="A router model from train-router, measured beside the others.")] = None,
    weak: Annotated[str | None, typer.Option(metavar="KEY", help="The weak side's score key.")]
    = None,
    strong: Annotated[str | None, typer.Option(
        metavar="KEY", help="The strong side's score key.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """RouteLLM's routing metrics (APGR, CPT(50%), CPT(80%)) of the difficulty tag's ranking,
    a router model, 10 seeded random routers and the oracle, on outcome data."""
    from services.classifier.router_eval import render

    from .routing import evaluate as evaluate_router

    with _one_line_errors():
        report = evaluate_router(file, router_model, weak, strong)
    typer.echo(json.dumps(report, separators=(",", ":")) if as_json else render(report))


@command(name="train-router")
def train_router(
    file: Annotated[Path | None, typer.Argument(
        metavar="[DATA.jsonl]", exists=True, dir_okay=False,
        help="Outcome data to learn from (or --from-ledger).")] = None,
    out: Annotated[Path, typer.Option(metavar="PATH", help="Where to write the model.")]
    = Path("router-model.npz"),
    weak: Annotated[str | None, typer.Option(metavar="KEY", help="The weak side's score key.")]
    = None,
    strong: Annotated[str | None, typer.Option(
        metavar="KEY", help="The strong side's score key.")] = None,
    features: Annotated[str, typer.Option(
        metavar="SET", help="any, or only lexical (no e5: fastest), embedding or both.")]
    = "any",
    from_ledger: Annotated[bool, typer.Option(
        "--from-ledger", help="Learn from production instead: the ledger's escalation "
        "verdicts and users' feedback on requests whose features it kept "
        "(ledger.store_features), read from DATABASE_URL.")] = False,
    since: Annotated[int, typer.Option(
        metavar="DAYS", min=1, max=MAX_DAYS,
        help="With --from-ledger: the requests of the last DAYS days.")]
    = 30,
    as_json: JsonFlag = False,
) -> None:
    """Learn strong_score from outcome data: settings chosen by cross-validated APGR, the
    nested estimate reported, a versioned model file written (name it in
    classifier.router_model)."""
    from .routing import render_training, train_and_write, train_from_ledger_and_write

    with _one_line_errors():
        if (file is None) == (not from_ledger):
            raise ValueError("give DATA.jsonl or --from-ledger (one of them)")
        from services.classifier.router_model import RouterModel

        RouterModel.check_writable(out)
        if file is not None:
            result = train_and_write(file, out, weak, strong, features)
        else:
            from shared.config import load_config

            cfg = load_config(settings().router_config)
            result = train_from_ledger_and_write(
                settings().database_url, cfg.tiers[cfg.top_tier_index].name, since, out)
    typer.echo(json.dumps(result, separators=(",", ":")) if as_json else render_training(result))


@command(name="eval-escalation")
def eval_escalation(
    file: Annotated[Path | None, typer.Argument(
        metavar="FILE", exists=True, dir_okay=False,
        help="Labelled answers (JSONL: prompt, answer, finish_reason, label weak|good, or "
        "right|wrong for recall of wrong answers per signal).")] = None,
    emulator: Annotated[str | None, typer.Option(
        metavar="URL",
        help="Instead, ask the emulator at this URL: its market of models answers --prompts.")]
    = None,
    prompts: Annotated[Path | None, typer.Option(
        metavar="FILE", exists=True, dir_okay=False, help="JSONL of prompts for --emulator.")]
    = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Also run [escalation.verify]'s paid checks (verifier, consistency) "
        "and report recall of wrong answers, false escalations and added cost per signal.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Precision and recall of the escalator's "weak" verdict; with labels right|wrong or
    --verify, each signal's recall of wrong answers, false escalations and added cost."""
    from .escalation import evaluate

    with _one_line_errors():
        report = asyncio.run(evaluate(file, emulator, prompts, verify))
    if as_json:
        _emit(report, compact=True)
    else:
        from .escalation import render

        typer.echo(render(report))


@command()
def report(
    emulator: Annotated[str | None, typer.Option(
        metavar="URL", help="Also the escalator's figures on the emulator's market at this URL "
        "(`up` prints it).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The README's classifier, escalation and routing figures, computed again: the classifier
    on the test split, escalation on the labelled answers, routing on the outcome data. Speed
    and savings come from `smart-router bench`."""
    from .report import build, render

    with _one_line_errors():
        document = asyncio.run(build(emulator))
    if as_json:
        _emit(document, compact=True)
    else:
        typer.echo(render(document))


@command()
def bench(
    mode: Annotated[str, typer.Option(
        help="online (request-reply), batch (jobs), mixed (both), or ledger (write rate).")]
    = "online",
    requests: Annotated[int, typer.Option(metavar="N", help="Requests to send.")] = 2000,
    concurrency: Annotated[int, typer.Option(
        metavar="N", help="Online requests in flight at most.")] = 200,
    rate: Annotated[float | None, typer.Option(
        metavar="PER_SECOND",
        help="Online arrivals per second (open loop) instead of back-to-back callers.")] = None,
    emulator: Annotated[str | None, typer.Option(
        metavar="URL", help="The provider emulator's URL.")] = None,
    provider_latency_ms: Annotated[float | None, typer.Option(
        metavar="MS", help="Set the emulator's latency for the run (needs --emulator).")] = None,
    via: Annotated[str, typer.Option(
        help="nats, or http: the same online load through the HTTP gateway and over NATS in "
        "one run, and the gateway's overhead.")] = "nats",
    stream: Annotated[bool, typer.Option(
        "--stream", help="With --via http: streamed completions, and time to first token.")]
    = False,
    gateway: Annotated[str | None, typer.Option(
        metavar="URL", help="The gateway for --via http (default http://127.0.0.1:GATEWAY_PORT, "
        "8000).")] = None,
    unique: Annotated[bool, typer.Option(
        "--unique/--no-unique", help="Every prompt new, as in real traffic (the classifier's "
        "cache never answers); --no-unique cycles the test split, for the warm-cache figure.")]
    = True,
    mix: Annotated[str | None, typer.Option(
        metavar="S/M/C", help="Instead, the savings report: prompts of the test split in these "
        "shares of simple/medium/complex (e.g. 70/20/10), routed and always-top-tier; cost, "
        "baseline, savings, escalations and the emulator's quality verdicts (needs "
        "--emulator).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Load-test the running stack. Prints throughput, latency percentiles, the router's
    overhead, the ledger's lag and CPU ms per request of each process (the emulator's apart);
    with --mix, what routing saves and what it costs in quality."""
    if via not in ("nats", "http") or (stream and via != "http"):
        raise typer.BadParameter("--via is nats or http; --stream needs --via http")
    if via == "http":
        from .bench import http

        _run(_bench(http.run(gateway, mode, requests, concurrency, rate, stream, emulator,
                             unique), as_json))
    from .bench.run import run, savings

    if mix is not None:
        from .bench.mix import render

        _run(_report(savings(mix, requests, concurrency, emulator), as_json, render))
    else:
        _run(_bench(run(mode, requests, concurrency, rate, emulator, provider_latency_ms,
                        unique), as_json))


async def _bench(work: Coroutine[Any, Any, dict], as_json: bool) -> None:
    _emit(await work, compact=as_json)


async def _report(work: Coroutine[Any, Any, dict], as_json: bool,
                  render: Callable[[dict], str]) -> None:
    report = await work
    if as_json:
        _emit(report, compact=True)
    else:
        typer.echo(render(report))


@command()
def tiers(
    config: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Router TOML, merged over the defaults (default: ROUTER_CONFIG).")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """The tiers in use and what a typical request costs on each model. Models in the order
    they are tried, with their list price and their share of the baseline model's price."""
    from shared.config import load_config

    from .tiers import describe, render

    with _one_line_errors():
        report = describe(load_config(config or settings().router_config))
    if as_json:
        _emit(report, compact=True)
    else:
        typer.echo(render(report))


KeysFile = Annotated[Path | None, typer.Option(
    "--file", metavar="PATH", envvar="GATEWAY_API_KEYS_FILE",
    help="The gateway's key file.")]


def _keys_file(file: Path | None) -> Path:
    if file is None:
        raise ValueError("name the key file: --file PATH or GATEWAY_API_KEYS_FILE")
    return file


@api_key_command(name="add")
def api_key_add(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Who the key's requests are "
                                          "booked to.")],
    file: KeysFile = None,
) -> None:
    """Make a key for TENANT and print it, once. Only its SHA-256 goes into the file (created
    0600); a gateway reading the file takes the key at once."""
    from services.gateway.api_keys import add_key

    with _one_line_errors():
        path = _keys_file(file)
        key, entry = add_key(path, tenant)
    typer.echo(key)
    typer.echo(f"added key {entry.key_id} for tenant {tenant!r} to {path}; keep the key: it is "
               "shown only this once", err=True)


@api_key_command(name="list")
def api_key_list(file: KeysFile = None, as_json: JsonFlag = False) -> None:
    """The keys in the file: tenant, key id and when each was made (never a key)."""
    from services.gateway.api_keys import read_entries

    with _one_line_errors():
        entries = read_entries(_keys_file(file))
    rows = [{"tenant": e.tenant, "key_id": e.key_id, "created": e.created} for e in entries]
    if as_json:
        _emit(rows, compact=True)
    else:
        for row in rows:
            typer.echo(f"{row['tenant']:<20} {row['key_id']}  {row['created']}")


@command()
def migrate(as_json: JsonFlag = False) -> None:
    """Apply the ledger's schema migrations to DATABASE_URL. Safe to re-run."""
    from shared import db  # psycopg: only this command needs it

    with _one_line_errors():
        applied = db.migrate(settings().database_url)
    if as_json:
        _emit({"applied": applied}, compact=True)
    else:
        typer.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date",
                   err=True)


if __name__ == "__main__":
    main()
