-- A reused Idempotency-Key must carry the same request as its first use: the SHA-256 of the
-- first body, as canonical JSON, is kept with the key. Keys stored before this column existed
-- have none and answer their task whatever the body, as they did.
ALTER TABLE idempotency_keys ADD COLUMN request_digest TEXT;
