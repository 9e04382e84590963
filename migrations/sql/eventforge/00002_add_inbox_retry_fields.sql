-- Event-Forge upgrade 1.0.6-001 (AddInboxRetryFields): repository
-- codeforprod/Event-Forge, file
-- packages/adapter-typeorm/src/migrations/1.0.6-001-AddInboxRetryFields.ts.
-- The current Event-Forge generator already creates these columns and the
-- index, so on such a database every statement here is a no-op.

-- +goose Up
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS retry_count integer NOT NULL DEFAULT 0;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS max_retries integer NOT NULL DEFAULT 3;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS scheduled_at timestamptz;

CREATE INDEX IF NOT EXISTS idx_inbox_retry ON inbox_messages (status, retry_count, scheduled_at, created_at);
