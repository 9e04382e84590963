package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestSetupThenRunWithoutCreate(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")
	publication := testenv.Name("pub")

	// Only the Event-Forge tables: setup creates walrelay's own table.
	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate: %s", res.stderr)
	}
	testenv.Exec(t, pgURL, `DROP TABLE walrelay_checkpoints; DROP TABLE walrelay_migrations`)

	// Rows from before the slot: the pending and failed ones are owed to
	// the broker, oldest first; the published one is not.
	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, status, created_at)
		VALUES ('order', 'before-2', 'created', '{}', 'failed', now() - interval '1 minute'),
		       ('order', 'before-1', 'created', '{}', 'pending', now() - interval '2 minutes'),
		       ('order', 'before-3', 'created', '{}', 'published', now() - interval '3 minutes')`)

	first := runWalrelay(t, 60*time.Second, nil, "setup", "--pg-url", pgURL, "--slot", slot, "--publication", publication)
	if first.exitCode != 0 {
		t.Fatalf("setup exited %d: %s", first.exitCode, first.stderr)
	}
	for _, want := range []string{
		"created table walrelay_checkpoints",
		`created publication "` + publication + `" for table public.outbox_messages`,
		`created replication slot "` + slot + `"`,
		"will first publish the pending rows created before the slot",
	} {
		if !strings.Contains(first.stdout, want) {
			t.Errorf("setup output lacks %q:\n%s", want, first.stdout)
		}
	}

	report := statusJSON(t, pgURL, slot, "--publication", publication)
	if !report.Slot.Exists || report.Slot.Plugin != "pgoutput" || report.Slot.Active {
		t.Errorf("slot after setup: %+v, want an inactive pgoutput slot", report.Slot)
	}
	if strings.Join(report.Publication.Tables, ",") != "public.outbox_messages" {
		t.Errorf("publication tables after setup = %v, want [public.outbox_messages]", report.Publication.Tables)
	}
	if !report.Checkpoint.TableExists {
		t.Error("setup did not create walrelay_checkpoints")
	}

	second := runWalrelay(t, 60*time.Second, nil, "setup", "--pg-url", pgURL, "--slot", slot, "--publication", publication)
	if second.exitCode != 0 {
		t.Fatalf("second setup exited %d: %s", second.exitCode, second.stderr)
	}
	if strings.Contains(second.stdout, "created") {
		t.Errorf("second setup created something:\n%s", second.stdout)
	}
	if !strings.Contains(second.stdout, `replication slot "`+slot+`" exists`) {
		t.Errorf("second setup output does not report the existing slot:\n%s", second.stdout)
	}

	cmd := startWalrelay(t, "run", "--create=false", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--slot", slot, "--publication", publication, "--http-addr", "")
	cmd.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, queue)

	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n) FROM generate_series(1, 3) n`)
	deliveries := consumer.Collect(t, 5, 30*time.Second)
	consumer.ExpectNone(t, 500*time.Millisecond)
	var ids []string
	for _, d := range deliveries {
		var body struct {
			AggregateID string `json:"aggregateId"`
		}
		if err := json.Unmarshal(d.Body, &body); err != nil {
			t.Fatalf("message body: %v: %s", err, d.Body)
		}
		ids = append(ids, body.AggregateID)
	}
	if got, want := strings.Join(ids, ","), "before-1,before-2,o-1,o-2,o-3"; got != want {
		t.Errorf("aggregate ids in delivery order = %s, want %s: the owed rows first, then the stream", got, want)
	}

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; stderr:\n%s", code, cmd.stderr.String())
	}
	if logs := cmd.stderr.String(); strings.Contains(logs, "created publication") || strings.Contains(logs, "created replication slot") {
		t.Errorf("run --create=false created something:\n%s", logs)
	}
}

