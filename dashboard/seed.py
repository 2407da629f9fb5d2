"""Fill a ledger database with realistic traffic, fast: `python -m dashboard.seed --requests N`.

Every row is drawn in SQL (generate_series and random()): a million requests take about 25 s on
two cores. The rows go through the ledger writer's own statements (staging tables, then insert
and roll up), so daily_usage and daily_latency agree with the raw rows as they do in production.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from services.ledger import writer
from shared import db, subjects
from shared.config import DIFFICULTIES, ModelRef, RouterConfig, config, settings
from shared.pricing import Pricer

# The traffic's shape: shares of difficulty, escalation, errors and fallbacks, and the tenants.
DIFFICULTY_SHARES = {"simple": 0.5, "medium": 0.3, "complex": 0.2}
ESCALATION_SHARE = 0.12
ERROR_SHARE = 0.02
FALLBACK_SHARE = 0.08
EMULATED_SHARE = 0.05
TENANTS = (("acme", 0.4), ("globex", 0.25), ("initech", 0.15), ("umbrella", 0.1), (None, 0.1))
# Error codes, with whether a provider call was made before the request failed.
ERRORS = (("invalid_request", False), ("budget_exceeded", False), ("timeout", True),
          ("no_provider_available", True), ("dead_letter", False))
WEAK_REASONS = ("hedging", "refusal", "truncation", "empty")

# Scratch tables, dropped at the end: both writers (requests, attempts) read the same draws.
_MODELS = """
CREATE UNLOGGED TABLE seed_models (
    tier_no int, tier text, model_no int, provider text, model text,
    in_price numeric, out_price numeric
)
"""

# One row per request with every random choice made, in time order (n-th request, n-th instant),
# so the inserts below append to the time indexes instead of splitting pages all over them.
_DRAWS = """
CREATE UNLOGGED TABLE seed_draws AS
WITH raw AS (
    SELECT n, random() AS u_age, random() AS u_kind, random() AS u_escalate,
           random() AS u_status, random() AS u_error, random() AS u_fallback,
           random() AS u_tenant, random() AS u_emulated, random() AS u_source, random() AS u_conf,
           -- standard normals by Box-Muller: PostgreSQL 15 has no random_normal()
           sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_latency,
           sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_input,
           sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_output
    FROM generate_series(1, %(requests)s) AS n
), shaped AS (
    SELECT raw.*,
           %(prefix)s || lpad(n::text, %(digits)s, '0') AS request_id,
           -- traffic grows over the window: the density of requests rises linearly to today
           %(now)s - %(days)s * (1 - sqrt((n - u_age) / %(requests)s)) * interval '1 day'
               AS finished_at,
           u_status < %(error_share)s AS failed,
           (%(error_codes)s::text[])[1 + floor(u_error * %(n_errors)s)::int] AS error_code,
           (%(difficulties)s::text[])[width_bucket(u_kind, %(difficulty_cuts)s::float8[])]
               AS difficulty_drawn,
           (%(tenants)s::text[])[width_bucket(u_tenant, %(tenant_cuts)s::float8[])] AS tenant,
           least(8000, 30 + round(exp(5.5 + 0.9 * z_input)))::int AS in_tokens,
           least(4000, 10 + round(exp(5.0 + 0.8 * z_output)))::int AS out_tokens
    FROM raw
), routed AS (
    SELECT shaped.*,
           (%(start_tiers)s::int[])[array_position(%(difficulties)s::text[], difficulty_drawn)]
               AS start_no
    FROM shaped
)
SELECT request_id, finished_at, tenant, u_conf, in_tokens, out_tokens,
       -- a request is emulated when the emulator answered one of its calls
       u_emulated < %(emulated_share)s AND (NOT failed OR error_code = ANY(%(calling_errors)s))
           AS emulated,
       CASE WHEN u_source < 0.7 THEN 'online' ELSE 'batch' END AS source,
       CASE WHEN u_source < 0.7 THEN NULL
            ELSE 'seed-' || to_char(finished_at AT TIME ZONE 'UTC', 'YYYYMMDD') END AS job_id,
       CASE WHEN failed THEN 'error' ELSE 'ok' END AS status,
       CASE WHEN failed THEN error_code END AS error_code,
       CASE WHEN failed AND error_code = 'invalid_request' THEN NULL
            ELSE difficulty_drawn END AS difficulty,
       start_no, escalated,
       CASE WHEN escalated THEN start_no + 1 ELSE start_no END AS served_no,
       CASE WHEN u_fallback < %(fallback_share)s
            THEN least(1, (%(models_per_tier)s::int[])[start_no + 1 + escalated::int] - 1)
            ELSE 0 END AS model_no,
       CASE WHEN NOT failed THEN 1 + escalated::int
            WHEN error_code = ANY(%(calling_errors)s::text[]) THEN 1 ELSE 0 END AS attempts,
       (%(weak_reasons)s::text[])[1 + floor(u_escalate / %(escalation_share)s * %(n_reasons)s)::int]
           AS weak_reason,
       CASE WHEN failed AND error_code = 'timeout' THEN %(timeout_ms)s * (1 + 0.1 * u_conf)
            WHEN failed THEN 5 + 40 * u_conf
            ELSE 600 * power(1.6, start_no + escalated::int) * exp(0.45 * z_latency)
                 * (1 + 0.6 * escalated::int) END AS latency_ms
