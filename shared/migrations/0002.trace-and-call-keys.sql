-- Requests are keyed on their trace (one per intake), not on the caller's request_id, so a
-- refused reuse of an id is a row of its own and never hides spend. Attempts are keyed on their
-- call, so a call repeated after a crash is an attempt of its own.
ALTER TABLE requests ADD COLUMN trace_id text;
UPDATE requests SET trace_id = request_id;
ALTER TABLE requests ALTER COLUMN trace_id SET NOT NULL;
ALTER TABLE requests DROP CONSTRAINT requests_pkey;
ALTER TABLE requests ADD PRIMARY KEY (trace_id);
CREATE INDEX requests_by_request_id ON requests (request_id);

ALTER TABLE attempts ADD COLUMN trace_id text, ADD COLUMN call_id text;
UPDATE attempts SET trace_id = request_id, call_id = request_id || '.' || attempt;
ALTER TABLE attempts ALTER COLUMN trace_id SET NOT NULL, ALTER COLUMN call_id SET NOT NULL;
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD PRIMARY KEY (call_id);
CREATE INDEX attempts_by_trace ON attempts (trace_id);
