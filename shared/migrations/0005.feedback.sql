-- Users' verdicts on answers (router.v1.feedback): labels for the learned router
-- (`train-router --from-ledger`). One row per answered request, keyed on its trace; a later
-- verdict on the same request replaces the earlier one.
CREATE TABLE feedback (
    trace_id    text PRIMARY KEY,
    request_id  text NOT NULL,
    tenant      text,
    score       real NOT NULL CHECK (score >= 0 AND score <= 1),
    comment     text,
    at          timestamptz NOT NULL
);
CREATE INDEX feedback_by_time ON feedback (at DESC);
