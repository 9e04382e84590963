package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// adminURL is the local test server (trust auth). The package's tests share
// one database, walrelay_test_outbox_<random>, which TestMain drops.
const adminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var testDB struct {
	once sync.Once
	name string
	err  error
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if testDB.name != "" {
		if err := dropDatabase(testDB.name); err != nil {
			fmt.Fprintf(os.Stderr, "drop test database %s: %v\n", testDB.name, err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func dropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)

	_, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

func randomSuffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random suffix: %v", err)
	}
	return hex.EncodeToString(b)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connectTestDB creates the package's database on first use and returns a
// connection to it that uses the given query execution mode.
func connectTestDB(t *testing.T, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against Postgres on 127.0.0.1:5432; skipped with -short")
	}
	ctx := testContext(t)

	testDB.once.Do(func() {
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			testDB.err = fmt.Errorf("connect to %s: %w", adminURL, err)
			return
		}
		defer admin.Close(ctx)

		name := "walrelay_test_outbox_" + randomSuffix(t)
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			testDB.err = fmt.Errorf("create database %s: %w", name, err)
			return
		}
		testDB.name = name
	})
	if testDB.err != nil {
		t.Fatalf("test database: %v", testDB.err)
	}

	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://postgres@127.0.0.1:5432/%s?sslmode=disable", testDB.name))
	if err != nil {
		t.Fatalf("parse test database URL: %v", err)
	}
	cfg.DefaultQueryExecMode = mode

	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Outbox table shapes, each with %s for the table name.
var tableShapes = map[string]string{
	// Event-Forge's TypeScript (TypeORM) adapter.
	"typescript": `
CREATE TYPE %[2]s AS ENUM ('pending', 'processing', 'published', 'failed', 'permanently_failed');
CREATE TABLE %[1]s (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregate_type varchar(255) NOT NULL,
	aggregate_id varchar(255) NOT NULL,
	event_type varchar(255) NOT NULL,
	payload jsonb NOT NULL,
	metadata jsonb,
	status %[2]s NOT NULL DEFAULT 'pending',
	retry_count integer NOT NULL DEFAULT 0,
	max_retries integer NOT NULL DEFAULT 3,
	error_message text,
	scheduled_at timestamptz,
	locked_by varchar(255),
	locked_at timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
)`,
	// Event-Forge's Python (SQLAlchemy) library: no server-side defaults.
	"python": `
CREATE TABLE %[1]s (
	id varchar(36) PRIMARY KEY,
	aggregate_type varchar(255) NOT NULL,
	aggregate_id varchar(255) NOT NULL,
	event_type varchar(255) NOT NULL,
	payload json NOT NULL,
	metadata json,
	status varchar(50) NOT NULL,
	retry_count integer NOT NULL,
	max_retries integer NOT NULL,
	error_message text,
	scheduled_at timestamp,
	locked_by varchar(255),
	locked_at timestamp,
	created_at timestamp NOT NULL,
	updated_at timestamp NOT NULL
)`,
	// walrelay's own migration: scheduled_at is NOT NULL with a default.
	"migration": `
CREATE TABLE %[1]s (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregate_type varchar(255) NOT NULL,
	aggregate_id varchar(255) NOT NULL,
	event_type varchar(255) NOT NULL,
	payload jsonb NOT NULL,
	metadata jsonb,
	status varchar(50) NOT NULL DEFAULT 'pending',
	retry_count integer NOT NULL DEFAULT 0,
	max_retries integer NOT NULL DEFAULT 5,
	error_message text,
	scheduled_at timestamptz NOT NULL DEFAULT now(),
	locked_by varchar(255),
	locked_at timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
)`,
}

// createTable creates a table of the given shape in a fresh schema and
// returns its "schema.table" name.
func createTable(t *testing.T, conn *pgx.Conn, shape string) string {
	t.Helper()
	ctx := testContext(t)

	schema := "outbox_" + randomSuffix(t)
	table := schema + ".outbox_messages"
	enum := schema + ".outbox_message_status"
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	for _, stmt := range strings.Split(fmt.Sprintf(tableShapes[shape], table, enum), ";") {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("create %s table: %v", shape, err)
		}
	}
	return table
}

type storedRow struct {
	id, aggregateType, aggregateID, eventType string
	payload                                   string
	metadata                                  *string
	status                                    string
	retryCount, maxRetries                    int
	scheduledAt                               *time.Time
	createdAtSet, updatedAtSet                bool
}

