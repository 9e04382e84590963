package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

// These tests send SIGKILL to a walrelay process and restart it. Every row
// carries payload {"n": n}, with n in commit order, so the consumer can
// check for gaps and for the order rule.

const (
	// crashEdgeRows is the number of rows committed in one transaction
	// before and after the transaction that is relayed during the crash.
	crashEdgeRows = 100

	// crashWindow is walrelay's default --max-in-flight.
	crashWindow = 1000
)

func TestCrashMidTransaction(t *testing.T) {
	const bigRows = 100_000
	c := newCrashSetup(t)

	first := c.start(t, c.pgURL)
	first.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, c.queue)

	const total = crashEdgeRows + bigRows + crashEdgeRows
	tl := newTally(total)

	// Rows before the big transaction are confirmed and flushed, so the
	// restart must not send them again.
	beforeFirst := insertCommitted(t, c.pgURL, 0, crashEdgeRows)
	tl.receiveUntil(t, consumer, crashEdgeRows, 30*time.Second)
	waitSlotPast(t, c.pgURL, c.slot, beforeFirst)

	beforeBig := insertCommitted(t, c.pgURL, crashEdgeRows, bigRows)
	tl.receiveUntil(t, consumer, crashEdgeRows+bigRows*3/10, 2*time.Minute)
	sigkill(t, first)
	seenBeforeCrash := tl.distinct - crashEdgeRows

	second := c.start(t, c.pgURL)
	beforeLast := insertCommitted(t, c.pgURL, crashEdgeRows+bigRows, crashEdgeRows)
	tl.receiveUntil(t, consumer, total, 3*time.Minute)

	dups := checkLogOrder(t, tl.order, total)
	t.Logf("killed after %d of %d rows of one transaction arrived; %d messages in all, %d duplicates",
		seenBeforeCrash, bigRows, len(tl.order), dups)

	for n := 0; n < crashEdgeRows; n++ {
		if tl.counts[n] != 1 {
			t.Fatalf("row n=%d, confirmed before the crash, was delivered %d times", n, tl.counts[n])
		}
	}
	// The checkpoint stores how much of the unfinished transaction the
	// broker had confirmed, so the restart skips that part of the replay.
	if tl.counts[crashEdgeRows] != 1 {
		t.Errorf("first row of the crashed transaction delivered %d times, want once: the stored progress was not used",
			tl.counts[crashEdgeRows])
	}
	if dups > bigRows {
		t.Errorf("%d duplicates, want at most the %d rows of the crashed transaction", dups, bigRows)
	}

	waitSlotPast(t, c.pgURL, c.slot, beforeBig)
	waitSlotPast(t, c.pgURL, c.slot, beforeLast)
	if code := second.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, second.stderr.String())
	}
}

func TestCrashDuringCopy(t *testing.T) {
	const copyRows = 50_000
	c := newCrashSetup(t)

	first := c.start(t, c.pgURL)
	first.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, c.queue)

	const total = crashEdgeRows + copyRows + crashEdgeRows
	tl := newTally(total)

	beforeFirst := insertCommitted(t, c.pgURL, 0, crashEdgeRows)
	tl.receiveUntil(t, consumer, crashEdgeRows, 30*time.Second)
	waitSlotPast(t, c.pgURL, c.slot, beforeFirst)

	// COPY writes multi-insert WAL records, which logical decoding turns
	// into one Insert message per row.
	beforeCopy := copyCommitted(t, c.pgURL, crashEdgeRows, copyRows)
	tl.receiveUntil(t, consumer, crashEdgeRows+copyRows/5, time.Minute)
	sigkill(t, first)
	seenBeforeCrash := tl.distinct - crashEdgeRows

	second := c.start(t, c.pgURL)
	beforeLast := insertCommitted(t, c.pgURL, crashEdgeRows+copyRows, crashEdgeRows)
	tl.receiveUntil(t, consumer, total, 2*time.Minute)

	dups := checkLogOrder(t, tl.order, total)
	t.Logf("killed after %d of %d copied rows arrived; %d messages in all, %d duplicates",
		seenBeforeCrash, copyRows, len(tl.order), dups)

	for n := 0; n < crashEdgeRows; n++ {
		if tl.counts[n] != 1 {
			t.Fatalf("row n=%d, confirmed before the crash, was delivered %d times", n, tl.counts[n])
		}
	}
	if tl.counts[crashEdgeRows] != 1 {
		t.Errorf("first copied row delivered %d times, want once: the stored progress was not used", tl.counts[crashEdgeRows])
	}
	if dups > copyRows {
		t.Errorf("%d duplicates, want at most the %d rows of the COPY", dups, copyRows)
	}

	waitSlotPast(t, c.pgURL, c.slot, beforeCopy)
	waitSlotPast(t, c.pgURL, c.slot, beforeLast)
	if code := second.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, second.stderr.String())
	}
}

