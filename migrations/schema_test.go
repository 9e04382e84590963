package migrations

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// column is one expected column: its type as format_type prints it, whether
// it is NOT NULL, and its default expression ("" for none).
type column struct {
	name     string
	dataType string
	notNull  bool
	def      string
}

// assertColumns checks that table has exactly the expected columns.
func assertColumns(t *testing.T, conn *pgx.Conn, table string, want []column) {
	t.Helper()

	rows, err := conn.Query(testContext(t), `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
		       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		  FROM pg_attribute a
		  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, table)
	if err != nil {
		t.Fatalf("read columns of %s: %v", table, err)
	}

	got := make(map[string]column)
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.dataType, &c.notNull, &c.def); err != nil {
			t.Fatalf("scan column of %s: %v", table, err)
		}
		got[c.name] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read columns of %s: %v", table, err)
	}

	for _, w := range want {
		g, ok := got[w.name]
		if !ok {
			t.Errorf("%s.%s is missing", table, w.name)
			continue
		}
		if g.dataType != w.dataType {
			t.Errorf("%s.%s type = %q, want %q", table, w.name, g.dataType, w.dataType)
		}
		if g.notNull != w.notNull {
			t.Errorf("%s.%s NOT NULL = %v, want %v", table, w.name, g.notNull, w.notNull)
		}
		if g.def != w.def {
			t.Errorf("%s.%s default = %q, want %q", table, w.name, g.def, w.def)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s has %d columns, want %d", table, len(got), len(want))
	}
}

func TestUpCreatesEventForgeColumns(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up: %v", err)
	}

	assertColumns(t, conn, "outbox_messages", []column{
		{"id", "uuid", true, "gen_random_uuid()"},
		{"aggregate_type", "character varying(255)", true, ""},
		{"aggregate_id", "character varying(255)", true, ""},
		{"event_type", "character varying(255)", true, ""},
		{"payload", "jsonb", true, ""},
		{"metadata", "jsonb", false, ""},
		{"status", "outbox_message_status", true, "'pending'::outbox_message_status"},
		{"retry_count", "integer", true, "0"},
		{"max_retries", "integer", true, "5"},
		{"error_message", "text", false, ""},
		{"scheduled_at", "timestamp with time zone", true, "now()"},
		{"locked_by", "character varying(255)", false, ""},
		{"locked_at", "timestamp with time zone", false, ""},
		{"created_at", "timestamp with time zone", true, "now()"},
		{"updated_at", "timestamp with time zone", true, "now()"},
	})

	assertColumns(t, conn, "inbox_messages", []column{
		{"id", "uuid", true, "gen_random_uuid()"},
		{"message_id", "character varying(255)", true, ""},
		{"source", "character varying(255)", true, ""},
		{"event_type", "character varying(255)", true, ""},
		{"payload", "jsonb", true, ""},
		{"status", "inbox_message_status", true, "'received'::inbox_message_status"},
		{"processed_at", "timestamp with time zone", false, ""},
		{"error_message", "text", false, ""},
		{"created_at", "timestamp with time zone", true, "now()"},
		{"received_at", "timestamp with time zone", true, "now()"},
		{"retry_count", "integer", true, "0"},
		{"max_retries", "integer", true, "3"},
		{"scheduled_at", "timestamp with time zone", false, ""},
		{"metadata", "jsonb", false, ""},
		{"updated_at", "timestamp with time zone", false, "now()"},
		{"recovery_attempts", "integer", true, "0"},
		{"last_recovered_at", "timestamp with time zone", false, ""},
		{"recovery_reason", "text", false, ""},
	})

	enums := queryStrings(t, conn, `
		SELECT t.typname || '=' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
		  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
		 GROUP BY t.typname ORDER BY t.typname`)
	wantEnums := []string{
		"inbox_message_status=received,processing,processed,failed",
		"outbox_message_status=pending,processing,published,failed,permanently_failed",
	}
	if strings.Join(enums, ";") != strings.Join(wantEnums, ";") {
		t.Errorf("enum types = %v, want %v", enums, wantEnums)
	}

	if tableExists(t, conn, "walrelay_checkpoints") {
		t.Error("Up of SetEventForge created walrelay_checkpoints")
	}
}

func TestUpCreatesEventForgeIndexes(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up: %v", err)
	}

	got := make(map[string]string)
	rows, err := conn.Query(testContext(t),
		`SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('outbox_messages', 'inbox_messages')`)
	if err != nil {
		t.Fatalf("read indexes: %v", err)
	}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatalf("scan index: %v", err)
		}
		got[name] = def
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read indexes: %v", err)
	}

	want := map[string]string{
		"outbox_messages_pkey":                 "CREATE UNIQUE INDEX outbox_messages_pkey ON public.outbox_messages USING btree (id)",
		"idx_outbox_pending":                   "CREATE INDEX idx_outbox_pending ON public.outbox_messages USING btree (status, scheduled_at, created_at) WHERE (status = ANY (ARRAY['pending'::outbox_message_status, 'failed'::outbox_message_status]))",
		"idx_outbox_aggregate":                 "CREATE INDEX idx_outbox_aggregate ON public.outbox_messages USING btree (aggregate_type, aggregate_id)",
		"idx_outbox_event_type":                "CREATE INDEX idx_outbox_event_type ON public.outbox_messages USING btree (event_type)",
		"idx_outbox_created_at":                "CREATE INDEX idx_outbox_created_at ON public.outbox_messages USING btree (created_at)",
		"inbox_messages_pkey":                  "CREATE UNIQUE INDEX inbox_messages_pkey ON public.inbox_messages USING btree (id)",
		"inbox_messages_message_id_source_key": "CREATE UNIQUE INDEX inbox_messages_message_id_source_key ON public.inbox_messages USING btree (message_id, source)",
		"idx_inbox_event_type":                 "CREATE INDEX idx_inbox_event_type ON public.inbox_messages USING btree (event_type)",
		"idx_inbox_status":                     "CREATE INDEX idx_inbox_status ON public.inbox_messages USING btree (status)",
		"idx_inbox_created_at":                 "CREATE INDEX idx_inbox_created_at ON public.inbox_messages USING btree (created_at)",
		"idx_inbox_received_at":                "CREATE INDEX idx_inbox_received_at ON public.inbox_messages USING btree (received_at)",
		"idx_inbox_retry":                      "CREATE INDEX idx_inbox_retry ON public.inbox_messages USING btree (status, retry_count, scheduled_at, created_at)",
		"idx_inbox_recovery_sweep":             "CREATE INDEX idx_inbox_recovery_sweep ON public.inbox_messages USING btree (status, updated_at) WHERE (status = 'processing'::inbox_message_status)",
	}
	for name, def := range want {
		if got[name] != def {
			t.Errorf("index %s:\n got  %q\n want %q", name, got[name], def)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d indexes on the Event-Forge tables, want %d: %v", len(got), len(want), got)
	}
}

func TestUpWalrelaySetOnly(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	applied, err := Up(testContext(t), pgURL, zerolog.Nop(), SetWalrelay)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	assertApplied(t, applied, allApplied[4:])

	tables := queryStrings(t, conn,
		`SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)
	if strings.Join(tables, ",") != "walrelay_checkpoints,walrelay_migrations" {
		t.Errorf("tables = %v, want walrelay_checkpoints and walrelay_migrations only", tables)
	}

	assertColumns(t, conn, "walrelay_checkpoints", []column{
		{"slot_name", "text", true, ""},
		{"system_identifier", "text", true, ""},
		{"timeline", "integer", true, ""},
		{"flushed_lsn", "pg_lsn", true, ""},
		{"last_commit_time", "timestamp with time zone", false, ""},
		{"updated_at", "timestamp with time zone", true, "now()"},
		{"slot_created_at", "timestamp with time zone", false, ""},
		{"slot_created_lsn", "pg_lsn", false, ""},
		{"backfill_mode", "text", false, ""},
		{"backfill_since", "timestamp with time zone", false, ""},
		{"backfill_until", "timestamp with time zone", false, ""},
		{"backfill_after_time", "timestamp with time zone", false, ""},
		{"backfill_after_id", "text", false, ""},
		{"slot_total_txns", "bigint", false, ""},
		{"head_commit_lsn", "pg_lsn", false, ""},
		{"head_confirmed", "bigint", false, ""},
	})

	primaryKey := queryStrings(t, conn, `
		SELECT pg_get_constraintdef(oid) FROM pg_constraint
		 WHERE conrelid = 'walrelay_checkpoints'::regclass AND contype = 'p'`)
	if strings.Join(primaryKey, ";") != "PRIMARY KEY (slot_name)" {
		t.Errorf("walrelay_checkpoints primary key = %v, want PRIMARY KEY (slot_name)", primaryKey)
	}
}

