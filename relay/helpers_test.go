package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/internal/testenv"
	"github.com/walrelay/walrelay/migrations"
	"github.com/walrelay/walrelay/replication"
)

// fixture is one test's database, exchange and queue.
type fixture struct {
	pgURL    string
	exchange string
	queue    string
	slot     string
}

// newFixture creates a database with the Event-Forge tables, an exchange
// and a bound queue.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.RequireLogical(t)

	f := &fixture{pgURL: testenv.Database(t), slot: testenv.Name("slot")}
	f.exchange, f.queue = testenv.Queue(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := migrations.Up(ctx, f.pgURL, zerolog.Nop()); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	return f
}

// config returns a relay configuration for the fixture with short
// intervals.
func (f *fixture) config() Config {
	return Config{
		PostgresURL:       f.pgURL,
		AMQPURL:           testenv.AMQPURL(),
		Exchange:          f.exchange,
		NoDeclareExchange: true,
		Slot:              f.slot,
		Publication:       "walrelay_test",
		StatusInterval:    time.Second,
		RetryInitial:      50 * time.Millisecond,
		RetryMax:          time.Second,
	}
}

// running is a relay started by start.
type running struct {
	cancel   context.CancelFunc
	done     chan struct{} // closed when Run returns
	err      error         // Run's result, valid after done
	reported bool          // err was handed to the test already
}

// start runs a relay in the background and waits until it streams; stop or
// the test's cleanup ends it.
func start(t *testing.T, cfg Config) *running {
	t.Helper()

	log := zerolog.New(io.Discard)
	if testing.Verbose() {
		log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}

	r, err := New(cfg, log)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	run := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		run.err = r.Run(ctx)
		close(run.done)
	}()

	t.Cleanup(func() { run.stop(t) })

	// Rows committed before the slot exists are not in its stream, so the
	// tests write only once the relay streams.
	select {
	case <-r.Streaming():
	case <-run.done:
	case <-time.After(60 * time.Second):
		t.Fatal("relay did not start streaming within 60s")
	}

	return run
}

// stop cancels the relay and waits for Run, failing the test if Run
// returned an error that the test has not seen.
func (r *running) stop(t *testing.T) {
	t.Helper()

	r.cancel()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatal("relay did not stop within 60s")
	}

	if r.err != nil && !r.reported {
		t.Errorf("relay returned %v", r.err)
	}
	r.reported = true
}

// wait returns Run's result, failing the test after timeout.
func (r *running) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()

	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("relay still running after %s", timeout)
	}

	r.reported = true
	return r.err
}

// insertRows inserts count outbox rows in one transaction; each payload is
// {"n": first+i}.
func insertRows(t *testing.T, pgURL string, first, count int) {
	t.Helper()

	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n)
		FROM generate_series($1::int, $2::int) AS n`, first, first+count-1)
}

// body is the Event-Forge message body.
type body struct {
	ID            string          `json:"id"`
	AggregateType string          `json:"aggregateType"`
	AggregateID   string          `json:"aggregateId"`
	EventType     string          `json:"eventType"`
	Payload       json.RawMessage `json:"payload"`
	Metadata      json.RawMessage `json:"metadata"`
	CreatedAt     string          `json:"createdAt"`
}

func parseBody(t *testing.T, raw []byte) body {
	t.Helper()

	var b body
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("message body is not JSON: %v: %s", err, raw)
	}
	return b
}

// payloadN returns the "n" field of a payload written by insertRows.
func payloadN(t *testing.T, raw []byte) int {
	t.Helper()

	var p struct {
		N *int `json:"n"`
	}
	if err := json.Unmarshal(parseBody(t, raw).Payload, &p); err != nil || p.N == nil {
		t.Fatalf("payload has no n: %v: %s", err, raw)
	}
	return *p.N
}

// slotPosition returns the slot's confirmed_flush_lsn.
func slotPosition(t *testing.T, pgURL, slot string) pglogrepl.LSN {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	s, err := replication.LookupSlot(ctx, conn, slot)
	if err != nil {
		t.Fatal(err)
	}
	return s.ConfirmedFlush
}

// eventually polls cond every 100 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

func notYet(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errNotYet}, args...)...)
}

// testLogger returns a logger that writes to the test log with -v.
func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	return zerolog.New(io.Discard)
}

// pgConnect opens a connection; the caller closes it.
func pgConnect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
