-- ledger.store_features: the prompt as the learned router sees it (float16, little-endian),
-- and which feature set that is; never the text (prompt_text stays NULL unless allowed).
ALTER TABLE requests ADD COLUMN features bytea, ADD COLUMN feature_set text;