FROM (
    SELECT routed.*,
           NOT failed AND u_escalate < %(escalation_share)s AND start_no < %(top_tier)s
               AS escalated
    FROM routed
) AS decided
"""

_REQUESTS = f"""
INSERT INTO requests_in ({", ".join(writer.REQUEST_COLUMNS)})
SELECT d.request_id, d.request_id,
       d.finished_at - d.latency_ms * interval '1 millisecond', d.finished_at,
       d.tenant, d.source, d.job_id, d.status, d.error_code, d.difficulty,
       CASE WHEN d.difficulty IS NOT NULL THEN 'local' END,
       CASE WHEN d.difficulty IS NOT NULL THEN 0.55 + 0.45 * d.u_conf END,
       CASE WHEN d.difficulty IS NOT NULL THEN first.tier END,
       served.tier, served.model, served.provider, d.escalated, d.attempts,
       coalesce(tokens.input, 0), coalesce(tokens.output, 0),
       coalesce(tokens.served_cost + tokens.escalation_cost, 0),
       CASE WHEN served.model IS NOT NULL
            THEN d.in_tokens * %(baseline_in)s + d.out_tokens * %(baseline_out)s ELSE 0 END,
       coalesce(tokens.escalation_cost, 0),
       d.latency_ms, 0.9 * d.latency_ms, d.emulated,
       md5(d.request_id) || md5(d.request_id || '.'), d.in_tokens * 4,
       NULL, NULL, NULL, NULL  -- prompt_text, ttft_ms (not streamed), features, feature_set
FROM seed_draws d
JOIN seed_models first ON first.tier_no = d.start_no AND first.model_no = 0
LEFT JOIN seed_models served
       ON d.status = 'ok' AND served.tier_no = d.served_no AND served.model_no = d.model_no
LEFT JOIN LATERAL (
    SELECT d.in_tokens * (1 + d.escalated::int) AS input,
           d.out_tokens + d.escalated::int * (d.out_tokens / 2) AS output,
           d.in_tokens * served.in_price + d.out_tokens * served.out_price AS served_cost,
           CASE WHEN d.escalated THEN d.in_tokens * first.in_price
                                      + (d.out_tokens / 2) * first.out_price
                ELSE 0 END AS escalation_cost
    WHERE served.model IS NOT NULL
) tokens ON true
"""

# Attempt 1 of an escalated request is the start tier's weak answer (half the output tokens);
# a failed request's only attempt is a provider error that cost nothing.
_ATTEMPTS = f"""
INSERT INTO attempts_in ({", ".join(writer.ATTEMPT_COLUMNS)})
SELECT d.request_id || '.' || a.n, d.request_id, d.request_id, a.n, a.n,
       d.finished_at - d.latency_ms * (1 - 0.9 * a.n / d.attempts) * interval '1 millisecond',
       d.tenant, m.model, m.provider, m.tier, a.outcome, a.reason,
       a.input_tokens, a.output_tokens,
       a.input_tokens * m.in_price + a.output_tokens * m.out_price,
       0.9 * d.latency_ms / d.attempts, d.emulated
FROM seed_draws d
CROSS JOIN LATERAL (
    SELECT 1 AS n,
           CASE WHEN d.status = 'ok' AND NOT d.escalated THEN d.served_no ELSE d.start_no END
               AS tier_no,
           CASE WHEN d.status = 'ok' AND NOT d.escalated THEN d.model_no ELSE 0 END AS model_no,
           CASE WHEN d.status = 'error' THEN 'error' WHEN d.escalated THEN 'weak' ELSE 'ok' END
               AS outcome,
           CASE WHEN d.error_code = 'timeout' THEN 'provider_error (timeout): no answer'
                WHEN d.status = 'error' THEN 'provider_error (rate_limited): 429'
                WHEN d.escalated THEN d.weak_reason ELSE '' END AS reason,
           CASE WHEN d.status = 'error' THEN 0 ELSE d.in_tokens END AS input_tokens,
           CASE WHEN d.status = 'error' THEN 0
                WHEN d.escalated THEN d.out_tokens / 2 ELSE d.out_tokens END AS output_tokens
    UNION ALL
    SELECT 2, d.served_no, d.model_no, 'ok', '', d.in_tokens, d.out_tokens WHERE d.escalated
) a
JOIN seed_models m ON m.tier_no = a.tier_no AND m.model_no = a.model_no
WHERE d.attempts > 0
"""

_DEAD_LETTERS = """
INSERT INTO dead_letters (subject, stream_seq, deliveries, reason, request_id, body_bytes, at)
SELECT %(subject)s,
       (SELECT coalesce(max(stream_seq), 0) FROM dead_letters WHERE subject = %(subject)s)
           + row_number() OVER (ORDER BY finished_at),
       5, 'handler failed on every delivery', request_id, 900 + in_tokens, finished_at
