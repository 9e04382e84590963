-- Event-Forge's outbox_messages and inbox_messages tables, as the generator of
-- the Event-Forge TypeORM adapter creates them: repository codeforprod/Event-Forge,
-- file packages/adapter-typeorm/src/migrations/templates.ts (the version before
-- the inbox retry columns, commit 6b7b7abe7ba51bf46e4c91006f691e4d61d5b9ba).
-- The later Event-Forge upgrades follow in 00002 to 00004.
--
-- Every statement is guarded (IF NOT EXISTS, or a catalog check in a DO block),
-- so on a database whose tables Event-Forge already created this migration
-- changes nothing and only records its version.
--
-- gen_random_uuid() is built in from PostgreSQL 13; on 12 it needs pgcrypto.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF to_regtype('outbox_message_status') IS NULL THEN
        CREATE TYPE outbox_message_status AS ENUM (
            'pending',
            'processing',
            'published',
            'failed',
            'permanently_failed'
        );
    END IF;
END
$$;
-- +goose StatementEnd

-- NOTE: Event-Forge's core InboxMessageStatus also has 'permanently_failed'
-- and its TypeORM inbox repository writes it, but the generator creates the
-- type with these four values. walrelay keeps the generator's type so that an
-- existing Event-Forge database is left as it is.
-- +goose StatementBegin
DO $$
BEGIN
    IF to_regtype('inbox_message_status') IS NULL THEN
        CREATE TYPE inbox_message_status AS ENUM (
            'received',
            'processing',
            'processed',
            'failed'
        );
    END IF;
END
$$;
-- +goose StatementEnd

CREATE TABLE IF NOT EXISTS outbox_messages (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_type varchar(255) NOT NULL,
    aggregate_id   varchar(255) NOT NULL,
    event_type     varchar(255) NOT NULL,
    payload        jsonb NOT NULL,
    metadata       jsonb,
    status         outbox_message_status NOT NULL DEFAULT 'pending',
    retry_count    integer NOT NULL DEFAULT 0,
    max_retries    integer NOT NULL DEFAULT 5,
    error_message  text,
    scheduled_at   timestamptz NOT NULL DEFAULT now(),
    locked_by      varchar(255),
    locked_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS inbox_messages (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id    varchar(255) NOT NULL,
    source        varchar(255) NOT NULL,
    event_type    varchar(255) NOT NULL,
    payload       jsonb NOT NULL,
    status        inbox_message_status NOT NULL DEFAULT 'received',
    processed_at  timestamptz,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, source)
);

-- Partial index for the rows a polling worker (or walrelay's backfill) picks up.
CREATE INDEX IF NOT EXISTS idx_outbox_pending ON outbox_messages (status, scheduled_at, created_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS idx_outbox_aggregate ON outbox_messages (aggregate_type, aggregate_id);
CREATE INDEX IF NOT EXISTS idx_outbox_event_type ON outbox_messages (event_type);
CREATE INDEX IF NOT EXISTS idx_outbox_created_at ON outbox_messages (created_at);

CREATE INDEX IF NOT EXISTS idx_inbox_event_type ON inbox_messages (event_type);
CREATE INDEX IF NOT EXISTS idx_inbox_status ON inbox_messages (status);
CREATE INDEX IF NOT EXISTS idx_inbox_created_at ON inbox_messages (created_at);
CREATE INDEX IF NOT EXISTS idx_inbox_received_at ON inbox_messages (received_at);