func TestCrashRestartWhileSlotHeld(t *testing.T) {
	const (
		rows  = 10_000
		batch = 100
	)
	c := newCrashSetup(t)

	// The first process reaches Postgres through a proxy. Holding the
	// proxy before the SIGKILL hides the closed socket from the walsender,
	// as a dead host or network path would, so the walsender keeps the
	// slot until wal_sender_timeout, set to 3 s for this connection only.
	proxy := newHoldProxy(t, "127.0.0.1:5432")
	viaProxy := withOptions(t, testenv.ThroughProxy(c.pgURL, "127.0.0.1:5432", proxy.addr()), "-c wal_sender_timeout=3s")

	first := c.start(t, viaProxy)
	first.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, c.queue)
	tl := newTally(rows)

	writer := startBatchWriter(c.pgURL, rows, batch)
	tl.receiveUntil(t, consumer, rows*3/10, time.Minute)

	proxy.hold()
	sigkill(t, first)
	holder := slotHolderPID(t, c.pgURL, c.slot)
	if holder == 0 {
		t.Fatal("the slot is free right after the crash; the held proxy should keep the old walsender")
	}

	second := c.start(t, c.pgURL)
	second.waitForLog(t, fmt.Sprintf("is active for PID %d", holder), 30*time.Second)
	if line := logLineWith(second.stderr.String(), "is active for PID"); !strings.Contains(line, `"message":"relay session failed; retrying"`) {
		t.Errorf("the slot-active error was not logged as a retry: %s", line)
	}
	second.waitForLog(t, `"relay session recovered"`, 60*time.Second)

	lastLSN := writer.wait(t)
	tl.receiveUntil(t, consumer, rows, 2*time.Minute)
	dups := checkLogOrder(t, tl.order, rows)
	t.Logf("restart waited for walsender %d; %d messages, %d duplicates", holder, len(tl.order), dups)

	// After a crash the server resumes from the last reported position:
	// the window, plus the partly confirmed transaction, plus what was
	// confirmed but not yet reported (status updates go out at most once
	// per 100 ms).
	if limit := crashWindow + 10*batch; dups > limit {
		t.Errorf("%d duplicates, want at most %d", dups, limit)
	}
	if now := slotHolderPID(t, c.pgURL, c.slot); now == holder || now == 0 {
		t.Errorf("slot held by pid %d after the restart, want the new process's walsender instead of %d", now, holder)
	}

	waitSlotPast(t, c.pgURL, c.slot, lastLSN)
	if code := second.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, second.stderr.String())
	}
}

func TestCrashStandbyTakesOver(t *testing.T) {
	const (
		rows  = 5000
		batch = 50
	)
	c := newCrashSetup(t)

	active := c.start(t, c.pgURL)
	active.waitForLog(t, `"relay started"`, 60*time.Second)
	consumer := testenv.Consume(t, c.queue)
	tl := newTally(rows)
	holder := slotHolderPID(t, c.pgURL, c.slot)

	// A second relay on the same slot waits as a standby: it retries with
	// backoff, neither exits nor streams.
	standby := c.start(t, c.pgURL)
	standby.waitForLog(t, fmt.Sprintf("is active for PID %d", holder), 30*time.Second)

	writer := startBatchWriter(c.pgURL, rows, batch)
	tl.receiveUntil(t, consumer, rows/3, time.Minute)
	standby.waitForLog(t, `"attempt":2`, 30*time.Second)

	logs := standby.stderr.String()
	for _, streaming := range []string{`"relay started"`, `"relay session recovered"`} {
		if strings.Contains(logs, streaming) {
			t.Fatalf("the standby logged %s while the active relay held the slot:\n%s", streaming, logs)
		}
	}

	// Kill the active relay: the standby takes the slot over.
	sigkill(t, active)
	standby.waitForLog(t, `"relay session recovered"`, time.Minute)

	lastLSN := writer.wait(t)
	tl.receiveUntil(t, consumer, rows, 2*time.Minute)
	dups := checkLogOrder(t, tl.order, rows)
	t.Logf("standby took over from walsender %d; %d messages, %d duplicates", holder, len(tl.order), dups)

	if limit := crashWindow + 10*batch; dups > limit {
		t.Errorf("%d duplicates, want at most %d", dups, limit)
	}

	waitSlotPast(t, c.pgURL, c.slot, lastLSN)
	if code := standby.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, standby.stderr.String())
	}
}

