package migrations

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/internal/testenv"
)

// allApplied is what Up applies to an empty database.
var allApplied = []Applied{
	{Set: SetEventForge, Version: 1, Source: "00001_create_outbox_inbox_tables.sql"},
	{Set: SetEventForge, Version: 2, Source: "00002_add_inbox_retry_fields.sql"},
	{Set: SetEventForge, Version: 3, Source: "00003_add_inbox_metadata.sql"},
	{Set: SetEventForge, Version: 4, Source: "00004_add_inbox_recovery_fields.sql"},
	{Set: SetWalrelay, Version: 1, Source: "00001_create_checkpoints.sql"},
	{Set: SetWalrelay, Version: 2, Source: "00002_add_backfill_state.sql"},
	{Set: SetWalrelay, Version: 3, Source: "00003_add_head_progress.sql"},
}

func assertApplied(t *testing.T, got, want []Applied) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("applied %d migrations %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("applied[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestUpTwiceAppliesOnce(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)
	ctx := testContext(t)

	applied, err := Up(ctx, pgURL, zerolog.Nop())
	if err != nil {
		t.Fatalf("first Up: %v", err)
	}
	assertApplied(t, applied, allApplied)

	before := schemaSnapshot(t, conn)
	if len(before) == 0 {
		t.Fatal("schema snapshot after the first Up is empty")
	}

	applied, err = Up(ctx, pgURL, zerolog.Nop())
	if err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("second Up applied %v, want nothing", applied)
	}

	assertSameSchema(t, before, schemaSnapshot(t, conn))

	if got := appliedVersions(t, conn, "walrelay_eventforge_migrations"); strings.Join(got, ",") != "1,2,3,4" {
		t.Errorf("walrelay_eventforge_migrations versions = %v, want 1,2,3,4", got)
	}
	if got := appliedVersions(t, conn, "walrelay_migrations"); strings.Join(got, ",") != "1,2,3" {
		t.Errorf("walrelay_migrations versions = %v, want 1,2,3", got)
	}
}

func TestUpOnCurrentEventForgeSchemaChangesNothing(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	exec(t, conn, eventForgeTypesSQL+eventForgeOutboxSQL+eventForgeCurrentInboxSQL+eventForgeUpgradesSQL)
	exec(t, conn, `INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('Order', 'o-1', 'OrderCreated', '{"total": 10}')`)
	before := schemaSnapshot(t, conn)

	applied, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge)
	if err != nil {
		t.Fatalf("Up on an existing Event-Forge database: %v", err)
	}
	assertApplied(t, applied, allApplied[:4])

	assertSameSchema(t, before, schemaSnapshot(t, conn))

	var payload string
	err = conn.QueryRow(testContext(t), "SELECT payload::text FROM outbox_messages WHERE aggregate_id = 'o-1'").Scan(&payload)
	if err != nil {
		t.Fatalf("read the row written before Up: %v", err)
	}
	if payload != `{"total": 10}` {
		t.Errorf("payload = %s, want {\"total\": 10}", payload)
	}
}

func TestUpUpgradesInitialEventForgeSchema(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)

	exec(t, conn, eventForgeTypesSQL+eventForgeOutboxSQL+eventForgeInitialInboxSQL)
	exec(t, conn, `INSERT INTO inbox_messages (message_id, source, event_type, payload, created_at)
		VALUES ('m-1', 'orders', 'OrderCreated', '{}', '2001-02-03T04:05:06Z')`)

	if _, err := Up(testContext(t), pgURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up on an initial Event-Forge database: %v", err)
	}

	var retryCount, maxRetries, recoveryAttempts int
	var updatedAt time.Time
	err := conn.QueryRow(testContext(t), `
		SELECT retry_count, max_retries, recovery_attempts, updated_at
		  FROM inbox_messages WHERE message_id = 'm-1'`).Scan(&retryCount, &maxRetries, &recoveryAttempts, &updatedAt)
	if err != nil {
		t.Fatalf("read upgraded inbox row: %v", err)
	}
	if retryCount != 0 || maxRetries != 3 || recoveryAttempts != 0 {
		t.Errorf("retry_count, max_retries, recovery_attempts = %d, %d, %d, want 0, 3, 0", retryCount, maxRetries, recoveryAttempts)
	}
	want := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if !updatedAt.Equal(want) {
		t.Errorf("updated_at = %v, want it backfilled from created_at %v", updatedAt, want)
	}

	// The upgraded database must match one that Up created from nothing.
	freshURL := newDatabase(t)
	fresh := connect(t, freshURL)
	if _, err := Up(testContext(t), freshURL, zerolog.Nop(), SetEventForge); err != nil {
		t.Fatalf("Up on an empty database: %v", err)
	}
	assertSameSchema(t, withoutOrdinals(schemaSnapshot(t, fresh)), withoutOrdinals(schemaSnapshot(t, conn)))
}

// withoutOrdinals drops column positions from a snapshot, because upgraded
// tables get their added columns at the end.
func withoutOrdinals(snapshot []string) []string {
	out := make([]string, 0, len(snapshot))
	for _, line := range snapshot {
		fields := strings.Fields(line)
		if len(fields) > 2 && fields[0] == "column" && strings.HasPrefix(fields[2], "#") {
			fields = append(fields[:2:2], fields[3:]...)
		}
		out = append(out, strings.Join(fields, " "))
	}
	slices.Sort(out)
	return out
}

