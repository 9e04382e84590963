-- Event-Forge upgrade 1.2.0-001 (AddInboxMetadataColumn): repository
-- codeforprod/Event-Forge, file
-- packages/adapter-typeorm/src/migrations/1.2.0-001-AddInboxMetadataColumn.ts.

-- +goose Up
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS metadata jsonb DEFAULT NULL;
