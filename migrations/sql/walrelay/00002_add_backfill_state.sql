-- The slot's life: when walrelay created the slot and from which position,
-- whether the backfill of rows committed before that is still owed (a crash
-- during the backfill resumes it from the last confirmed row), and the
-- slot's decoded-transaction count, which only a recreated slot can make
-- go backwards.

-- +goose Up
ALTER TABLE walrelay_checkpoints
    ADD COLUMN IF NOT EXISTS slot_created_at     timestamptz,
    ADD COLUMN IF NOT EXISTS slot_created_lsn    pg_lsn,
    ADD COLUMN IF NOT EXISTS backfill_mode       text,
    ADD COLUMN IF NOT EXISTS backfill_since      timestamptz,
    ADD COLUMN IF NOT EXISTS backfill_until      timestamptz,
    ADD COLUMN IF NOT EXISTS backfill_after_time timestamptz,
    ADD COLUMN IF NOT EXISTS backfill_after_id   text,
    ADD COLUMN IF NOT EXISTS slot_total_txns     bigint;

-- +goose Down
ALTER TABLE walrelay_checkpoints
    DROP COLUMN IF EXISTS slot_created_at,
    DROP COLUMN IF EXISTS slot_created_lsn,
    DROP COLUMN IF EXISTS backfill_mode,
    DROP COLUMN IF EXISTS backfill_since,
    DROP COLUMN IF EXISTS backfill_until,
    DROP COLUMN IF EXISTS backfill_after_time,
    DROP COLUMN IF EXISTS backfill_after_id,
    DROP COLUMN IF EXISTS slot_total_txns;