func TestUpConcurrentCallsApplyOnce(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)
	ctx := testContext(t)

	const callers = 2
	var (
		wait    sync.WaitGroup
		results [callers][]Applied
		errs    [callers]error
	)
	start := make(chan struct{})
	for i := range callers {
		wait.Add(1)
		go func() {
			defer wait.Done()
			<-start
			results[i], errs[i] = Up(ctx, pgURL, zerolog.Nop())
		}()
	}
	close(start)
	wait.Wait()

	total := 0
	for i := range callers {
		if errs[i] != nil {
			t.Errorf("Up call %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	if total != len(allApplied) {
		t.Errorf("the two calls applied %d migrations in total (%v, %v), want %d", total, results[0], results[1], len(allApplied))
	}

	if got := appliedVersions(t, conn, "walrelay_eventforge_migrations"); strings.Join(got, ",") != "1,2,3,4" {
		t.Errorf("walrelay_eventforge_migrations versions = %v, want each of 1,2,3,4 once", got)
	}
	if got := appliedVersions(t, conn, "walrelay_migrations"); strings.Join(got, ",") != "1,2,3" {
		t.Errorf("walrelay_migrations versions = %v, want each of 1,2,3 once", got)
	}
}

func TestStatusBeforeAndAfterUp(t *testing.T) {
	pgURL := newDatabase(t)
	conn := connect(t, pgURL)
	ctx := testContext(t)

	states, err := Status(ctx, pgURL)
	if err != nil {
		t.Fatalf("Status before Up: %v", err)
	}
	if len(states) != len(allApplied) {
		t.Fatalf("Status before Up returned %d migrations, want %d: %v", len(states), len(allApplied), states)
	}
	for i, state := range states {
		if state.Applied || !state.AppliedAt.IsZero() {
			t.Errorf("before Up, %s %d is applied", state.Set, state.Version)
		}
		if state.Set != allApplied[i].Set || state.Version != allApplied[i].Version || state.Source != allApplied[i].Source {
			t.Errorf("state[%d] = %+v, want %+v", i, state, allApplied[i])
		}
	}
	if tableExists(t, conn, "walrelay_migrations") || tableExists(t, conn, "walrelay_eventforge_migrations") {
		t.Error("Status created a version table")
	}

	if _, err := Up(ctx, pgURL, zerolog.Nop(), SetWalrelay); err != nil {
		t.Fatalf("Up: %v", err)
	}

	states, err = Status(ctx, pgURL, SetWalrelay, SetEventForge)
	if err != nil {
		t.Fatalf("Status after Up: %v", err)
	}
	if len(states) != len(allApplied) {
		t.Fatalf("Status after Up returned %d migrations, want %d", len(states), len(allApplied))
	}
	for _, state := range states {
		wantApplied := state.Set == SetWalrelay
		if state.Applied != wantApplied {
			t.Errorf("after Up of the walrelay set, %s %d applied = %v, want %v", state.Set, state.Version, state.Applied, wantApplied)
		}
		if state.Applied && time.Since(state.AppliedAt) > time.Hour {
			t.Errorf("%s %d applied at %v, want about now", state.Set, state.Version, state.AppliedAt)
		}
	}
}

func TestUpRejectsUnknownSet(t *testing.T) {
	_, err := Up(context.Background(), testenv.AdminURL(), zerolog.Nop(), Set("outbox"))
	if err == nil || !strings.Contains(err.Error(), `unknown migration set "outbox"`) {
		t.Fatalf("Up with an unknown set: error = %v, want unknown migration set", err)
	}
	if !strings.Contains(err.Error(), "eventforge, walrelay") {
		t.Errorf("error %q does not list the valid sets", err)
	}
}

func TestUpErrorsHidePassword(t *testing.T) {
	const password = "s3cret-Pa55"
	cases := []struct {
		name  string
		pgURL string
		want  string
	}{
		// Nothing listens on 127.0.0.1:1, so connecting fails at once.
		{"connection refused", "postgres://walrelay:" + password + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=2", "postgres://walrelay@127.0.0.1:1/app"},
		{"invalid port", "postgres://walrelay:" + password + "@127.0.0.1:badport/app", "parse Postgres URL"},
		{"keyword form", "host=127.0.0.1 port=abc user=walrelay password=" + password, "parse Postgres URL"},
		{"password parameter", "postgres://walrelay@127.0.0.1:1/app?password=" + password + "&sslmode=bogus", "parse Postgres URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := zerolog.New(&logs)

			_, upErr := Up(testContext(t), tc.pgURL, log)
			_, statusErr := Status(testContext(t), tc.pgURL)

			for name, err := range map[string]error{"Up": upErr, "Status": statusErr} {
				if err == nil {
					t.Fatalf("%s succeeded, want an error", name)
				}
				if strings.Contains(err.Error(), password) {
					t.Errorf("%s error contains the password: %v", name, err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s error = %q, want it to contain %q", name, err, tc.want)
				}
			}
			if strings.Contains(logs.String(), password) {
				t.Errorf("log contains the password: %s", logs.String())
			}
		})
	}
}

func TestUpLogsAppliedMigrations(t *testing.T) {
	pgURL := newDatabase(t)

	var logs bytes.Buffer
	if _, err := Up(testContext(t), pgURL, zerolog.New(&logs), SetWalrelay); err != nil {
		t.Fatalf("Up: %v", err)
	}
	for _, want := range []string{`"message":"applied migration"`, `"set":"walrelay"`, `"source":"00001_create_checkpoints.sql"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}

	logs.Reset()
	if _, err := Up(testContext(t), pgURL, zerolog.New(&logs), SetWalrelay); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if !strings.Contains(logs.String(), "nothing applied") {
		t.Errorf("second Up log = %q, want a nothing-applied message", logs.String())
	}
	if strings.Contains(logs.String(), "applied migration") {
		t.Errorf("second Up logged an applied migration: %s", logs.String())
	}
}

func TestSetsOrder(t *testing.T) {
	if got := fmt.Sprint(Sets()); got != "[eventforge walrelay]" {
		t.Errorf("Sets() = %s, want [eventforge walrelay]", got)
	}
}
