package inbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestLoadTableShapes(t *testing.T) {
	tests := []struct {
		shape        shape
		wantColumns  string
		wantRetry    bool
		wantMetadata bool
	}{
		{
			shape: typescriptShape,
			wantColumns: `"id", "message_id", "source", "event_type", "payload", "metadata", "status", ` +
				`"retry_count", "max_retries", "recovery_attempts", "created_at", "received_at", "updated_at"`,
			wantRetry:    true,
			wantMetadata: true,
		},
		{
			shape:       pythonShape,
			wantColumns: `"id", "message_id", "source", "event_type", "payload", "status", "created_at"`,
		},
	}

	for _, tt := range tests {
		t.Run(string(tt.shape), func(t *testing.T) {
			pool := newPool(t, newDatabase(t, tt.shape))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			tbl, err := loadTable(ctx, pool, "inbox_messages", 5)
			if err != nil {
				t.Fatalf("loadTable: %v", err)
			}
			if tbl.insertColumns != tt.wantColumns {
				t.Errorf("insert columns = %s, want %s", tbl.insertColumns, tt.wantColumns)
			}
			if !tbl.writeID {
				t.Error("writeID = false, want true")
			}
			if tbl.hasRetry != tt.wantRetry {
				t.Errorf("hasRetry = %v, want %v", tbl.hasRetry, tt.wantRetry)
			}
			if tbl.hasMetadata != tt.wantMetadata {
				t.Errorf("hasMetadata = %v, want %v", tbl.hasMetadata, tt.wantMetadata)
			}
			if got := tbl.columns["message_id"].maxLength; got != 255 {
				t.Errorf("message_id max length = %d, want 255", got)
			}
			if tt.wantRetry && !strings.Contains(tbl.insertSQL(1), ", 5, 0, now()") {
				t.Errorf("insert %s does not write max_retries 5", tbl.insertSQL(1))
			}
		})
	}
}

func TestInsertSQLPlaceholders(t *testing.T) {
	tbl := &table{quoted: `"public"."inbox"`, columns: map[string]column{}}
	for _, name := range []string{"id", "message_id", "source", "event_type", "payload", "status", "created_at"} {
		tbl.columns[name] = column{name: name, dataType: "text"}
	}
	tbl.writeID = true
	tbl.buildInsert(3)

	got := tbl.insertSQL(2)
	want := `INSERT INTO "public"."inbox" ("id", "message_id", "source", "event_type", "payload", "status", "created_at") ` +
		`VALUES ($2, $3, $1, $4, $5, 'received', now()), ($6, $7, $1, $8, $9, 'received', now()) ` +
		`ON CONFLICT (message_id, source) DO NOTHING RETURNING message_id`
	if got != want {
		t.Errorf("insertSQL(2) =\n%s\nwant\n%s", got, want)
	}

	args := tbl.appendArgs(nil, &Message{ID: "m", EventType: "e", Payload: []byte(`{}`)})
	if len(args) != 4 || len(args[0].(string)) != 36 || args[1] != "m" || args[2] != "e" || args[3] != "{}" {
		t.Errorf("appendArgs = %v, want [uuid m e {}]", args)
	}
}

func TestLoadTableRejects(t *testing.T) {
	tests := []struct {
		name    string
		ddl     string
		wantErr string
	}{
		{
			name:    "missing table",
			wantErr: "does not exist",
		},
		{
			name:    "no unique key",
			ddl:     `CREATE TABLE inbox_messages (message_id text NOT NULL, source text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL)`,
			wantErr: "no unique index on (message_id, source)",
		},
		{
			name:    "unique key on message_id only",
			ddl:     `CREATE TABLE inbox_messages (message_id text NOT NULL UNIQUE, source text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL)`,
			wantErr: "no unique index on (message_id, source)",
		},
		{
			name:    "missing column",
			ddl:     `CREATE TABLE inbox_messages (message_id text NOT NULL, source text NOT NULL, payload jsonb NOT NULL, UNIQUE (message_id, source))`,
			wantErr: `has no column "event_type"`,
		},
		{
			name: "unknown NOT NULL column",
			ddl: `CREATE TABLE inbox_messages (message_id text NOT NULL, source text NOT NULL, event_type text NOT NULL,
				payload jsonb NOT NULL, tenant text NOT NULL, UNIQUE (message_id, source))`,
			wantErr: `column "tenant" is NOT NULL without a default`,
		},
		{
			name: "text payload",
			ddl: `CREATE TABLE inbox_messages (message_id text NOT NULL, source text NOT NULL, event_type text NOT NULL,
				payload text NOT NULL, UNIQUE (message_id, source))`,
			wantErr: `column "payload" is text, want json or jsonb`,
		},
		{
			name: "integer id without default",
			ddl: `CREATE TABLE inbox_messages (id bigint PRIMARY KEY, message_id text NOT NULL, source text NOT NULL,
				event_type text NOT NULL, payload jsonb NOT NULL, UNIQUE (message_id, source))`,
			wantErr: `column "id" is bigint without a default`,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pgURL := testenv.Database(t)
			if tt.ddl != "" {
				testenv.Exec(t, pgURL, tt.ddl)
			}
			pool := newPool(t, pgURL)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			_, err := loadTable(ctx, pool, "inbox_messages", 3)
			if err == nil {
				t.Fatal("loadTable succeeded, want an error")
			}
			var schemaErr *SchemaError
			if !errors.As(err, &schemaErr) {
				t.Errorf("error %v is not a *SchemaError", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadTableSerialID(t *testing.T) {
	pgURL := testenv.Database(t)
	testenv.Exec(t, pgURL, `CREATE TABLE inbox_messages (id bigserial PRIMARY KEY, message_id text NOT NULL,
		source text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, UNIQUE (message_id, source))`)
	pool := newPool(t, pgURL)

	tbl, err := loadTable(context.Background(), pool, "public.inbox_messages", 3)
	if err != nil {
		t.Fatalf("loadTable: %v", err)
	}
	if tbl.writeID {
		t.Error("writeID = true for a bigserial id, want false")
	}
	if strings.Contains(tbl.insertColumns, `"id"`) {
		t.Errorf("insert columns %s include the serial id", tbl.insertColumns)
	}
}