func TestOutboxInsertDefaults(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up: %v", err)
	}

	var (
		id, status              string
		retryCount, maxRetries  int
		scheduledAt, createdAt  time.Time
		metadataIsNull, lockNil bool
	)
	err := conn.QueryRow(testContext(t), `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('Order', 'o-1', 'OrderCreated', '{"total": 10}')
		RETURNING id::text, status::text, retry_count, max_retries, scheduled_at, created_at,
		          metadata IS NULL, locked_by IS NULL`).
		Scan(&id, &status, &retryCount, &maxRetries, &scheduledAt, &createdAt, &metadataIsNull, &lockNil)
	if err != nil {
		t.Fatalf("insert outbox row with the required columns only: %v", err)
	}

	if len(id) != 36 || strings.Count(id, "-") != 4 {
		t.Errorf("id = %q, want a generated uuid", id)
	}
	if status != "pending" {
		t.Errorf("status = %q, want pending", status)
	}
	if retryCount != 0 {
		t.Errorf("retry_count = %d, want 0", retryCount)
	}
	if maxRetries != 5 {
		t.Errorf("max_retries = %d, want 5", maxRetries)
	}
	if time.Since(scheduledAt) > time.Minute || time.Since(createdAt) > time.Minute {
		t.Errorf("scheduled_at = %v, created_at = %v, want both about now", scheduledAt, createdAt)
	}
	if !metadataIsNull || !lockNil {
		t.Errorf("metadata is null = %v, locked_by is null = %v, want both null", metadataIsNull, lockNil)
	}

	var second string
	err = conn.QueryRow(testContext(t), `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('Order', 'o-1', 'OrderPaid', '{}') RETURNING id::text`).Scan(&second)
	if err != nil {
		t.Fatalf("insert second outbox row: %v", err)
	}
	if second == id {
		t.Errorf("two rows got the same id %s", id)
	}
}

