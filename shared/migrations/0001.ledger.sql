-- The ledger: one row per request and per attempt (a call to one model), dead letters, and the
-- daily roll-ups the dashboard and router.v1.stats read instead of scanning raw rows.
-- Money is numeric: sums of fractions of a cent must add up exactly.

CREATE TABLE requests (
    request_id            text PRIMARY KEY,
    received_at           timestamptz NOT NULL,
    finished_at           timestamptz NOT NULL,
    tenant                text,
    source                text NOT NULL,
    job_id                text,
    status                text NOT NULL,
    error_code            text,
    difficulty            text,
    classifier_backend    text,
    classifier_confidence real,
    start_tier            text,
    tier                  text,
    model_used            text,
    provider              text,
    escalated             boolean NOT NULL DEFAULT false,
    attempts              smallint NOT NULL DEFAULT 0,
    input_tokens          integer NOT NULL DEFAULT 0,
    output_tokens         integer NOT NULL DEFAULT 0,
    cost_usd              numeric(20, 10) NOT NULL DEFAULT 0,
    baseline_cost_usd     numeric(20, 10) NOT NULL DEFAULT 0,
    escalation_cost_usd   numeric(20, 10) NOT NULL DEFAULT 0,
    saved_usd             numeric(20, 10) GENERATED ALWAYS AS (baseline_cost_usd - cost_usd) STORED,
    latency_ms            real NOT NULL DEFAULT 0,
    provider_latency_ms   real NOT NULL DEFAULT 0,
    emulated              boolean NOT NULL DEFAULT false,
    prompt_sha256         text,
    prompt_chars          integer NOT NULL DEFAULT 0,
    prompt_text           text
);
CREATE INDEX requests_by_time ON requests (finished_at DESC);
CREATE INDEX requests_by_tenant ON requests (tenant, finished_at DESC);
CREATE INDEX requests_by_model ON requests (model_used, finished_at DESC);
CREATE INDEX requests_by_job ON requests (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE attempts (
    request_id     text NOT NULL,
    attempt        smallint NOT NULL,
    hop            smallint NOT NULL,
    at             timestamptz NOT NULL,
    tenant         text,
    model          text NOT NULL,
    provider       text NOT NULL,
    tier           text NOT NULL,
    outcome        text NOT NULL,
    reason         text NOT NULL DEFAULT '',
    input_tokens   integer NOT NULL DEFAULT 0,
    output_tokens  integer NOT NULL DEFAULT 0,
    cost_usd       numeric(20, 10) NOT NULL DEFAULT 0,
    latency_ms     real NOT NULL DEFAULT 0,
    emulated       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (request_id, attempt)
);
CREATE INDEX attempts_by_time ON attempts (at DESC);
CREATE INDEX attempts_by_model ON attempts (model, at DESC);

CREATE TABLE dead_letters (
    subject     text NOT NULL,
    stream_seq  bigint NOT NULL,
    deliveries  integer NOT NULL,
    reason      text NOT NULL,
    request_id  text,
    body_bytes  integer NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (subject, stream_seq)
);
CREATE INDEX dead_letters_by_time ON dead_letters (at DESC);

-- One row per day and breakdown; the ledger adds each committed batch's new rows to it.
CREATE TABLE daily_usage (
    day                  date NOT NULL,
    tenant               text NOT NULL,
    model_used           text NOT NULL,
    tier                 text NOT NULL,
    status               text NOT NULL,
    emulated             boolean NOT NULL,
    requests             bigint NOT NULL,
    escalated            bigint NOT NULL,
    input_tokens         bigint NOT NULL,
    output_tokens        bigint NOT NULL,
    cost_usd             numeric(24, 10) NOT NULL,
    baseline_cost_usd    numeric(24, 10) NOT NULL,
    escalation_cost_usd  numeric(24, 10) NOT NULL,
    latency_ms_sum       double precision NOT NULL,
    PRIMARY KEY (day, tenant, model_used, tier, status, emulated)
);

-- Latency percentiles without raw rows: a log-scale histogram per day and tier.
-- bucket = round(20 * ln(latency_ms)), so a bucket is about 5% wide.
CREATE TABLE daily_latency (
    day     date NOT NULL,
    tier    text NOT NULL,
    bucket  smallint NOT NULL,
    count   bigint NOT NULL,
    PRIMARY KEY (day, tier, bucket)
);