// crashSetup is one crash test's database, exchange, queue and slot.
type crashSetup struct {
	pgURL    string
	exchange string
	queue    string
	slot     string
}

// newCrashSetup creates a migrated database and a queue bound to a fresh
// exchange.
func newCrashSetup(t *testing.T) *crashSetup {
	t.Helper()
	testenv.RequireLogical(t)

	c := &crashSetup{pgURL: testenv.Database(t), slot: testenv.Name("slot")}
	c.exchange, c.queue = testenv.Queue(t)

	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", c.pgURL); res.exitCode != 0 {
		t.Fatalf("migrate exited %d: %s", res.exitCode, res.stderr)
	}

	return c
}

// start starts `walrelay run` against pgURL with a 1 s status interval.
func (c *crashSetup) start(t *testing.T, pgURL string) *background {
	t.Helper()
	return startWalrelay(t, "run", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", c.exchange, "--slot", c.slot, "--status-interval", "1s", "--http-addr=")
}

// sigkill sends SIGKILL to the process and waits until it is gone.
func sigkill(t *testing.T, b *background) {
	t.Helper()

	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill walrelay: %v", err)
	}

	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("walrelay still runs 10s after SIGKILL")
	}
}

// withOptions returns the Postgres URL with the libpq options parameter set.
func withOptions(t *testing.T, pgURL, options string) string {
	t.Helper()

	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatalf("parse %s: %v", pgURL, err)
	}
	q := u.Query()
	q.Set("options", options)
	// pgconn decodes %20 but not + as a space.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")

	return u.String()
}

// logLineWith returns the first line of logs that contains text.
func logLineWith(logs, text string) string {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, text) {
			return line
		}
	}
	return ""
}

// insertSQL inserts the rows n = $1 .. $2.
const insertSQL = `
	INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
	SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n)
	FROM generate_series($1::int, $2::int) AS n`

// insertBatch inserts rows [from, from+count) in one transaction and
// returns the WAL insert position just before its commit: the slot's
// confirmed position passes it only once the transaction is confirmed.
func insertBatch(ctx context.Context, conn *pgx.Conn, from, count int) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)

	if _, err := tx.Exec(ctx, insertSQL, from, from+count-1); err != nil {
		return "", err
	}

	var lsn string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return "", err
	}

	return lsn, tx.Commit(ctx)
}

// insertCommitted is insertBatch on a new connection, failing the test on
// error.
func insertCommitted(t *testing.T, pgURL string, from, count int) string {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	lsn, err := insertBatch(ctx, conn, from, count)
	if err != nil {
		t.Fatalf("insert rows %d..%d: %v", from, from+count-1, err)
	}
	return lsn
}

// copyCommitted writes rows [from, from+count) with one COPY FROM STDIN in
// one transaction and returns the WAL insert position just before its
// commit.
func copyCommitted(t *testing.T, pgURL string, from, count int) string {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)

	columns := []string{"aggregate_type", "aggregate_id", "event_type", "payload"}
	source := pgx.CopyFromSlice(count, func(i int) ([]any, error) {
		n := from + i
		return []any{"order", "o-" + strconv.Itoa(n), "created", []byte(`{"n":` + strconv.Itoa(n) + `}`)}, nil
	})
	copied, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox_messages"}, columns, source)
	if err != nil {
		t.Fatalf("copy rows: %v", err)
	}
	if copied != int64(count) {
		t.Fatalf("copied %d rows, want %d", copied, count)
	}

	var lsn string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit copy: %v", err)
	}
	return lsn
}

