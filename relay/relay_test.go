package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/internal/testenv"
)

func TestRelayDeliversInCommitOrder(t *testing.T) {
	f := newFixture(t)
	start(t, f.config())
	consumer := testenv.Consume(t, f.queue)

	// Transactions of 1 to 1000 rows, committed one after another, so the
	// commit order is the order of n.
	sizes := []int{1, 1000, 7, 1, 250, 2, 999, 13, 500, 1, 100, 3}
	total := 0
	for _, size := range sizes {
		insertRows(t, f.pgURL, total, size)
		total += size
	}

	deliveries := consumer.Collect(t, total, 60*time.Second)
	for i, d := range deliveries {
		if n := payloadN(t, d.Body); n != i {
			t.Fatalf("message %d has n=%d, want %d: commit order broken", i, n, i)
		}
	}
	consumer.ExpectNone(t, 500*time.Millisecond)
}

func TestRelayMessageContract(t *testing.T) {
	f := newFixture(t)
	start(t, f.config())
	consumer := testenv.Consume(t, f.queue)

	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (id, aggregate_type, aggregate_id, event_type, payload, metadata, created_at)
		VALUES ('6f1c1a8e-1111-4f5e-9b5d-3a2d1c0b0a01', 'order', 'o-42', 'created',
		        '{"total": 12.5, "note": "grüße ✓"}',
		        '{"correlationId": "corr-7", "headers": {"x-tenant": "acme", "x-retry": 3}}',
		        '2026-03-04 05:06:07.891+00')`)

	d := consumer.Next(t, 30*time.Second)

	if d.Exchange != f.exchange {
		t.Errorf("exchange = %q, want %q", d.Exchange, f.exchange)
	}
	if d.RoutingKey != "order.created" {
		t.Errorf("routing key = %q, want order.created", d.RoutingKey)
	}
	if d.MessageId != "6f1c1a8e-1111-4f5e-9b5d-3a2d1c0b0a01" {
		t.Errorf("message id = %q", d.MessageId)
	}
	if d.ContentType != "application/json" {
		t.Errorf("content type = %q", d.ContentType)
	}
	if d.DeliveryMode != 2 {
		t.Errorf("delivery mode = %d, want 2 (persistent)", d.DeliveryMode)
	}
	if d.Type != "created" {
		t.Errorf("type = %q, want created", d.Type)
	}
	if want := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC); !d.Timestamp.Equal(want) {
		t.Errorf("timestamp = %v, want %v", d.Timestamp, want)
	}
	if d.CorrelationId != "corr-7" {
		t.Errorf("correlation id = %q, want corr-7", d.CorrelationId)
	}

	wantHeaders := map[string]any{
		"x-aggregate-type": "order",
		"x-aggregate-id":   "o-42",
		"x-event-type":     "created",
		"x-tenant":         "acme",
	}
	for k, v := range wantHeaders {
		if d.Headers[k] != v {
			t.Errorf("header %s = %v, want %v", k, d.Headers[k], v)
		}
	}
	if n, ok := d.Headers["x-retry"].(int64); !ok || n != 3 {
		t.Errorf("header x-retry = %#v, want int64 3", d.Headers["x-retry"])
	}

	b := parseBody(t, d.Body)
	if b.ID != d.MessageId || b.AggregateType != "order" || b.AggregateID != "o-42" || b.EventType != "created" {
		t.Errorf("body fields = %+v", b)
	}
	// jsonb normalizes the text once, at insert; the relay passes it on as is.
	if got, want := string(b.Payload), `{"note": "grüße ✓", "total": 12.5}`; got != want {
		t.Errorf("payload = %s, want %s", got, want)
	}
	if b.CreatedAt != "2026-03-04T05:06:07.891Z" {
		t.Errorf("createdAt = %q, want 2026-03-04T05:06:07.891Z", b.CreatedAt)
	}
}

func TestRelayMetadataOverrides(t *testing.T) {
	f := newFixture(t)
	other, otherQueue := testenv.Queue(t)
	start(t, f.config())
	consumer := testenv.Consume(t, f.queue)
	otherConsumer := testenv.Consume(t, otherQueue)

	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, metadata) VALUES
		('user', 'u-1', 'renamed', '{}', '{"routingKey": "custom.key"}'),
		('user', 'u-2', 'renamed', '{}', jsonb_build_object('exchange', $1::text)),
		('user', 'u-3', 'renamed', '{}', NULL)`, other)

	first := consumer.Next(t, 30*time.Second)
	if first.RoutingKey != "custom.key" {
		t.Errorf("routing key = %q, want custom.key from metadata.routingKey", first.RoutingKey)
	}

	moved := otherConsumer.Next(t, 30*time.Second)
	if moved.Exchange != other || moved.RoutingKey != "user.renamed" {
		t.Errorf("metadata.exchange message went to %q with key %q, want %q, user.renamed", moved.Exchange, moved.RoutingKey, other)
	}

	third := consumer.Next(t, 30*time.Second)
	if got := string(parseBody(t, third.Body).Metadata); got != "null" {
		t.Errorf("NULL metadata encoded as %s, want null", got)
	}
	if got := third.Headers["x-aggregate-id"]; got != "u-3" {
		t.Errorf("x-aggregate-id = %v, want u-3", got)
	}
}