func readRow(t *testing.T, conn *pgx.Conn, table, id string) storedRow {
	t.Helper()
	ctx := testContext(t)

	var r storedRow
	err := conn.QueryRow(ctx, `SELECT id::text, aggregate_type, aggregate_id, event_type, payload::text, metadata::text,
		status::text, retry_count, max_retries, scheduled_at::timestamptz, created_at IS NOT NULL, updated_at IS NOT NULL
		FROM `+table+` WHERE id::text = $1`, id).Scan(
		&r.id, &r.aggregateType, &r.aggregateID, &r.eventType, &r.payload, &r.metadata,
		&r.status, &r.retryCount, &r.maxRetries, &r.scheduledAt, &r.createdAtSet, &r.updatedAtSet)
	if err != nil {
		t.Fatalf("read row %s from %s: %v", id, table, err)
	}
	return r
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestInsertTableShapes(t *testing.T) {
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement,
		pgx.QueryExecModeExec,
		pgx.QueryExecModeSimpleProtocol,
	}
	for _, shape := range []string{"typescript", "python", "migration"} {
		for _, mode := range modes {
			t.Run(shape+"/"+mode.String(), func(t *testing.T) {
				conn := connectTestDB(t, mode)
				table := createTable(t, conn, shape)
				ctx := testContext(t)

				type order struct {
					Total float64 `json:"total"`
					Note  string  `json:"note"`
				}
				scheduled := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

				tx, err := conn.Begin(ctx)
				if err != nil {
					t.Fatalf("begin: %v", err)
				}
				generatedID, err := Insert(ctx, tx, table, Event{
					AggregateType: "order",
					AggregateID:   "42",
					EventType:     "created",
					Payload:       order{Total: 9.5, Note: "<a&b>"},
					Metadata:      json.RawMessage(`{"routingKey": "orders.eu", "headers": {"tenant": "t1"}}`),
				})
				if err != nil {
					t.Fatalf("Insert with generated id: %v", err)
				}
				givenID, err := Insert(ctx, tx, table, Event{
					ID:            "7d3c5a1e-0f4b-4c2a-9e8d-6b5a4c3d2e1f",
					AggregateType: "order",
					AggregateID:   "43",
					EventType:     "shipped",
					Payload:       []byte(`{"a": 1, "b": "ü"}`),
					ScheduledAt:   scheduled,
				})
				if err != nil {
					t.Fatalf("Insert with given id: %v", err)
				}
				nilPayloadID, err := Insert(ctx, tx, table, Event{
					AggregateType: "order", AggregateID: "44", EventType: "noted",
				})
				if err != nil {
					t.Fatalf("Insert with nil payload: %v", err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatalf("commit: %v", err)
				}

				if !uuidPattern.MatchString(generatedID) {
					t.Errorf("generated id %q is not a version 4 UUID", generatedID)
				}
				if givenID != "7d3c5a1e-0f4b-4c2a-9e8d-6b5a4c3d2e1f" {
					t.Errorf("Insert returned id %q, want the given id", givenID)
				}

				r := readRow(t, conn, table, generatedID)
				if r.aggregateType != "order" || r.aggregateID != "42" || r.eventType != "created" {
					t.Errorf("row = %s/%s/%s, want order/42/created", r.aggregateType, r.aggregateID, r.eventType)
				}
				var gotPayload order
				if err := json.Unmarshal([]byte(r.payload), &gotPayload); err != nil {
					t.Fatalf("payload %q: %v", r.payload, err)
				}
				if gotPayload != (order{Total: 9.5, Note: "<a&b>"}) {
					t.Errorf("payload = %+v", gotPayload)
				}
				if !strings.Contains(r.payload, "<a&b>") {
					t.Errorf("payload %s escapes HTML characters", r.payload)
				}
				if r.metadata == nil {
					t.Fatalf("metadata is NULL")
				}
				var gotMeta map[string]any
				if err := json.Unmarshal([]byte(*r.metadata), &gotMeta); err != nil {
					t.Fatalf("metadata %q: %v", *r.metadata, err)
				}
				if gotMeta["routingKey"] != "orders.eu" {
					t.Errorf("metadata = %s", *r.metadata)
				}
				if r.status != "pending" {
					t.Errorf("status = %q, want pending", r.status)
				}
				if r.retryCount != 0 {
					t.Errorf("retry_count = %d, want 0", r.retryCount)
				}
				if r.maxRetries != 5 {
					t.Errorf("max_retries = %d, want 5", r.maxRetries)
				}
				if !r.createdAtSet || !r.updatedAtSet {
					t.Errorf("created_at or updated_at is NULL")
				}
				if shape == "migration" {
					if r.scheduledAt == nil {
						t.Errorf("scheduled_at is NULL, want the column default")
					}
				} else if r.scheduledAt != nil {
					t.Errorf("scheduled_at = %v, want NULL", r.scheduledAt)
				}

				r = readRow(t, conn, table, givenID)
				// json keeps the text as given; jsonb's output form of this
				// value is the same text.
				wantPayload := `{"a": 1, "b": "ü"}`
				if r.payload != wantPayload {
					t.Errorf("payload = %q, want %q", r.payload, wantPayload)
				}
				if r.metadata != nil {
					t.Errorf("metadata = %q, want NULL", *r.metadata)
				}
				if r.scheduledAt == nil {
					t.Fatalf("scheduled_at is NULL, want %v", scheduled)
				}
				if shape != "python" && !r.scheduledAt.Equal(scheduled) {
					t.Errorf("scheduled_at = %v, want %v", r.scheduledAt, scheduled)
				}

				r = readRow(t, conn, table, nilPayloadID)
				if r.payload != "{}" {
					t.Errorf("nil payload stored as %q, want {}", r.payload)
				}
			})
		}
	}
}

func TestInsertPythonShapeTimestampUsesSessionTimeZone(t *testing.T) {
	conn := connectTestDB(t, pgx.QueryExecModeCacheStatement)
	table := createTable(t, conn, "python")
	ctx := testContext(t)

	if _, err := conn.Exec(ctx, "SET TimeZone = 'America/New_York'"); err != nil {
		t.Fatalf("set time zone: %v", err)
	}
	scheduled := time.Date(2030, 1, 15, 12, 0, 0, 0, time.UTC)
	id, err := Insert(ctx, conn, table, Event{
		AggregateType: "a", AggregateID: "b", EventType: "c", ScheduledAt: scheduled,
	})
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}

	// A timestamp column holds New York wall-clock time, which the session
	// converts back to the same instant.
	r := readRow(t, conn, table, id)
	if r.scheduledAt == nil || !r.scheduledAt.Equal(scheduled) {
		t.Errorf("scheduled_at = %v, want %v", r.scheduledAt, scheduled)
	}
	var wall string
	if err := conn.QueryRow(ctx, "SELECT scheduled_at::text FROM "+table+" WHERE id = $1", id).Scan(&wall); err != nil {
		t.Fatalf("read wall-clock time: %v", err)
	}
	if wall != "2030-01-15 07:00:00" {
		t.Errorf("stored wall-clock time = %q, want 2030-01-15 07:00:00", wall)
	}
}