// batchWriter inserts rows in the background.
type batchWriter struct {
	done    chan struct{}
	lastLSN string
	err     error
}

// startBatchWriter inserts rows [0, rows) in transactions of batch rows,
// 10 ms apart, on its own connection.
func startBatchWriter(pgURL string, rows, batch int) *batchWriter {
	w := &batchWriter{done: make(chan struct{})}

	go func() {
		defer close(w.done)

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()

		conn, err := pgx.Connect(ctx, pgURL)
		if err != nil {
			w.err = err
			return
		}
		defer conn.Close(ctx)

		for n := 0; n < rows; n += batch {
			if w.lastLSN, err = insertBatch(ctx, conn, n, min(batch, rows-n)); err != nil {
				w.err = fmt.Errorf("insert rows from %d: %w", n, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	return w
}

// wait waits for the writer and returns the position just before its last
// commit.
func (w *batchWriter) wait(t *testing.T) string {
	t.Helper()

	select {
	case <-w.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("writer did not finish within 2 minutes")
	}
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.lastLSN
}

// waitSlotPast waits up to 30 s until the slot's confirmed_flush_lsn is
// past lsn.
func waitSlotPast(t *testing.T, pgURL, slot, lsn string) {
	t.Helper()
	if err := testenv.WaitSlotPast(pgURL, slot, lsn, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// slotHolderPID returns the pid of the walsender that holds slot, or 0.
func slotHolderPID(t *testing.T, pgURL, slot string) int32 {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	var pid *int32
	if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil {
		t.Fatalf("query slot %s: %v", slot, err)
	}
	if pid == nil {
		return 0
	}
	return *pid
}

// tally records the payload n of every delivery in arrival order, for rows
// n in [0, total).
type tally struct {
	order    []int
	counts   []int // deliveries per n
	distinct int
}

func newTally(total int) *tally {
	return &tally{counts: make([]int, total)}
}

// receiveUntil receives until distinct rows have arrived, failing the test
// after timeout or on a delivery whose n is out of range.
func (tl *tally) receiveUntil(t *testing.T, c *testenv.Consumer, distinct int, timeout time.Duration) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for tl.distinct < distinct {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			t.Fatalf("received %d distinct rows within %s, want %d", tl.distinct, timeout, distinct)
		}

		d := c.Next(t, remaining)
		n := payloadNumber(t, d.Body)
		if n < 0 || n >= len(tl.counts) {
			t.Fatalf("delivery %d has n=%d, outside the rows [0, %d) of this test", len(tl.order), n, len(tl.counts))
		}

		tl.order = append(tl.order, n)
		if tl.counts[n] == 0 {
			tl.distinct++
		}
		tl.counts[n]++
	}
}

// payloadNumber returns payload.n of a message body. It looks for the
// text that Postgres's jsonb output gives first, because decoding a few
// hundred thousand bodies as JSON is slow under the race detector.
func payloadNumber(t *testing.T, body []byte) int {
	t.Helper()

	prefix := []byte(`"payload":{"n": `)
	if i := bytes.Index(body, prefix); i >= 0 {
		rest := body[i+len(prefix):]
		if end := bytes.IndexByte(rest, '}'); end > 0 {
			if n, err := strconv.Atoi(string(rest[:end])); err == nil {
				return n
			}
		}
	}

	var msg struct {
		Payload struct {
			N *int `json:"n"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Payload.N == nil {
		t.Fatalf("message has no payload.n: %v: %.300s", err, body)
	}
	return *msg.Payload.N
}

// checkLogOrder asserts that order contains every n in [0, total) and
// follows the log order rule. Each delivery is the next row, or a rewind to
// an earlier row after a failure (a repeated suffix), never a jump ahead.
// It returns the number of duplicates.
func checkLogOrder(t *testing.T, order []int, total int) int {
	t.Helper()

	dups, err := testenv.CheckLogOrder(order, 0, total)
	if err != nil {
		t.Fatal(err)
	}
	return dups
}
