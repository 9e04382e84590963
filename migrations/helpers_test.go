package migrations

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

// versionTables are left out of schema snapshots: Up is expected to change them.
var versionTables = []string{"walrelay_eventforge_migrations", "walrelay_migrations"}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newDatabase creates walrelay_test_mig_<random> and returns its URL. Cleanup
// drops it WITH (FORCE), which also ends connections a failed test left open.
func newDatabase(t *testing.T) string {
	t.Helper()
	ctx := testContext(t)

	name := testenv.Name("walrelay_test_mig")

	admin, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		t.Fatalf("connect to %s (run `make services` to start the local Postgres): %v", testenv.AdminURL(), err)
	}
	defer admin.Close(ctx)

	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		admin, err := pgx.Connect(ctx, testenv.AdminURL())
		if err != nil {
			t.Errorf("connect to drop database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)

		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	return testenv.DatabaseURL(name)
}

// connect opens a plain connection to pgURL, closed in cleanup.
func connect(t *testing.T, pgURL string) *pgx.Conn {
	t.Helper()
	ctx := testContext(t)

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs SQL that a test needs to succeed.
func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(testContext(t), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// queryStrings returns the first column of every row of the query as text.
func queryStrings(t *testing.T, conn *pgx.Conn, sql string, args ...any) []string {
	t.Helper()

	rows, err := conn.Query(testContext(t), sql, args...)
	if err != nil {
		t.Fatalf("query %q: %v", firstLine(sql), err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read rows of %q: %v", firstLine(sql), err)
	}
	return values
}

// schemaSnapshot describes the public schema apart from the version tables:
// columns (information_schema), indexes (pg_indexes), constraints, enum
// labels, triggers and functions, one line each in a stable order.
func schemaSnapshot(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()

	queries := []string{
		`SELECT format('column %s.%s #%s %s %s nullable=%s default=%s', table_name, column_name,
		        ordinal_position, data_type, udt_name, is_nullable, coalesce(column_default, '-'))
		   FROM information_schema.columns
		  WHERE table_schema = 'public' AND table_name <> ALL($1)
		  ORDER BY table_name, ordinal_position`,
		`SELECT format('index %s %s', indexname, indexdef)
		   FROM pg_indexes
		  WHERE schemaname = 'public' AND tablename <> ALL($1)
		  ORDER BY indexname`,
		`SELECT format('constraint %s.%s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
		   FROM pg_constraint c
		  WHERE c.connamespace = 'public'::regnamespace AND c.conrelid::regclass::text <> ALL($1)
		  ORDER BY 1`,
		`SELECT format('enum %s %s', t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder))
		   FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
		  WHERE t.typnamespace = 'public'::regnamespace AND $1::text[] IS NOT NULL
		  GROUP BY t.typname
		  ORDER BY t.typname`,
		`SELECT format('trigger %s', pg_get_triggerdef(oid))
		   FROM pg_trigger
		  WHERE NOT tgisinternal AND $1::text[] IS NOT NULL
		  ORDER BY tgname`,
		`SELECT format('function %s %s', proname, md5(prosrc))
		   FROM pg_proc
		  WHERE pronamespace = 'public'::regnamespace AND $1::text[] IS NOT NULL
		  ORDER BY proname`,
	}

	var snapshot []string
	for _, query := range queries {
		snapshot = append(snapshot, queryStrings(t, conn, query, versionTables)...)
	}
	return snapshot
}

// diffLines lists the lines only in before and only in after.
func diffLines(before, after []string) string {
	inBefore := make(map[string]bool, len(before))
	for _, line := range before {
		inBefore[line] = true
	}
	inAfter := make(map[string]bool, len(after))
	for _, line := range after {
		inAfter[line] = true
	}

	var out strings.Builder
	for _, line := range before {
		if !inAfter[line] {
			fmt.Fprintf(&out, "- %s\n", line)
		}
	}
	for _, line := range after {
		if !inBefore[line] {
			fmt.Fprintf(&out, "+ %s\n", line)
		}
	}
	return out.String()
}

// assertSameSchema fails when the two snapshots differ, listing the lines.
func assertSameSchema(t *testing.T, before, after []string) {
	t.Helper()
	if diff := diffLines(before, after); diff != "" || len(before) != len(after) {
		t.Errorf("schema changed (%d lines before, %d after):\n%s", len(before), len(after), diff)
	}
}

// tableExists reports whether public.<name> exists.
func tableExists(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()

	var exists bool
	err := conn.QueryRow(testContext(t), "SELECT to_regclass($1) IS NOT NULL", "public."+name).Scan(&exists)
	if err != nil {
		t.Fatalf("check table %s: %v", name, err)
	}
	return exists
}

// appliedVersions lists the versions recorded in a goose version table,
// leaving out goose's own version 0 row.
func appliedVersions(t *testing.T, conn *pgx.Conn, table string) []string {
	t.Helper()
	return queryStrings(t, conn, "SELECT version_id::text FROM "+table+" WHERE version_id > 0 ORDER BY id")
}