func TestInsertRollbackLeavesNoRow(t *testing.T) {
	conn := connectTestDB(t, pgx.QueryExecModeCacheStatement)
	table := createTable(t, conn, "typescript")
	ctx := testContext(t)

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := Insert(ctx, tx, table, Event{AggregateType: "a", AggregateID: "b", EventType: "c"}); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}

	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != 0 {
		t.Errorf("rows after rollback = %d, want 0", n)
	}
}

func TestInsertDefaultTableName(t *testing.T) {
	conn := connectTestDB(t, pgx.QueryExecModeCacheStatement)
	ctx := testContext(t)

	// The default table lives in public; a transaction keeps it private to
	// this test and leaves nothing behind.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback(ctx)

	if _, err := tx.Exec(ctx, fmt.Sprintf(tableShapes["migration"], "public.outbox_messages")); err != nil {
		t.Fatalf("create public.outbox_messages: %v", err)
	}
	id, err := Insert(ctx, tx, "", Event{AggregateType: "a", AggregateID: "b", EventType: "c"})
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM public.outbox_messages WHERE id = $1", id).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != 1 {
		t.Errorf("rows with id %s = %d, want 1", id, n)
	}
}

func TestInsertRejectsInvalidEvents(t *testing.T) {
	valid := Event{AggregateType: "a", AggregateID: "b", EventType: "c"}
	tests := []struct {
		name  string
		table string
		ev    Event
		want  string
	}{
		{"missing fields", "", Event{AggregateID: "b"}, "missing required fields AggregateType, EventType"},
		{"invalid raw payload", "", Event{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: json.RawMessage(`{"a":`)}, "Payload: invalid JSON"},
		{"invalid byte metadata", "", Event{AggregateType: "a", AggregateID: "b", EventType: "c", Metadata: []byte(`nope`)}, "Metadata: invalid JSON"},
		{"unmarshalable payload", "", Event{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: make(chan int)}, "marshal chan int"},
		{"three-part table name", "a.b.c", valid, `invalid outbox table name "a.b.c"`},
		{"empty table part", "app.", valid, `invalid outbox table name "app."`},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := &failingExecer{}
			_, err := Insert(context.Background(), db, tc.table, tc.ev)
			if err == nil {
				t.Fatalf("Insert: got no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if db.calls != 0 {
				t.Errorf("Insert ran %d statements for an invalid event", db.calls)
			}
		})
	}
}

