-- The paid checks of answers (verifier, judge) and judge sampling's comparisons, summed by UTC
-- day as the attempts are written: `stats` reads them here, not from the attempts, which the
-- retention deletes (a window longer than the retention would lose them from the bill). A
-- ledger of an older version, still running once this is applied, does not add to it.
CREATE TABLE daily_checks (
    day                    date PRIMARY KEY,
    verification_cost_usd  numeric(24, 10) NOT NULL,
    sampling_cost_usd      numeric(24, 10) NOT NULL
);
INSERT INTO daily_checks (day, verification_cost_usd, sampling_cost_usd)
SELECT (at AT TIME ZONE 'UTC')::date,
       coalesce(sum(cost_usd) FILTER (WHERE outcome IN ('verify', 'judge')), 0),
       coalesce(sum(cost_usd) FILTER (WHERE outcome = 'sample'), 0)
FROM attempts WHERE outcome IN ('verify', 'judge', 'sample') GROUP BY 1;