func TestRelayLargeAndUnicodePayloads(t *testing.T) {
	f := newFixture(t)
	start(t, f.config())
	consumer := testenv.Consume(t, f.queue)

	big := `{"blob": "` + strings.Repeat("x", 1<<20) + `"}`
	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('doc', 'd-1', 'uploaded', $1::jsonb), ('doc', 'd-2', 'named', '{"name": "名前 🚀 \u00e9"}')`, big)

	d := consumer.Next(t, 30*time.Second)
	if got := len(parseBody(t, d.Body).Payload); got != len(big) {
		t.Errorf("1 MB payload arrived with %d bytes, want %d", got, len(big))
	}

	d = consumer.Next(t, 30*time.Second)
	if got, want := string(parseBody(t, d.Body).Payload), `{"name": "名前 🚀 é"}`; got != want {
		t.Errorf("unicode payload = %s, want %s", got, want)
	}
}

func TestRelayLogicalMessageBetweenRows(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	testenv.Exec(t, f.pgURL, `
		DO $$
		BEGIN
			INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload) VALUES ('a', '1', 'first', '{"n": 0}');
			PERFORM pg_logical_emit_message(true, 'walrelay',
				'{"aggregateType": "a", "aggregateId": "2", "eventType": "second", "payload": {"n": 1}, "metadata": null}');
			PERFORM pg_logical_emit_message(true, 'other-prefix', '{"ignored": true}');
			INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload) VALUES ('a', '3', 'third', '{"n": 2}');
		END $$`)

	deliveries := consumer.Collect(t, 3, 30*time.Second)
	for i, d := range deliveries {
		if n := payloadN(t, d.Body); n != i {
			t.Fatalf("message %d has n=%d, want %d", i, n, i)
		}
	}

	logical := deliveries[1]
	if logical.RoutingKey != "a.second" || logical.Type != "second" {
		t.Errorf("logical message routing key %q type %q, want a.second and second", logical.RoutingKey, logical.Type)
	}
	if logical.MessageId == "" || parseBody(t, logical.Body).ID != logical.MessageId {
		t.Errorf("logical message id %q does not match its body", logical.MessageId)
	}
	if logical.Timestamp.IsZero() {
		t.Error("logical message has no timestamp; want the commit time")
	}
	consumer.ExpectNone(t, 300*time.Millisecond)
}

func TestRelayCleanRestartRepublishesNothing(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	consumer := testenv.Consume(t, f.queue)

	first := start(t, cfg)
	insertRows(t, f.pgURL, 0, 300)
	consumer.Collect(t, 300, 30*time.Second)
	first.stop(t)

	// Written while the relay is down: must arrive after the restart.
	insertRows(t, f.pgURL, 300, 200)
	consumer.ExpectNone(t, 300*time.Millisecond)

	start(t, cfg)
	deliveries := consumer.Collect(t, 200, 30*time.Second)
	for i, d := range deliveries {
		if n := payloadN(t, d.Body); n != 300+i {
			t.Fatalf("after restart message %d has n=%d, want %d (a repeat or a gap)", i, n, 300+i)
		}
	}
	consumer.ExpectNone(t, time.Second)
}

func TestRelayIdleOutboxAdvancesSlot(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	start(t, cfg)

	testenv.Exec(t, f.pgURL, `CREATE TABLE busy (id bigserial PRIMARY KEY, filler text)`)

	// Wait for the slot to exist and the relay to stream.
	eventually(t, 30*time.Second, func() error {
		if slotPosition(t, f.pgURL, cfg.Slot) == 0 {
			return notYet("slot has no position")
		}
		return nil
	})

	before := slotPosition(t, f.pgURL, cfg.Slot)

	// About 20 MB of WAL on a table outside the publication.
	for range 10 {
		testenv.Exec(t, f.pgURL, `INSERT INTO busy (filler) SELECT repeat('x', 1000) FROM generate_series(1, 2000)`)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Two status intervals, plus the time the server takes to decode 20 MB.
	eventually(t, 2*cfg.StatusInterval+5*time.Second, func() error {
		var lag int64
		err := conn.QueryRow(ctx, `
			SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&lag)
		if err != nil {
			return err
		}
		if lag >= 1<<20 {
			return notYet("slot lag %d bytes", lag)
		}
		return nil
	})

	if after := slotPosition(t, f.pgURL, cfg.Slot); after <= before {
		t.Fatalf("slot did not advance: %s -> %s", before, after)
	}
}

