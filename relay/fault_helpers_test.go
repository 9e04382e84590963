package relay

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/internal/testenv"
)

// countingObserver counts the events fault tests assert on.
type countingObserver struct {
	nopObserver
	reconnects atomic.Int64
	nacks      atomic.Int64
	returns    atomic.Int64
	dead       atomic.Int64
	invalid    atomic.Int64
	blocked    atomic.Bool
	decoded    atomic.Int64 // rows timed from commit to decode
	started    atomic.Int64 // sessions that started streaming
	ended      atomic.Int64 // sessions that stopped streaming
}

func (o *countingObserver) Streaming(on bool) {
	if on {
		o.started.Add(1)
	} else {
		o.ended.Add(1)
	}
}

func (o *countingObserver) Reconnected(side Side) {
	if side == SidePostgres {
		o.reconnects.Add(1)
	}
}
func (o *countingObserver) Nacked()                      { o.nacks.Add(1) }
func (o *countingObserver) Returned()                    { o.returns.Add(1) }
func (o *countingObserver) DeadLettered()                { o.dead.Add(1) }
func (o *countingObserver) Invalid()                     { o.invalid.Add(1) }
func (o *countingObserver) BrokerBlocked(b bool)         { o.blocked.Store(b) }
func (o *countingObserver) Confirmed(_, _ time.Duration) {}
func (o *countingObserver) Decoded(time.Duration)        { o.decoded.Add(1) }

// writer inserts rows n = 0, 1, 2, ... in transactions of batch rows with a
// pause between them, in the background, until total rows are written.
type writer struct {
	done    chan struct{}
	written atomic.Int64
	err     error
}

func startWriter(t *testing.T, pgURL string, total, batch int, pause time.Duration) *writer {
	t.Helper()

	w := &writer{done: make(chan struct{})}
	go func() {
		defer close(w.done)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()

		conn, err := pgx.Connect(ctx, pgURL)
		if err != nil {
			w.err = err
			return
		}
		defer conn.Close(ctx)

		for n := 0; n < total; n += batch {
			count := min(batch, total-n)
			_, err := conn.Exec(ctx, `
				INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
				SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n)
				FROM generate_series($1::int, $2::int) AS n`, n, n+count-1)
			if err != nil {
				w.err = err
				return
			}
			w.written.Store(int64(n + count))
			time.Sleep(pause)
		}
	}()

	return w
}

// wait waits for the writer to finish, failing the test on its error.
func (w *writer) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(5 * time.Minute):
		t.Fatal("writer did not finish within 5 minutes")
	}
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
}

// waitWritten waits until the writer has written at least n rows.
func (w *writer) waitWritten(t *testing.T, n int64) {
	t.Helper()
	eventually(t, time.Minute, func() error {
		if got := w.written.Load(); got < n {
			return notYet("%d rows written", got)
		}
		return nil
	})
}

// checkDelivery fails the test unless deliveries follow the delivery rule
// of testenv.CheckLogOrder for the rows [from, to). It returns the number
// of duplicates.
func checkDelivery(t *testing.T, deliveries []amqp.Delivery, from, to int) int {
	t.Helper()

	ns := make([]int, len(deliveries))
	for i, d := range deliveries {
		ns[i] = payloadN(t, d.Body)
	}

	dups, err := testenv.CheckLogOrder(ns, from, to)
	if err != nil {
		t.Fatal(err)
	}
	return dups
}

// collectRange receives messages until every n in [from, to) arrived.
func collectRange(t *testing.T, c *testenv.Consumer, from, to int, timeout time.Duration) []amqp.Delivery {
	t.Helper()

	var out []amqp.Delivery
	seen := make(map[int]bool, to-from)
	deadline := time.Now().Add(timeout)
	for len(seen) < to-from {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			t.Fatalf("received %d distinct of the %d rows [%d, %d) within %s", len(seen), to-from, from, to, timeout)
		}
		d := c.Next(t, remaining)
		out = append(out, d)
		if n := payloadN(t, d.Body); n >= from && n < to {
			seen[n] = true
		}
	}

	return out
}

// slotHolder returns the pid of the walsender holding slot, or 0.
func slotHolder(t *testing.T, pgURL, slot string) int32 {
	t.Helper()

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	var pid *int32
	if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if pid == nil {
		return 0
	}
	return *pid
}

// rabbitmqctl runs rabbitmqctl with args, failing the test on error.
func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %v: %v: %s", args, err, out)
	}
}

// waitConfirmed waits until the slot's confirmed position reaches the
// current WAL position, so every row written so far counts as relayed.
func waitConfirmed(t *testing.T, pgURL, slot string) {
	t.Helper()

	target := currentWAL(t, pgURL)
	eventually(t, 30*time.Second, func() error {
		if pos := slotPosition(t, pgURL, slot); pos < target {
			return notYet("slot at %s, before %s", pos, target)
		}
		return nil
	})
}
