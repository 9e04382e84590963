-- Event-Forge upgrade 1.5.0-001 (AddInboxRecoveryFields): repository
-- codeforprod/Event-Forge, file
-- packages/adapter-typeorm/src/migrations/1.5.0-001-AddInboxRecoveryFields.ts.
-- Event-Forge leaves updated_at nullable, and so does this file. The function
-- and the trigger are created only when missing, so a database that already
-- has them keeps them unchanged.

-- +goose Up
-- updated_at is added without a default first, so that existing rows get
-- created_at rather than the time of the upgrade.
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS updated_at timestamptz;
UPDATE inbox_messages SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE inbox_messages ALTER COLUMN updated_at SET DEFAULT now();

ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS recovery_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS last_recovered_at timestamptz;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS recovery_reason text;

CREATE INDEX IF NOT EXISTS idx_inbox_recovery_sweep ON inbox_messages (status, updated_at)
    WHERE status = 'processing';

-- +goose StatementBegin
DO $do$
BEGIN
    IF to_regprocedure('update_inbox_updated_at()') IS NULL THEN
        CREATE FUNCTION update_inbox_updated_at() RETURNS trigger AS $fn$
        BEGIN
            NEW.updated_at = now();
            RETURN NEW;
        END;
        $fn$ LANGUAGE plpgsql;
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgname = 'trg_inbox_updated_at'
          AND tgrelid = 'inbox_messages'::regclass
    ) THEN
        CREATE TRIGGER trg_inbox_updated_at
            BEFORE UPDATE ON inbox_messages
            FOR EACH ROW
            EXECUTE FUNCTION update_inbox_updated_at();
    END IF;
END
$do$;
-- +goose StatementEnd