// TestRunAsLeastPrivilegedRole checks the privileges that the operations
// guide lists: after setup by a superuser, a role with only LOGIN,
// REPLICATION, SELECT on the outbox table (for the owed backfill) and
// SELECT, INSERT, UPDATE on walrelay's two tables relays.
func TestRunAsLeastPrivilegedRole(t *testing.T) {
	testenv.RequireLogical(t)
	role := testenv.Name("walrelay_role")
	testenv.Exec(t, testenv.AdminURL(), `CREATE ROLE `+role+` LOGIN REPLICATION`)
	t.Cleanup(func() {
		// Runs after the database (and the grants in it) is dropped.
		testenv.Exec(t, testenv.AdminURL(), `DROP ROLE IF EXISTS `+role)
	})

	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")
	migrate(t, pgURL)

	if res := runWalrelay(t, 60*time.Second, nil, "setup", "--pg-url", pgURL, "--slot", slot); res.exitCode != 0 {
		t.Fatalf("setup: %s", res.stderr)
	}
	testenv.Exec(t, pgURL, `
		GRANT SELECT, INSERT, UPDATE ON walrelay_checkpoints TO `+role+`;
		GRANT SELECT ON walrelay_migrations TO `+role+`;
		GRANT SELECT ON outbox_messages TO `+role)

	roleURL := strings.Replace(pgURL, "postgres@", role+"@", 1)
	cmd := startWalrelay(t, "run", "--create=false", "--pg-url", roleURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--slot", slot, "--status-interval", "200ms", "--http-addr", "")
	cmd.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, queue)

	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', '{}' FROM generate_series(1, 5) n`)
	consumer.Collect(t, 5, 30*time.Second)

	// The checkpoint write needs the grants too.
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, pgURL, `SELECT count(*) FROM walrelay_checkpoints WHERE slot_name = $1`, slot) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the role stored no checkpoint within 10s; stderr:\n%s", cmd.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; stderr:\n%s", code, cmd.stderr.String())
	}
	if logs := cmd.stderr.String(); strings.Contains(logs, `"level":"warn"`) || strings.Contains(logs, `"level":"error"`) {
		t.Errorf("the least-privileged relay logged warnings or errors:\n%s", logs)
	}
}