func TestRelayAddColumnMidStream(t *testing.T) {
	f := newFixture(t)
	start(t, f.config())
	consumer := testenv.Consume(t, f.queue)

	insertRows(t, f.pgURL, 0, 5)
	consumer.Collect(t, 5, 30*time.Second)

	testenv.Exec(t, f.pgURL, `ALTER TABLE outbox_messages ADD COLUMN tenant text DEFAULT 'acme'`)
	insertRows(t, f.pgURL, 5, 5)

	deliveries := consumer.Collect(t, 5, 30*time.Second)
	for i, d := range deliveries {
		if n := payloadN(t, d.Body); n != 5+i {
			t.Fatalf("message %d after ADD COLUMN has n=%d, want %d", i, n, 5+i)
		}
	}
}

func TestRelayPythonShapedTable(t *testing.T) {
	f := newFixture(t)

	// The table as Event-Forge's Python library (SQLAlchemy) creates it: id
	// varchar(36) with no default, json (not jsonb) payload and metadata,
	// status varchar(50), timestamps without time zone.
	testenv.Exec(t, f.pgURL, `
		CREATE TABLE py_outbox (
			id varchar(36) PRIMARY KEY,
			aggregate_type varchar(255) NOT NULL,
			aggregate_id varchar(255) NOT NULL,
			event_type varchar(255) NOT NULL,
			payload json NOT NULL,
			metadata json,
			status varchar(50) NOT NULL,
			retry_count integer NOT NULL,
			max_retries integer NOT NULL,
			error_message text,
			scheduled_at timestamp,
			locked_by varchar(255),
			locked_at timestamp,
			created_at timestamp NOT NULL,
			updated_at timestamp NOT NULL)`)

	cfg := f.config()
	cfg.Table = "py_outbox"
	cfg.Publication = "walrelay_py"
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	// json keeps the text exactly as written: odd spacing and key order.
	payload := `{ "z":1,   "a" : [1, 2] ,"s":"ü" }`
	metadata := `{"correlationId":"c-1",  "headers": {"x-src": "py"}}`
	testenv.Exec(t, f.pgURL, `
		INSERT INTO py_outbox (id, aggregate_type, aggregate_id, event_type, payload, metadata, status,
		                       retry_count, max_retries, created_at, updated_at)
		VALUES ('0b7c6e1a-2222-4c3d-8e9f-000000000001', 'invoice', 'i-9', 'paid', $1, $2, 'pending',
		        0, 3, '2026-05-06 07:08:09.5', '2026-05-06 07:08:09.5')`, payload, metadata)

	d := consumer.Next(t, 30*time.Second)
	b := parseBody(t, d.Body)

	if string(b.Payload) != payload {
		t.Errorf("payload = %s, want exactly %s", b.Payload, payload)
	}
	if string(b.Metadata) != metadata {
		t.Errorf("metadata = %s, want exactly %s", b.Metadata, metadata)
	}
	if d.MessageId != "0b7c6e1a-2222-4c3d-8e9f-000000000001" || d.RoutingKey != "invoice.paid" || d.CorrelationId != "c-1" {
		t.Errorf("message id %q, routing key %q, correlation id %q", d.MessageId, d.RoutingKey, d.CorrelationId)
	}
	if d.Headers["x-src"] != "py" {
		t.Errorf("header x-src = %v, want py", d.Headers["x-src"])
	}
	if b.CreatedAt != "2026-05-06T07:08:09.500Z" {
		t.Errorf("createdAt = %q, want 2026-05-06T07:08:09.500Z", b.CreatedAt)
	}
}

