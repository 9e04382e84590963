//go:build soak

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

// binary is the walrelay binary that TestMain builds.
var binary string

func TestMain(m *testing.M) {
	built, remove, err := testenv.BuildWalrelay("../cmd/walrelay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = built

	code := m.Run()
	remove()
	os.Exit(code)
}

// settings are the soak parameters, read from the environment.
type settings struct {
	duration      time.Duration // WALRELAY_SOAK_DURATION, default 2m: how long rows are written
	rate          int           // WALRELAY_SOAK_RATE, default 500: rows per second
	faultInterval time.Duration // WALRELAY_SOAK_FAULT_INTERVAL, default 10s: mean time between faults
	seed          uint64        // WALRELAY_SOAK_SEED, default the clock: seed of every random choice
}

// maxDuration leaves time for the final delivery within the 30 minute
// timeout that make soak sets.
const maxDuration = 25 * time.Minute

func readSettings(t *testing.T) settings {
	t.Helper()

	s := settings{duration: 2 * time.Minute, rate: 500, faultInterval: 10 * time.Second, seed: uint64(time.Now().UnixNano())}

	durationSetting := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("invalid %s %q: want a positive Go duration such as 2m", name, v)
			}
			*dst = d
		}
	}
	durationSetting("WALRELAY_SOAK_DURATION", &s.duration)
	durationSetting("WALRELAY_SOAK_FAULT_INTERVAL", &s.faultInterval)

	if v := os.Getenv("WALRELAY_SOAK_RATE"); v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r < 1 || r > 20_000 {
			t.Fatalf("invalid WALRELAY_SOAK_RATE %q: want rows per second from 1 to 20000", v)
		}
		s.rate = r
	}
	if v := os.Getenv("WALRELAY_SOAK_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("invalid WALRELAY_SOAK_SEED %q: want an unsigned integer", v)
		}
		s.seed = seed
	}

	if s.duration > maxDuration {
		t.Fatalf("WALRELAY_SOAK_DURATION %s is over %s, which would not finish within make soak's 30m timeout", s.duration, maxDuration)
	}

	return s
}

func TestSoak(t *testing.T) {
	cfg := readSettings(t)
	testenv.RequireLogical(t)
	plan := planBatches(rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x7717e)), int(cfg.duration.Seconds()*float64(cfg.rate)))
	rows := plan.rows
	t.Logf("soak: %s at %d rows/s plus %d transactions of %d rows (%d rows), a fault every %s on average, seed %d",
		cfg.duration, cfg.rate, plan.largeCount, largeBatch, rows, cfg.faultInterval, cfg.seed)

	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("soak_slot")
	migrate(t, pgURL)

	// The relay reaches both servers through proxies that the faults cut
	// and stall; the writer and the consumer connect directly.
	pgProxy := testenv.NewProxy(t, "127.0.0.1:5432")
	amqpProxy := testenv.NewProxy(t, "127.0.0.1:5672")
	args := []string{"run",
		"--pg-url", testenv.ThroughProxy(pgURL, "127.0.0.1:5432", pgProxy.Addr),
		"--amqp-url", testenv.ThroughProxy(testenv.AMQPURL(), "127.0.0.1:5672", amqpProxy.Addr),
		"--exchange", exchange, "--slot", slot,
		"--status-interval", "1s", "--confirm-timeout", "5s", "--receive-timeout", "10s",
		"--shutdown-timeout", "10s", "--http-addr=", "--log-format", "json",
	}

	logs := newLogFile(t)
	relay := startRelay(t, logs, args)
	logs.waitFor(t, `"relay started"`, 0, time.Minute)

	stats := newDeliveryStats(rows)
	stopConsumer := consume(t, queue, stats)
	defer stopConsumer()

	writer := startWriter(pgURL, plan, cfg.rate, cfg.duration, stats)

	// Inject faults until the writer is done.
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x5eed))
	inj := &injector{t: t, rng: rng, pgURL: pgURL, slot: slot, pg: pgProxy, amqp: amqpProxy,
		logs: logs, args: args, relay: relay, started: time.Now()}
	for !writer.finished() {
		wait := time.Duration(float64(cfg.faultInterval) * (0.5 + rng.Float64()))
		select {
		case <-writer.done:
		case <-time.After(wait):
			inj.inject()
		}
		inj.checkAlive()
	}
	lastLSN := writer.wait(t)

	// Deliver the rest. The relay's backoff may be near its 30 s maximum
	// after many faults in a row, so this waits a few minutes.
	deadline := time.Now().Add(5 * time.Minute)
	for stats.distinctCount() < rows && time.Now().Before(deadline) {
		inj.checkAlive()
		time.Sleep(200 * time.Millisecond)
	}

	report := stats.report()
	t.Logf("faults: %s", inj.summary())
	t.Logf("rows %d, delivered %d distinct in %d messages: %d lost, %d duplicates",
		rows, report.distinct, report.messages, rows-report.distinct, report.messages-report.distinct)
	t.Logf("longest delivery gap (wait for an already committed row): %s, ending %s into the run; commit-to-receipt delay max %s, p99 %s",
		report.maxGap.Round(time.Millisecond), report.maxGapAt.Sub(inj.started).Round(time.Second),
		report.maxDelay.Round(time.Millisecond), report.p99Delay.Round(time.Millisecond))
	t.Logf("relay log: %d session retries, %d process starts; the log tail follows on failure",
		logs.count(`"relay session failed; retrying"`), logs.count(`"server checked"`))
	t.Logf("reconnects of the test's own writer %d and consumer %d, caused by other users of the servers",
		writer.reconnects.Load(), stats.consumerReconnects.Load())

	if lost := rows - report.distinct; lost != 0 {
		t.Errorf("%d of %d rows were not delivered within 5 minutes of the last insert; first missing n=%d",
			lost, rows, report.firstMissing)
	}
	if report.orderErrors != 0 {
		t.Errorf("%d deliveries broke log order; the first: %s", report.orderErrors, report.firstOrderError)
	}

	if report.distinct == rows {
		waitSlotPast(t, pgURL, slot, lastLSN)
	}
	if code := inj.relay.stop(t, 40*time.Second); code != 0 {
		t.Errorf("walrelay exited %d after SIGTERM, want 0", code)
	}
	if t.Failed() {
		t.Logf("relay log tail:\n%s", logs.tail(60))
	}
}

