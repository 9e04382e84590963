package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/internal/testenv"
)

// insertWithStatus inserts rows n = first ... first+count-1 with the given
// Event-Forge status and creation times one millisecond apart.
func insertWithStatus(t *testing.T, pgURL string, first, count int, status string) {
	t.Helper()
	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, status, created_at)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n), $3::outbox_message_status,
		       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 millisecond'
		FROM generate_series($1::int, $2::int) AS n`, first, first+count-1, status)
}

func TestBackfillPendingRowsAtSlotCreation(t *testing.T) {
	f := newFixture(t)

	// Written before walrelay ever ran: a polling worker already published
	// rows 2 and 3, row 5 failed and is due again.
	insertWithStatus(t, f.pgURL, 0, 2, "pending")
	insertWithStatus(t, f.pgURL, 2, 2, "published")
	insertWithStatus(t, f.pgURL, 4, 1, "pending")
	insertWithStatus(t, f.pgURL, 5, 1, "failed")

	consumer := testenv.Consume(t, f.queue)
	start(t, f.config())
	insertRows(t, f.pgURL, 100, 3)

	var got []int
	for _, d := range consumer.Collect(t, 7, 30*time.Second) {
		got = append(got, payloadN(t, d.Body))
	}
	want := []int{0, 1, 4, 5, 100, 101, 102}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delivered n = %v, want %v", got, want)
		}
	}
	consumer.ExpectNone(t, 500*time.Millisecond)
}

func TestBackfillModeAllAndNone(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want int
	}{
		{BackfillAll, 4},
		{BackfillNone, 0},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFixture(t)
			insertWithStatus(t, f.pgURL, 0, 2, "pending")
			insertWithStatus(t, f.pgURL, 2, 2, "published")

			consumer := testenv.Consume(t, f.queue)
			cfg := f.config()
			cfg.Backfill = tc.mode
			start(t, cfg)

			if tc.want > 0 {
				deliveries := consumer.Collect(t, tc.want, 30*time.Second)
				checkDelivery(t, deliveries, 0, tc.want)
			}
			consumer.ExpectNone(t, 500*time.Millisecond)
		})
	}
}

func TestBackfillResumesAfterInterruption(t *testing.T) {
	f := newFixture(t)
	const rows = 30000
	insertWithStatus(t, f.pgURL, 0, rows, "pending")

	consumer := testenv.Consume(t, f.queue)
	cfg := f.config()

	// Stop the relay in the middle of its backfill.
	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	first := consumer.Collect(t, rows/3, time.Minute)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("relay stopped during the backfill returned %v", err)
	}

	// The restart resumes after the last confirmed row; rows may repeat,
	// none may be missing.
	start(t, cfg)
	rest := collectRange(t, consumer, rows/3, rows, 2*time.Minute)
	all := append(first, rest...)
	dups := checkDeliveryUnordered(t, all, 0, rows)
	t.Logf("backfill interrupted after %d rows; %d duplicates after the restart", len(first), dups)

	if dups > 3*DefaultMaxInFlight {
		t.Errorf("%d duplicates: the resumed backfill started over instead of after the last confirmed row", dups)
	}
}

func TestSlotDroppedWhileStoppedThenRecover(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	consumer := testenv.Consume(t, f.queue)

	run := start(t, cfg)
	insertRows(t, f.pgURL, 0, 10)
	consumer.Collect(t, 10, 30*time.Second)
	run.stop(t)

	testenv.Exec(t, f.pgURL, `SELECT pg_drop_replication_slot($1)`, cfg.Slot)
	insertRows(t, f.pgURL, 10, 10) // no slot records these

	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if err == nil {
		t.Fatal("relay started on a replacement for a dropped slot; want a gap error")
	}
	for _, want := range []string{"gap detected", cfg.Slot, "does not exist", "last relayed commit at", "--recover"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("gap error %q does not mention %q", err, want)
		}
	}
	consumer.ExpectNone(t, 300*time.Millisecond)

	cfg.Recover = true
	start(t, cfg)
	insertRows(t, f.pgURL, 20, 5)

	// Recovery publishes every row created since the last relayed commit
	// minus the margin, so rows 0-9 come again; then the stream goes on.
	deliveries := collectRange(t, consumer, 10, 25, time.Minute)
	for i, d := range deliveries {
		if n := payloadN(t, d.Body); n >= 20 && i < len(deliveries)-5 {
			t.Fatalf("streamed row n=%d arrived before the backfilled rows", n)
		}
	}
}

func TestSlotRecreatedBySomeoneElse(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	consumer := testenv.Consume(t, f.queue)

	run := start(t, cfg)
	for i := range 5 {
		insertRows(t, f.pgURL, i*10, 10)
	}
	consumer.Collect(t, 50, 30*time.Second)
	time.Sleep(2 * cfg.StatusInterval) // a checkpoint with the slot's counters
	run.stop(t)

	testenv.Exec(t, f.pgURL, `SELECT pg_drop_replication_slot($1)`, cfg.Slot)
	testenv.Exec(t, f.pgURL, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.Slot)

	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "recreated") || !strings.Contains(err.Error(), "--recover") {
		t.Fatalf("Run on a recreated slot returned %v, want a gap error naming the recreation", err)
	}
}

func TestStartLSN(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	consumer := testenv.Consume(t, f.queue)

	run := start(t, cfg)
	insertRows(t, f.pgURL, 0, 5)
	consumer.Collect(t, 5, 30*time.Second)
	waitConfirmed(t, f.pgURL, cfg.Slot)
	run.stop(t)
	confirmed := slotPosition(t, f.pgURL, cfg.Slot)

	// Older than the slot: rejected, because a logical slot cannot rewind.
	older := cfg
	older.StartLSN = confirmed - 1
	r, err := New(older, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "cannot rewind") {
		t.Fatalf("Run with an older start LSN returned %v, want the rewind error", err)
	}

	// Newer: the poison transaction in between is skipped on purpose.
	insertRows(t, f.pgURL, 5, 3)
	skipTo := currentWAL(t, f.pgURL)
	insertRows(t, f.pgURL, 8, 2)

	newer := cfg
	newer.StartLSN = skipTo
	start(t, newer)
	deliveries := consumer.Collect(t, 2, 30*time.Second)
	checkDelivery(t, deliveries, 8, 10)
	consumer.ExpectNone(t, 300*time.Millisecond)
}

func TestFailoverSlotNeedsPostgres17(t *testing.T) {
	f := newFixture(t)

	ctx := context.Background()
	conn := pgConnect(t, f.pgURL)
	var version int
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if version >= failoverMinVersion {
		t.Skip("the server supports failover slots; this test covers older servers")
	}

	cfg := f.config()
	cfg.FailoverSlot = true
	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = r.Run(runCtx)
	if err == nil || !strings.Contains(err.Error(), "needs PostgreSQL 17") {
		t.Fatalf("Run with a failover slot on PostgreSQL %d returned %v, want the version error", version, err)
	}
}

// checkDeliveryUnordered asserts that deliveries contain every n in
// [from, to) and nothing else, in any order, and returns the duplicates.
func checkDeliveryUnordered(t *testing.T, deliveries []amqp.Delivery, from, to int) int {
	t.Helper()

	seen := make(map[int]bool, to-from)
	for i, d := range deliveries {
		n := payloadN(t, d.Body)
		if n < from || n >= to {
			t.Fatalf("delivery %d has n=%d, outside [%d, %d)", i, n, from, to)
		}
		seen[n] = true
	}
	for n := from; n < to; n++ {
		if !seen[n] {
			t.Fatalf("row n=%d was never delivered", n)
		}
	}
	return len(deliveries) - len(seen)
}