func TestRunWithoutCreateNamesWhatIsMissing(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	slot := testenv.Name("slot")
	migrate(t, pgURL)

	noPublication := runWalrelay(t, 60*time.Second, nil, "run", "--create=false", "--pg-url", pgURL, "--slot", slot,
		"--http-addr", "")
	checkOneErrorLine(t, noPublication, `publication "walrelay" does not exist`, "walrelay setup", "CREATE PUBLICATION")
	if n := countRows(t, pgURL, `SELECT count(*) FROM pg_publication`); n != 0 {
		t.Errorf("run --create=false left %d publications, want 0", n)
	}

	testenv.Exec(t, pgURL, `CREATE PUBLICATION walrelay FOR TABLE outbox_messages WITH (publish = 'insert')`)

	noSlot := runWalrelay(t, 60*time.Second, nil, "run", "--create=false", "--pg-url", pgURL, "--slot", slot,
		"--http-addr", "")
	checkOneErrorLine(t, noSlot, `replication slot "`+slot+`" does not exist`, "walrelay setup")
	if n := countRows(t, testenv.AdminURL(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Errorf("run --create=false created slot %s", slot)
	}
}

func TestSetupFailoverNeedsPostgres17(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	migrate(t, pgURL)

	if n := countRows(t, pgURL, `SELECT current_setting('server_version_num')::int`); n >= failoverMinVersion {
		t.Skip("the server supports failover slots")
	}

	slot := testenv.Name("slot")
	res := runWalrelay(t, 60*time.Second, nil, "setup", "--failover-slot", "--pg-url", pgURL, "--slot", slot)
	checkOneErrorLine(t, res, "--failover-slot needs PostgreSQL 17")
	if n := countRows(t, testenv.AdminURL(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Errorf("setup --failover-slot on an old server created slot %s", slot)
	}
}

func TestTeardownAsksBeforeDropping(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	slot := testenv.Name("slot")
	migrate(t, pgURL)

	if res := runWalrelay(t, 60*time.Second, nil, "setup", "--pg-url", pgURL, "--slot", slot); res.exitCode != 0 {
		t.Fatalf("setup: %s", res.stderr)
	}
	slotCount := func() int {
		return countRows(t, testenv.AdminURL(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	}
	checkpointCount := func() int {
		return countRows(t, pgURL, `SELECT count(*) FROM walrelay_checkpoints WHERE slot_name = $1`, slot)
	}

	// Standard input is /dev/null: no terminal, so nothing is asked or done.
	rejected := runWalrelay(t, 30*time.Second, nil, "teardown", "--pg-url", pgURL, "--slot", slot)
	checkOneErrorLine(t, rejected, "not confirmed", "not a terminal", "--yes", slot)
	if slotCount() != 1 || checkpointCount() != 1 {
		t.Fatalf("teardown without --yes changed something: %d slots, %d checkpoints", slotCount(), checkpointCount())
	}

	// On a terminal, any reply but yes changes nothing.
	no := runOnTerminal(t, "no\n", []string{"WALRELAY_PG_URL=" + pgURL, "WALRELAY_SLOT=" + slot}, "teardown")
	if no.exitCode == 0 || !strings.Contains(no.stdout, `the reply was "no"`) {
		t.Errorf("teardown answered no: exit %d, output:\n%s", no.exitCode, no.stdout)
	}
	if slotCount() != 1 {
		t.Fatal("teardown answered no dropped the slot")
	}

	yes := runOnTerminal(t, "yes\n", []string{"WALRELAY_PG_URL=" + pgURL, "WALRELAY_SLOT=" + slot}, "teardown")
	if yes.exitCode != 0 {
		t.Fatalf("teardown answered yes: exit %d, output:\n%s", yes.exitCode, yes.stdout)
	}
	if !strings.Contains(yes.stdout, "Type yes to continue") || !strings.Contains(yes.stdout, `dropped replication slot "`+slot+`"`) {
		t.Errorf("teardown output lacks the question or the result:\n%s", yes.stdout)
	}
	if slotCount() != 0 || checkpointCount() != 0 {
		t.Errorf("after teardown: %d slots, %d checkpoints, want none", slotCount(), checkpointCount())
	}
	if n := countRows(t, pgURL, `SELECT count(*) FROM pg_publication WHERE pubname = 'walrelay'`); n != 1 {
		t.Errorf("teardown without --drop-publication dropped the publication")
	}

	// --yes skips the question; the slot is gone already, which is fine.
	again := runWalrelay(t, 30*time.Second, nil, "teardown", "--yes", "--drop-publication", "--pg-url", pgURL, "--slot", slot)
	if again.exitCode != 0 {
		t.Fatalf("teardown --yes --drop-publication exited %d: %s", again.exitCode, again.stderr)
	}
	if !strings.Contains(again.stdout, "does not exist") || !strings.Contains(again.stdout, `dropped publication "walrelay"`) {
		t.Errorf("teardown --yes --drop-publication output:\n%s", again.stdout)
	}
	if n := countRows(t, pgURL, `SELECT count(*) FROM pg_publication`); n != 0 {
		t.Errorf("%d publications left after --drop-publication", n)
	}
}

// runOnTerminal runs the binary on a pseudo-terminal through script(1),
// typing input. The output is the terminal's, stdout and stderr together.
func runOnTerminal(t *testing.T, input string, env []string, args ...string) result {
	t.Helper()

	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) from util-linux is needed to run walrelay on a terminal")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	command := binary + " " + strings.Join(args, " ")
	cmd := exec.CommandContext(ctx, script, "--quiet", "--return", "--command", command, "/dev/null")
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("walrelay %s on a terminal did not finish; output:\n%s", command, out)
	}

	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("run script: %v", err)
	}
	return result{exitCode: code, stdout: string(out)}
}

// countRows runs a query that returns one integer.
func countRows(t *testing.T, url, sql string, args ...any) int {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return n
}
