package migrations

// The SQL below builds Event-Forge's tables the way Event-Forge itself does,
// without walrelay's guards, so tests can check that Up leaves such a database
// as it is. Source: repository codeforprod/Event-Forge,
// packages/adapter-typeorm/src/migrations/templates.ts (the generator) and the
// upgrade files 1.2.0-001-AddInboxMetadataColumn.ts and
// 1.5.0-001-AddInboxRecoveryFields.ts next to it.

// eventForgeTypesSQL creates the two status enums as the generator does.
const eventForgeTypesSQL = `
CREATE TYPE outbox_message_status AS ENUM ('pending', 'processing', 'published', 'failed', 'permanently_failed');
CREATE TYPE inbox_message_status AS ENUM ('received', 'processing', 'processed', 'failed');
`

// eventForgeOutboxSQL creates outbox_messages and its indexes as the generator does.
const eventForgeOutboxSQL = `
CREATE TABLE outbox_messages (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregate_type VARCHAR(255) NOT NULL,
  aggregate_id VARCHAR(255) NOT NULL,
  event_type VARCHAR(255) NOT NULL,
  payload JSONB NOT NULL,
  metadata JSONB,
  status outbox_message_status NOT NULL DEFAULT 'pending',
  retry_count INTEGER NOT NULL DEFAULT 0,
  max_retries INTEGER NOT NULL DEFAULT 5,
  error_message TEXT,
  scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  locked_by VARCHAR(255),
  locked_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_outbox_pending ON outbox_messages (status, scheduled_at, created_at)
  WHERE status IN ('pending', 'failed');
CREATE INDEX idx_outbox_aggregate ON outbox_messages (aggregate_type, aggregate_id);
CREATE INDEX idx_outbox_event_type ON outbox_messages (event_type);
CREATE INDEX idx_outbox_created_at ON outbox_messages (created_at);
`

// eventForgeInitialInboxSQL is the generator's inbox before the retry columns.
const eventForgeInitialInboxSQL = `
CREATE TABLE inbox_messages (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  message_id VARCHAR(255) NOT NULL,
  source VARCHAR(255) NOT NULL,
  event_type VARCHAR(255) NOT NULL,
  payload JSONB NOT NULL,
  status inbox_message_status NOT NULL DEFAULT 'received',
  processed_at TIMESTAMP WITH TIME ZONE,
  error_message TEXT,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  received_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  UNIQUE(message_id, source)
);
CREATE INDEX idx_inbox_event_type ON inbox_messages (event_type);
CREATE INDEX idx_inbox_status ON inbox_messages (status);
CREATE INDEX idx_inbox_created_at ON inbox_messages (created_at);
CREATE INDEX idx_inbox_received_at ON inbox_messages (received_at);
`

// eventForgeCurrentInboxSQL is the current generator's inbox, with the retry
// columns and their index.
const eventForgeCurrentInboxSQL = `
CREATE TABLE inbox_messages (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  message_id VARCHAR(255) NOT NULL,
  source VARCHAR(255) NOT NULL,
  event_type VARCHAR(255) NOT NULL,
  payload JSONB NOT NULL,
  status inbox_message_status NOT NULL DEFAULT 'received',
  processed_at TIMESTAMP WITH TIME ZONE,
  error_message TEXT,
  retry_count INTEGER NOT NULL DEFAULT 0,
  max_retries INTEGER NOT NULL DEFAULT 3,
  scheduled_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  received_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
  UNIQUE(message_id, source)
);
CREATE INDEX idx_inbox_event_type ON inbox_messages (event_type);
CREATE INDEX idx_inbox_status ON inbox_messages (status);
CREATE INDEX idx_inbox_created_at ON inbox_messages (created_at);
CREATE INDEX idx_inbox_received_at ON inbox_messages (received_at);
CREATE INDEX idx_inbox_retry ON inbox_messages (status, retry_count, scheduled_at, created_at);
`

// eventForgeUpgradesSQL applies Event-Forge's upgrades 1.2.0-001 and 1.5.0-001.
const eventForgeUpgradesSQL = `
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS metadata jsonb DEFAULT NULL;

ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP WITH TIME ZONE;
UPDATE inbox_messages SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE inbox_messages ALTER COLUMN updated_at SET DEFAULT NOW();
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS recovery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS last_recovered_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE inbox_messages ADD COLUMN IF NOT EXISTS recovery_reason TEXT;
CREATE INDEX IF NOT EXISTS idx_inbox_recovery_sweep ON inbox_messages (status, updated_at)
  WHERE status = 'processing';
CREATE OR REPLACE FUNCTION update_inbox_updated_at()
RETURNS TRIGGER AS $$
BEGIN
  NEW.updated_at = NOW();
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS trg_inbox_updated_at ON inbox_messages;
CREATE TRIGGER trg_inbox_updated_at
BEFORE UPDATE ON inbox_messages
FOR EACH ROW
EXECUTE FUNCTION update_inbox_updated_at();
`