FROM seed_draws WHERE error_code = 'dead_letter'
"""


def seed(database_url: str, requests: int, days: int, cfg: RouterConfig) -> dict:
    """Adds `requests` requests over the last `days` days; returns what it wrote."""
    started = time.perf_counter()
    db.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS seed_draws, seed_models")  # a crashed run's
        try:
            conn.execute(_MODELS)
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO seed_models VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                _model_rows(cfg))
            conn.execute("SELECT setseed(0.42)")  # the same traffic on every run
            conn.execute(_DRAWS, _draw_params(cfg, requests, days))
            # Two transactions at once, one per core: requests (with their roll-ups), attempts.
            with ThreadPoolExecutor(2) as pool:
                requests_written = pool.submit(_write, database_url, [
                    (_REQUESTS, _baseline_prices(cfg)), (writer.INSERT_REQUESTS, None),
                    (_DEAD_LETTERS, {"subject": subjects.DISPATCH})])
                attempts_written = pool.submit(_write, database_url, [
                    (_ATTEMPTS, None), (writer.INSERT_ATTEMPTS, None)])
                dead_letters, attempts = requests_written.result(), attempts_written.result()
        finally:
            conn.execute("DROP TABLE IF EXISTS seed_draws, seed_models")
        conn.execute("ANALYZE requests, attempts, dead_letters, daily_usage, daily_latency")
    return {"requests": requests, "attempts": attempts, "dead_letters": dead_letters,
            "days": days, "seconds": round(time.perf_counter() - started, 1)}


def _write(database_url: str, statements: list[tuple[str, dict | None]]) -> int:
    """Runs the statements in one transaction, through the ledger writer's staging tables;
    returns the last one's row count."""
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute("SET LOCAL work_mem = '256MB'")  # the roll-ups group a million rows
        cur.execute(writer.STAGING)
        for statement, params in statements:
            cur.execute(statement, params)
        return cur.rowcount


def _model_rows(cfg: RouterConfig) -> list[tuple]:
    pricer = Pricer(cfg.pricing)
    return [
        (tier_no, tier.name, model_no, ref.provider, ref.model, *_per_token(pricer, ref))
        for tier_no, tier in enumerate(cfg.tiers)
        for model_no, ref in enumerate(tier.models)
    ]


def _per_token(pricer: Pricer, ref: ModelRef) -> tuple[Decimal, Decimal]:
    """USD per token, read at a thousand tokens: long-context tiers of the table stay out."""
    return (Decimal(str(pricer.cost(ref, 1000, 0))) / 1000,
            Decimal(str(pricer.cost(ref, 0, 1000))) / 1000)


def _baseline_prices(cfg: RouterConfig) -> dict:
    baseline_in, baseline_out = _per_token(Pricer(cfg.pricing), cfg.baseline_model)
    return {"baseline_in": baseline_in, "baseline_out": baseline_out}


def _draw_params(cfg: RouterConfig, requests: int, days: int) -> dict:
    return {
        "requests": requests,
        "days": days,
        "prefix": f"seed-{uuid.uuid4().hex[:8]}-",
        "digits": len(str(requests)),
        "now": datetime.now(UTC),
        "error_share": ERROR_SHARE,
        "error_codes": [code for code, _ in ERRORS],
        "n_errors": len(ERRORS),
        "calling_errors": [code for code, calls in ERRORS if calls],
        "difficulties": list(DIFFICULTIES),
        "difficulty_cuts": _lower_bounds([DIFFICULTY_SHARES[d] for d in DIFFICULTIES]),
        "start_tiers": [cfg.start_tier(d) for d in DIFFICULTIES],
        "top_tier": cfg.top_tier_index,
        "models_per_tier": [len(t.models) for t in cfg.tiers],
        "tenants": [name for name, _ in TENANTS],
        "tenant_cuts": _lower_bounds([share for _, share in TENANTS]),
        "escalation_share": ESCALATION_SHARE,
        "weak_reasons": list(WEAK_REASONS),
        "n_reasons": len(WEAK_REASONS),
        "fallback_share": FALLBACK_SHARE,
        "emulated_share": EMULATED_SHARE,
        "timeout_ms": cfg.limits.request_timeout_s * 1000,
    }


def _lower_bounds(shares: list[float]) -> list[float]:
    """Where each choice's slice of [0, 1) starts, for width_bucket()."""
    return [float(sum(shares[:i])) for i in range(len(shares))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard.seed", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90, help="spread over the last N days")
    parser.add_argument("--database-url", default=settings().database_url,
                        help="default: DATABASE_URL")
    args = parser.parse_args(argv)
    result = seed(args.database_url, args.requests, args.days, config())
    print(f"seeded {result['requests']:,} requests, {result['attempts']:,} attempts, "
          f"{result['dead_letters']:,} dead letters over {args.days} days "
          f"in {result['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
