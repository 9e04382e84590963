-- The oldest transaction the relay had not finished when the checkpoint was
-- stored, and how many of its leading messages the broker had confirmed.
-- After a crash the server sends that transaction again from its start; the
-- relay skips the confirmed messages, so a crash in a large transaction
-- repeats about one window of messages instead of the whole transaction.

-- +goose Up
ALTER TABLE walrelay_checkpoints
    ADD COLUMN IF NOT EXISTS head_commit_lsn pg_lsn,
    ADD COLUMN IF NOT EXISTS head_confirmed  bigint;

-- +goose Down
ALTER TABLE walrelay_checkpoints
    DROP COLUMN IF EXISTS head_commit_lsn,
    DROP COLUMN IF EXISTS head_confirmed;