func TestInboxRejectsDuplicateMessage(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up: %v", err)
	}

	insert := `INSERT INTO inbox_messages (message_id, source, event_type, payload) VALUES ($1, $2, 'OrderCreated', '{}')`
	exec(t, conn, insert, "m-1", "orders")

	_, err := conn.Exec(testContext(t), insert, "m-1", "orders")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("duplicate (message_id, source) insert error = %v, want unique_violation 23505", err)
	}

	exec(t, conn, insert, "m-1", "billing")

	var count int
	if err := conn.QueryRow(testContext(t), "SELECT count(*) FROM inbox_messages").Scan(&count); err != nil {
		t.Fatalf("count inbox rows: %v", err)
	}
	if count != 2 {
		t.Errorf("inbox rows = %d, want 2", count)
	}

	var status string
	var maxRetries int
	err = conn.QueryRow(testContext(t),
		"SELECT status::text, max_retries FROM inbox_messages WHERE source = 'orders'").Scan(&status, &maxRetries)
	if err != nil {
		t.Fatalf("read inbox row: %v", err)
	}
	if status != "received" || maxRetries != 3 {
		t.Errorf("status = %q, max_retries = %d, want received and 3", status, maxRetries)
	}
}

func TestInboxUpdateSetsUpdatedAt(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up: %v", err)
	}

	exec(t, conn, `INSERT INTO inbox_messages (message_id, source, event_type, payload, updated_at)
		VALUES ('m-1', 'orders', 'OrderCreated', '{}', '2000-01-01T00:00:00Z')`)
	exec(t, conn, `UPDATE inbox_messages SET status = 'processing' WHERE message_id = 'm-1'`)

	var updatedAt time.Time
	if err := conn.QueryRow(testContext(t), "SELECT updated_at FROM inbox_messages").Scan(&updatedAt); err != nil {
		t.Fatalf("read updated_at: %v", err)
	}
	if time.Since(updatedAt) > time.Minute {
		t.Errorf("updated_at = %v after an update, want about now (trigger trg_inbox_updated_at)", updatedAt)
	}
}
