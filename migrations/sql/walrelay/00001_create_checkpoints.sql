-- walrelay's stored checkpoint, one row per replication slot: the server's
-- system identifier and timeline, the last LSN reported as flushed and the
-- commit time of the last relayed transaction. At start the relay compares
-- this row with the slot to detect a dropped, recreated or foreign slot.

-- +goose Up
CREATE TABLE IF NOT EXISTS walrelay_checkpoints (
    slot_name          text PRIMARY KEY,
    system_identifier  text        NOT NULL,
    timeline           integer     NOT NULL,
    flushed_lsn        pg_lsn      NOT NULL,
    last_commit_time   timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
