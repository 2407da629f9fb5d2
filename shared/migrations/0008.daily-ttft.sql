-- Time to first token without raw rows: a log-scale histogram of the streamed requests per UTC
-- day (of finished_at, as the other roll-ups), with daily_latency's buckets: round(20 *
-- ln(ttft_ms)), about 5% wide. The ledger adds each batch's new requests to it; `stats` reads
-- it here, not from the requests (a scan of every streamed row of the window, which the
-- retention deletes besides). A ledger of an older version, still running once this is
-- applied, does not add to it.
CREATE TABLE daily_ttft (
    day     date NOT NULL,
    bucket  smallint NOT NULL,
    count   bigint NOT NULL,
    PRIMARY KEY (day, bucket)
);
INSERT INTO daily_ttft (day, bucket, count)
SELECT (finished_at AT TIME ZONE 'UTC')::date, round(20 * ln(greatest(ttft_ms, 0.1)))::smallint,
       count(*)
FROM requests WHERE ttft_ms IS NOT NULL GROUP BY 1, 2;
