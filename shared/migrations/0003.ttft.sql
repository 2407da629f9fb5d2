-- Streamed requests: how long after the request arrived its first piece reached the caller.
-- NULL for requests that were not streamed.
ALTER TABLE requests ADD COLUMN ttft_ms real;
