package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestMigrateTwice(t *testing.T) {
	pgURL := testenv.Database(t)

	first := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL)
	if first.exitCode != 0 {
		t.Fatalf("first migrate exited %d: %s", first.exitCode, first.stderr)
	}
	if !strings.Contains(first.stdout, "applied") {
		t.Errorf("first migrate printed %q, want the applied versions", first.stdout)
	}

	second := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL)
	if second.exitCode != 0 {
		t.Fatalf("second migrate exited %d: %s", second.exitCode, second.stderr)
	}
	if !strings.Contains(second.stdout, "up to date") || strings.Contains(second.stdout, "applied") {
		t.Errorf("second migrate printed %q, want nothing applied", second.stdout)
	}
}

func TestRunFromEnvironmentAndStopCleanly(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")

	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate: %s", res.stderr)
	}

	// Configured through WALRELAY_* variables only.
	cmd := startWalrelayEnv(t, []string{
		"WALRELAY_PG_URL=" + pgURL,
		"WALRELAY_AMQP_URL=" + testenv.AMQPURL(),
		"WALRELAY_EXCHANGE=" + exchange,
		"WALRELAY_SLOT=" + slot,
		"WALRELAY_STATUS_INTERVAL=1s",
	}, "run")
	cmd.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, queue)

	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n) FROM generate_series(1, 100) n`)
	consumer.Collect(t, 100, 30*time.Second)

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, cmd.stderr.String())
	}

	logs := cmd.stderr.String()
	for _, want := range []string{`"message":"relay started"`, `"message":"relay stopped"`, `"slot":"` + slot + `"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "guest:guest") {
		t.Errorf("logs contain the broker password:\n%s", logs)
	}
}

func TestRunMillionRowTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("the million-row transaction takes about a minute")
	}
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)

	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate: %s", res.stderr)
	}

	cmd := startWalrelay(t, "run", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--slot", testenv.Name("slot"), "--status-interval", "1s")
	cmd.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, queue)

	const rows = 1_000_000
	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n, 'filler', repeat('x', 200))
		FROM generate_series(1, $1::int) n`, rows)

	started := time.Now()
	next := 1
	prefix := []byte(`"payload":{"n": `)
	for next <= rows {
		d := consumer.Next(t, 60*time.Second)
		i := bytes.Index(d.Body, prefix)
		if i < 0 {
			t.Fatalf("message %d has no payload.n: %.200s", next, d.Body)
		}
		rest := d.Body[i+len(prefix):]
		end := bytes.IndexByte(rest, ',')
		if end < 0 || string(rest[:end]) != strconv.Itoa(next) {
			t.Fatalf("message %d out of order: %.200s", next, d.Body)
		}
		next++
	}
	elapsed := time.Since(started)

	peak := cmd.peakRSS(t)
	t.Logf("relayed %d rows of one transaction in %s (%.0f msg/s); peak RSS %.1f MiB",
		rows, elapsed.Round(time.Millisecond), float64(rows)/elapsed.Seconds(), float64(peak)/(1<<20))

	// Memory is bounded by the in-flight window, not by the transaction.
	if peak > 256<<20 {
		t.Errorf("peak RSS %d MiB during a %d-row transaction, want under 256 MiB", peak>>20, rows)
	}

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, cmd.stderr.String())
	}
}

// startWalrelayEnv is startWalrelay with extra environment variables.
func startWalrelayEnv(t *testing.T, env []string, args ...string) *background {
	t.Helper()

	saved := cleanEnvHook
	cleanEnvHook = func() []string { return append(saved(), env...) }
	defer func() { cleanEnvHook = saved }()

	return startWalrelay(t, args...)
}

func TestReplayDryRunPrintsCount(t *testing.T) {
	pgURL := testenv.Database(t)
	exchange, _ := testenv.Queue(t)
	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate: %s", res.stderr)
	}
	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, created_at)
		SELECT 'order', 'o-' || n, 'created', '{}', timestamptz '2026-03-01 00:00:00+00' + n * interval '1 day'
		FROM generate_series(1, 10) n`)

	res := runWalrelay(t, 60*time.Second, nil, "replay", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--since", "2026-03-04", "--until", "2026-03-08T00:00:00Z", "--dry-run")
	if res.exitCode != 0 {
		t.Fatalf("replay exited %d: %s", res.exitCode, res.stderr)
	}
	if !strings.Contains(res.stdout, "replay: would publish 5 rows") {
		t.Errorf("replay printed %q, want the count of rows 3 to 7", res.stdout)
	}
}
