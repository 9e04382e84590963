package relay

import (
	"context"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestReplayWithFiltersAndDryRun(t *testing.T) {
	f := newFixture(t)
	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, status, created_at)
		SELECT CASE WHEN n % 2 = 0 THEN 'order' ELSE 'user' END, 'a-' || n,
		       CASE WHEN n % 3 = 0 THEN 'created' ELSE 'updated' END,
		       jsonb_build_object('n', n), 'published',
		       timestamptz '2026-02-01 00:00:00+00' + n * interval '1 hour'
		FROM generate_series(0, 47) AS n`)
	consumer := testenv.Consume(t, f.queue)

	r, err := New(f.config(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	opts := ReplayOptions{
		Since:         time.Date(2026, 2, 1, 6, 0, 0, 0, time.UTC),
		Until:         time.Date(2026, 2, 2, 5, 59, 0, 0, time.UTC),
		AggregateType: "order",
		EventType:     "created",
		DryRun:        true,
	}

	// Rows 6 to 29, even and divisible by 3: 6, 12, 18, 24.
	var announced int64
	n, err := r.Replay(context.Background(), opts, func(rows int64) { announced = rows })
	if err != nil {
		t.Fatal(err)
	}
	if announced != 4 || n != 4 {
		t.Fatalf("dry run announced %d and returned %d rows, want 4", announced, n)
	}
	consumer.ExpectNone(t, 300*time.Millisecond)

	opts.DryRun = false
	opts.Rate = 100
	n, err = r.Replay(context.Background(), opts, func(int64) {})
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("replay published %d rows, want 4", n)
	}

	deliveries := consumer.Collect(t, 4, 30*time.Second)
	for i, want := range []int{6, 12, 18, 24} {
		d := deliveries[i]
		if got := payloadN(t, d.Body); got != want {
			t.Errorf("replayed message %d has n=%d, want %d", i, got, want)
		}
		if _, ok := d.Headers[ReplayHeader].(string); !ok {
			t.Errorf("replayed message %d lacks the %s header: %v", i, ReplayHeader, d.Headers)
		}
		if d.RoutingKey != "order.created" {
			t.Errorf("replayed message %d routing key %q, want order.created", i, d.RoutingKey)
		}
	}
	consumer.ExpectNone(t, 300*time.Millisecond)
}

func TestMarkPublished(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.MarkPublished = true
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	insertRows(t, f.pgURL, 0, 50)
	consumer.Collect(t, 50, 30*time.Second)

	conn := pgConnect(t, f.pgURL)
	defer conn.Close(context.Background())
	eventually(t, 30*time.Second, func() error {
		var pending int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox_messages WHERE status <> 'published'`).Scan(&pending); err != nil {
			return err
		}
		if pending != 0 {
			return notYet("%d rows not marked published", pending)
		}
		return nil
	})
}

func TestRetentionKeepsUnrelayedRows(t *testing.T) {
	saved := retentionInterval
	retentionInterval = 200 * time.Millisecond
	t.Cleanup(func() { retentionInterval = saved })

	f := newFixture(t)
	cfg := f.config()
	cfg.Retention = time.Hour

	// Old rows come first, written before the slot exists with status
	// published, so the backfill skips them. Relayed rows follow. The
	// retention may delete only rows older than an hour and than the last
	// relayed commit.
	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, status, created_at)
		SELECT 'old', 'o-' || n, 'created', '{}', 'published', now() - interval '2 hours'
		FROM generate_series(1, 2500) AS n`)

	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)
	insertRows(t, f.pgURL, 0, 10)
	consumer.Collect(t, 10, 30*time.Second)

	conn := pgConnect(t, f.pgURL)
	defer conn.Close(context.Background())
	eventually(t, 30*time.Second, func() error {
		var old int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox_messages WHERE aggregate_type = 'old'`).Scan(&old); err != nil {
			return err
		}
		if old != 0 {
			return notYet("%d old rows left", old)
		}
		return nil
	})

	var recent int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox_messages WHERE aggregate_type = 'order'`).Scan(&recent); err != nil {
		t.Fatal(err)
	}
	if recent != 10 {
		t.Errorf("%d recent rows left, want all 10: the retention deleted rows newer than an hour", recent)
	}
}