// migrate runs `walrelay migrate` on the database.
func migrate(t *testing.T, pgURL string) {
	t.Helper()

	cmd := exec.Command(binary, "migrate", "--pg-url", pgURL)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("walrelay migrate: %v: %s", err, out)
	}
}

// cleanEnv returns the environment without WALRELAY_* and PG* variables, so
// neither the soak settings nor the developer's reach the relay.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WALRELAY_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// largeBatch is the size of the occasional large transaction: more than
// walrelay's default in-flight window of 1000, so that faults also hit
// partly confirmed transactions.
const largeBatch = 2000

// batchPlan is the writer's sequence of transaction sizes.
type batchPlan struct {
	sizes      []int
	large      []bool // the transaction is a large one, written on top of the rate
	rows       int
	largeCount int
}

// planBatches plans transactions of 1 to 20 rows that add up to steadyRows,
// with a transaction of largeBatch rows added after about one in 2000 of
// them.
func planBatches(rng *rand.Rand, steadyRows int) batchPlan {
	var p batchPlan
	for steady := 0; steady < steadyRows; {
		size := min(1+rng.IntN(20), steadyRows-steady)
		p.sizes = append(p.sizes, size)
		p.large = append(p.large, false)
		steady += size
		p.rows += size

		if rng.IntN(2000) == 0 {
			p.sizes = append(p.sizes, largeBatch)
			p.large = append(p.large, true)
			p.rows += largeBatch
			p.largeCount++
		}
	}
	return p
}

// writer inserts the rows n = 0 .. rows-1 of a plan on one connection, so
// commit order is n order. The small transactions follow the rate, and the
// large ones go in at once, on top of it.
type writer struct {
	done       chan struct{}
	lastLSN    string
	err        error
	reconnects atomic.Int64
}

func startWriter(pgURL string, plan batchPlan, rate int, duration time.Duration, stats *deliveryStats) *writer {
	w := &writer{done: make(chan struct{})}

	go func() {
		defer close(w.done)

		ctx, cancel := context.WithTimeout(context.Background(), duration+5*time.Minute)
		defer cancel()

		conn, err := pgx.Connect(ctx, pgURL)
		if err != nil {
			w.err = err
			return
		}
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()

		started := time.Now()
		n, steady := 0, 0
		for i, size := range plan.sizes {
			if !plan.large[i] {
				steady += size
				due := started.Add(time.Duration(float64(steady) / float64(rate) * float64(time.Second)))
				time.Sleep(time.Until(due))
			}

			lsn, err := insertBatch(ctx, conn, n, size)
			if err != nil {
				conn.Close(context.Background())
				conn, lsn, err = w.retryBatch(ctx, pgURL, n, size)
				if err != nil {
					w.err = fmt.Errorf("insert rows from n=%d: %w", n, err)
					return
				}
			}
			stats.committed(n, size, time.Now())
			if lsn != "" {
				w.lastLSN = lsn
			}
			n += size
		}
	}()

	return w
}