func TestTableIdentifierQuotes(t *testing.T) {
	tests := map[string]string{
		"":                   `"public"."outbox_messages"`,
		"events":             `"events"`,
		"app.Outbox":         `"app"."Outbox"`,
		`we"ird.t`:           `"we""ird"."t"`,
		"public.outbox_msgs": `"public"."outbox_msgs"`,
	}
	for in, want := range tests {
		got, err := tableIdentifier(in)
		if err != nil {
			t.Errorf("tableIdentifier(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("tableIdentifier(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestEmitRejectsScheduledAt(t *testing.T) {
	db := &failingExecer{}
	_, err := Emit(context.Background(), db, "", Event{
		AggregateType: "a", AggregateID: "b", EventType: "c", ScheduledAt: time.Now().Add(time.Hour),
	})
	if err == nil || !strings.Contains(err.Error(), "ScheduledAt is not supported") {
		t.Errorf("Emit with ScheduledAt: error = %v, want one that rejects ScheduledAt", err)
	}
	if db.calls != 0 {
		t.Errorf("Emit ran %d statements", db.calls)
	}
}

func TestEmitLogicalDecodingMessage(t *testing.T) {
	conn := connectTestDB(t, pgx.QueryExecModeCacheStatement)
	ctx := testContext(t)

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatalf("show wal_level: %v", err)
	}
	if walLevel != "logical" {
		t.Skipf("wal_level is %q: logical decoding messages need wal_level=logical (ALTER SYSTEM SET wal_level = logical, then restart Postgres)", walLevel)
	}

	slot := "walrelay_test_outbox_" + randomSuffix(t)
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'test_decoding')", slot); err != nil {
		t.Fatalf("create slot %s: %v", slot, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			t.Errorf("drop slot %s: %v", slot, err)
		}
	})

	prefix := "walrelay_test_" + randomSuffix(t)
	ev := Event{
		ID:            "c0ffee00-1111-4222-8333-444455556666",
		AggregateType: "order",
		AggregateID:   "42",
		EventType:     "created",
		Payload:       json.RawMessage(`{"a": 1, "b": "ü"}`),
		Metadata:      map[string]any{"routingKey": "orders.eu"},
	}

	// A rolled-back transaction emits nothing.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := Emit(ctx, tx, prefix, Event{AggregateType: "x", AggregateID: "y", EventType: "rolled-back"}); err != nil {
		t.Fatalf("Emit in rolled-back tx: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}

	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	id, err := Emit(ctx, tx, prefix, ev)
	if err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if id != ev.ID {
		t.Errorf("Emit returned id %q, want %q", id, ev.ID)
	}

	rows, err := conn.Query(ctx, "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)", slot)
	if err != nil {
		t.Fatalf("read slot changes: %v", err)
	}
	changes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("collect slot changes: %v", err)
	}

	wantContent := `{"id":"c0ffee00-1111-4222-8333-444455556666","aggregateType":"order","aggregateId":"42","eventType":"created","payload":{"a": 1, "b": "ü"},"metadata":{"routingKey":"orders.eu"}}`
	var messages []string
	for _, c := range changes {
		if strings.HasPrefix(c, "message:") && strings.Contains(c, "prefix: "+prefix+",") {
			messages = append(messages, c)
		}
	}
	if len(messages) != 1 {
		t.Fatalf("messages with prefix %s = %d, want 1 (the rolled-back one must not appear); changes: %q", prefix, len(messages), changes)
	}
	if !strings.Contains(messages[0], "transactional: 1") {
		t.Errorf("message is not transactional: %s", messages[0])
	}
	_, content, ok := strings.Cut(messages[0], "content:")
	if !ok {
		t.Fatalf("no content in %q", messages[0])
	}
	if content != wantContent {
		t.Errorf("content\n got %s\nwant %s", content, wantContent)
	}
}

// failingExecer records calls and fails them; tests that expect validation to
// stop a statement assert that it was never called.
type failingExecer struct{ calls int }

func (f *failingExecer) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	f.calls++
	return pgconn.CommandTag{}, errors.New("unexpected statement")
}