func TestRelayDebeziumShapedTable(t *testing.T) {
	f := newFixture(t)
	testenv.Exec(t, f.pgURL, `
		CREATE TABLE dbz_outbox (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			aggregatetype varchar(255) NOT NULL,
			aggregateid varchar(255) NOT NULL,
			type varchar(255) NOT NULL,
			payload jsonb)`)

	cfg := f.config()
	cfg.Table = "public.dbz_outbox"
	cfg.Publication = "walrelay_dbz"
	cfg.Columns = decode.DebeziumColumns()
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	testenv.Exec(t, f.pgURL, `INSERT INTO dbz_outbox (aggregatetype, aggregateid, type, payload) VALUES ('cart', 'c-1', 'emptied', '{"k": 1}')`)

	d := consumer.Next(t, 30*time.Second)
	b := parseBody(t, d.Body)
	if d.RoutingKey != "cart.emptied" || b.AggregateID != "c-1" || string(b.Payload) != `{"k": 1}` {
		t.Errorf("routing key %q, body %s", d.RoutingKey, d.Body)
	}
	if b.CreatedAt == "" {
		t.Error("createdAt is empty; want the commit time")
	}
}

func TestRelayHaltsOnInvalidRow(t *testing.T) {
	f := newFixture(t)
	testenv.Exec(t, f.pgURL, `
		CREATE TABLE loose_outbox (
			id text, aggregate_type text, aggregate_id text, event_type text, payload text)`)

	cfg := f.config()
	cfg.Table = "loose_outbox"
	cfg.Publication = "walrelay_loose"
	run := start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	testenv.Exec(t, f.pgURL, `INSERT INTO loose_outbox VALUES ('row-1', 'a', '1', 'ok', '{"fine": true}')`)
	consumer.Next(t, 30*time.Second)

	testenv.Exec(t, f.pgURL, `INSERT INTO loose_outbox VALUES ('row-2', 'a', '2', 'bad', 'not json')`)
	afterBad := currentWAL(t, f.pgURL)

	for attempt := range 2 {
		err := run.wait(t, 30*time.Second)
		if err == nil {
			t.Fatalf("run %d: relay kept running after an invalid row", attempt)
		}
		for _, want := range []string{`"row-2"`, `"payload"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("run %d: error %q does not name %s", attempt, err, want)
			}
		}
		if pos := slotPosition(t, f.pgURL, cfg.Slot); pos >= afterBad {
			t.Fatalf("run %d: slot confirmed %s, past the invalid row's commit (before %s)", attempt, pos, afterBad)
		}

		// The position is held, so a restart meets the same row again.
		if attempt == 0 {
			run = start(t, cfg)
		}
	}
	consumer.ExpectNone(t, 300*time.Millisecond)
}

// currentWAL returns pg_current_wal_lsn().
func currentWAL(t *testing.T, pgURL string) pglogrepl.LSN {
	t.Helper()

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}