// retryBatch reconnects after a failed insert and inserts rows [from,
// from+count) again unless they committed before the failure. Other tests
// on the same server may restart it or end this connection. It returns the
// new connection and, when it inserted the rows, the position before the
// commit.
func (w *writer) retryBatch(ctx context.Context, pgURL string, from, count int) (*pgx.Conn, string, error) {
	var lastErr error
	for range 60 {
		time.Sleep(time.Second)
		w.reconnects.Add(1)

		conn, err := pgx.Connect(ctx, pgURL)
		if err != nil {
			lastErr = err
			continue
		}

		var found int
		err = conn.QueryRow(ctx, `
			SELECT count(*) FROM outbox_messages WHERE (payload->>'n')::int BETWEEN $1 AND $2`,
			from, from+count-1).Scan(&found)
		switch {
		case err != nil:
			lastErr = err
		case found == count:
			return conn, "", nil // committed before the connection failed
		case found != 0:
			conn.Close(ctx)
			return nil, "", fmt.Errorf("%d of the %d rows from n=%d committed", found, count, from)
		default:
			lsn, err := insertBatch(ctx, conn, from, count)
			if err == nil {
				return conn, lsn, nil
			}
			lastErr = err
		}
		conn.Close(ctx)
	}

	return nil, "", fmt.Errorf("no insert succeeded for a minute: %w", lastErr)
}

func (w *writer) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// wait waits for the writer and returns the WAL position just before its
// last commit.
func (w *writer) wait(t *testing.T) string {
	t.Helper()

	<-w.done
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.lastLSN
}

// insertBatch inserts rows [from, from+count) in one transaction and
// returns the WAL insert position just before its commit.
func insertBatch(ctx context.Context, conn *pgx.Conn, from, count int) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)

	_, err = tx.Exec(ctx, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n)
		FROM generate_series($1::int, $2::int) AS n`, from, from+count-1)
	if err != nil {
		return "", err
	}

	var lsn string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return "", err
	}

	return lsn, tx.Commit(ctx)
}

// waitSlotPast waits up to 30 s until the slot's confirmed_flush_lsn is
// past lsn.
func waitSlotPast(t *testing.T, pgURL, slot, lsn string) {
	t.Helper()
	if err := testenv.WaitSlotPast(pgURL, slot, lsn, 30*time.Second); err != nil {
		t.Error(err)
	}
}

// relayProcess is one walrelay process.
type relayProcess struct {
	cmd  *exec.Cmd
	done chan error // receives Wait's result once, then is refilled by readers
}

// startRelay starts the binary with args, its stderr appended to logs;
// cleanup kills it if it still runs.
func startRelay(t *testing.T, logs *logFile, args []string) *relayProcess {
	t.Helper()

	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	cmd.Stderr = logs.file
	if err := cmd.Start(); err != nil {
		t.Fatalf("start walrelay: %v", err)
	}

	p := &relayProcess{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if _, exited := p.exited(); !exited {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})

	return p
}

// exited reports whether the process has ended, and Wait's error.
func (p *relayProcess) exited() (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	default:
		return nil, false
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *relayProcess) kill(t *testing.T) {
	t.Helper()

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill walrelay: %v", err)
	}
	err := <-p.done
	p.done <- err
}

// stop sends SIGTERM and returns the exit code, or -1 after timeout.
func (p *relayProcess) stop(t *testing.T, timeout time.Duration) int {
	t.Helper()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("signal walrelay: %v", err)
		return -1
	}

	select {
	case err := <-p.done:
		p.done <- err
		if exitErr, ok := err.(*exec.ExitError); ok {
			return exitErr.ExitCode()
		}
		return 0
	case <-time.After(timeout):
		return -1
	}
}

// logFile collects the stderr of every relay process of the run.
type logFile struct {
	file *os.File
	mu   sync.Mutex
}

func newLogFile(t *testing.T) *logFile {
	t.Helper()

	f, err := os.Create(filepath.Join(t.TempDir(), "walrelay.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })

	return &logFile{file: f}
}

func (l *logFile) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()

	data, err := os.ReadFile(l.file.Name())
	if err != nil {
		return fmt.Sprintf("(cannot read the relay log: %v)", err)
	}
	return string(data)
}

// waitFor waits until the log, from byte offset on, contains text.
func (l *logFile) waitFor(t *testing.T, text string, offset int, timeout time.Duration) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		if s := l.text(); len(s) > offset && strings.Contains(s[offset:], text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("walrelay did not log %q within %s; log tail:\n%s", text, timeout, l.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *logFile) count(text string) int {
	return strings.Count(l.text(), text)
}

// tail returns the last n lines of the log.
func (l *logFile) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.text(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
