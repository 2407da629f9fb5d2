-- `stats` reads the time to first token of the window's streamed requests: only those rows.
CREATE INDEX requests_streamed ON requests (received_at) WHERE ttft_ms IS NOT NULL;
