package relay

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestFaultNackRetriedInOrder(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs

	// A queue that rejects publishes beyond 5 messages: the broker nacks.
	conn, ch := testenv.Channel(t)
	defer conn.Close()
	limited := testenv.Name("walrelay_test_limited")
	args := amqp.Table{"x-max-length": int32(5), "x-overflow": "reject-publish"}
	if _, err := ch.QueueDeclare(limited, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, ch := testenv.Channel(t)
		defer conn.Close()
		_, _ = ch.QueueDelete(limited, false, false, false)
	})
	if err := ch.QueueUnbind(f.queue, "#", f.exchange, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(limited, "#", f.exchange, false, nil); err != nil {
		t.Fatal(err)
	}

	start(t, cfg)
	insertRows(t, f.pgURL, 0, 20)
	afterInsert := currentWAL(t, f.pgURL)

	eventually(t, 30*time.Second, func() error {
		if obs.nacks.Load() == 0 {
			return notYet("no nack yet")
		}
		return nil
	})
	if pos := slotPosition(t, f.pgURL, cfg.Slot); pos >= afterInsert {
		t.Fatalf("slot confirmed %s past the nacked messages (inserted before %s)", pos, afterInsert)
	}

	// Draining the queue makes room: the retries go through, in order.
	consumer := testenv.Consume(t, limited)
	deliveries := collectRange(t, consumer, 0, 20, time.Minute)
	dups := checkDelivery(t, deliveries, 0, 20)
	t.Logf("%d nacks, %d duplicates", obs.nacks.Load(), dups)

	eventually(t, 30*time.Second, func() error {
		if pos := slotPosition(t, f.pgURL, cfg.Slot); pos < afterInsert {
			return notYet("slot at %s", pos)
		}
		return nil
	})
}

func TestFaultUnroutableRetried(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if err := ch.QueueUnbind(f.queue, "#", f.exchange, nil); err != nil {
		t.Fatal(err)
	}

	start(t, cfg)
	insertRows(t, f.pgURL, 0, 10)
	afterInsert := currentWAL(t, f.pgURL)

	eventually(t, 30*time.Second, func() error {
		if obs.returns.Load() < 2 {
			return notYet("%d returns", obs.returns.Load())
		}
		return nil
	})
	if pos := slotPosition(t, f.pgURL, cfg.Slot); pos >= afterInsert {
		t.Fatalf("slot confirmed %s past the unroutable messages", pos)
	}

	if err := ch.QueueBind(f.queue, "#", f.exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	consumer := testenv.Consume(t, f.queue)
	deliveries := collectRange(t, consumer, 0, 10, time.Minute)
	if dups := checkDelivery(t, deliveries, 0, 10); dups != 0 {
		t.Errorf("%d duplicates; unroutable messages were never delivered, so none are expected", dups)
	}
}

func TestFaultUnroutableDeadLettered(t *testing.T) {
	f := newFixture(t)
	dlx, dlq := testenv.Queue(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	cfg.OnUnroutable = PolicyDeadLetter
	cfg.DeadLetterExchange = dlx

	// An exchange with no binding: whatever goes there is unroutable.
	nowhere := testenv.Name("walrelay_test_nowhere")
	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if err := ch.ExchangeDeclare(nowhere, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, ch := testenv.Channel(t)
		defer conn.Close()
		_ = ch.ExchangeDelete(nowhere, false, false)
	})

	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)
	dead := testenv.Consume(t, dlq)

	testenv.Exec(t, f.pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload, metadata) VALUES
		('a', '1', 'routed', '{"n": 0}', NULL),
		('a', '2', 'lost', '{"n": 1}', jsonb_build_object('exchange', $1::text)),
		('a', '3', 'routed', '{"n": 2}', NULL)`, nowhere)
	afterInsert := currentWAL(t, f.pgURL)

	routed := consumer.Collect(t, 2, 30*time.Second)
	if n0, n1 := payloadN(t, routed[0].Body), payloadN(t, routed[1].Body); n0 != 0 || n1 != 2 {
		t.Errorf("routed messages n=%d and n=%d, want 0 and 2", n0, n1)
	}

	d := dead.Next(t, 30*time.Second)
	if n := payloadN(t, d.Body); n != 1 {
		t.Errorf("dead letter n=%d, want 1", n)
	}
	wantHeaders := map[string]any{
		"x-walrelay-reason":      "unroutable",
		"x-original-exchange":    nowhere,
		"x-original-routing-key": "a.lost",
		"x-aggregate-id":         "2",
	}
	for k, v := range wantHeaders {
		if d.Headers[k] != v {
			t.Errorf("dead letter header %s = %v, want %v", k, d.Headers[k], v)
		}
	}
	if d.RoutingKey != "a.lost" {
		t.Errorf("dead letter routing key = %q, want a.lost", d.RoutingKey)
	}

	eventually(t, 30*time.Second, func() error {
		if obs.dead.Load() != 1 {
			return notYet("dead-lettered count %d", obs.dead.Load())
		}
		if pos := slotPosition(t, f.pgURL, cfg.Slot); pos < afterInsert {
			return notYet("slot at %s, before %s", pos, afterInsert)
		}
		return nil
	})
	consumer.ExpectNone(t, 300*time.Millisecond)
}

func TestFaultMissingExchange(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	cfg.Exchange = testenv.Name("walrelay_test_later")

	start(t, cfg)
	insertRows(t, f.pgURL, 0, 10)

	eventually(t, 30*time.Second, func() error {
		if obs.ended.Load() == 0 {
			return notYet("no session ended on the missing exchange")
		}
		return nil
	})

	// Once the exchange exists, the held messages go out.
	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if err := ch.ExchangeDeclare(cfg.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, ch := testenv.Channel(t)
		defer conn.Close()
		_ = ch.ExchangeDelete(cfg.Exchange, false, false)
	})
	if err := ch.QueueBind(f.queue, "#", cfg.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}

	consumer := testenv.Consume(t, f.queue)
	deliveries := collectRange(t, consumer, 0, 10, time.Minute)
	checkDelivery(t, deliveries, 0, 10)
}

func TestFaultInvalidRowDeadLettered(t *testing.T) {
	f := newFixture(t)
	dlx, dlq := testenv.Queue(t)
	testenv.Exec(t, f.pgURL, `
		CREATE TABLE loose_outbox (
			id text, aggregate_type text, aggregate_id text, event_type text, payload text)`)

	obs := &countingObserver{}
	cfg := f.config()
	cfg.Table = "loose_outbox"
	cfg.Publication = "walrelay_loose"
	cfg.Observer = obs
	cfg.OnInvalid = PolicyDeadLetter
	cfg.DeadLetterExchange = dlx
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)
	dead := testenv.Consume(t, dlq)

	testenv.Exec(t, f.pgURL, `INSERT INTO loose_outbox VALUES
		('row-1', 'a', '1', 'ok', '{"n": 0}'),
		('row-2', 'a', '2', 'bad', 'not json'),
		('row-3', 'a', '3', 'ok', '{"n": 1}')`)
	afterInsert := currentWAL(t, f.pgURL)

	good := consumer.Collect(t, 2, 30*time.Second)
	if good[0].MessageId != "row-1" || good[1].MessageId != "row-3" {
		t.Errorf("relayed %s and %s, want row-1 and row-3", good[0].MessageId, good[1].MessageId)
	}

	d := dead.Next(t, 30*time.Second)
	if d.MessageId != "row-2" {
		t.Errorf("dead letter message id = %q, want row-2", d.MessageId)
	}
	if d.Headers["x-walrelay-reason"] != "invalid" {
		t.Errorf("x-walrelay-reason = %v, want invalid", d.Headers["x-walrelay-reason"])
	}
	if errText, _ := d.Headers["x-walrelay-error"].(string); !strings.Contains(errText, `"payload"`) {
		t.Errorf("x-walrelay-error = %q, want it to name the payload column", errText)
	}

	var body struct {
		Error string             `json:"error"`
		Row   map[string]*string `json:"row"`
	}
	if err := json.Unmarshal(d.Body, &body); err != nil {
		t.Fatalf("dead letter body is not JSON: %v: %s", err, d.Body)
	}
	if p := body.Row["payload"]; p == nil || *p != "not json" {
		t.Errorf("dead letter row payload = %v, want the raw text", p)
	}
	if obs.invalid.Load() != 1 {
		t.Errorf("invalid count = %d, want 1", obs.invalid.Load())
	}
	eventually(t, 30*time.Second, func() error {
		if obs.dead.Load() != 1 {
			return notYet("dead-lettered count %d", obs.dead.Load())
		}
		if pos := slotPosition(t, f.pgURL, cfg.Slot); pos < afterInsert {
			return notYet("slot at %s, before %s", pos, afterInsert)
		}
		return nil
	})
}

// memoryWatermark returns the broker's vm_memory_high_watermark as
// rabbitmqctl set_vm_memory_high_watermark takes it.
func memoryWatermark(t *testing.T) []string {
	t.Helper()

	out, err := exec.Command("rabbitmqctl", "eval", "vm_memory_monitor:get_vm_memory_high_watermark().").Output()
	if err != nil {
		t.Fatalf("read the memory watermark: %v", err)
	}
	value := strings.TrimSpace(string(out))
	if strings.HasPrefix(value, "{absolute,") {
		return []string{"absolute", strings.TrimSuffix(strings.TrimPrefix(value, "{absolute,"), "}")}
	}
	return []string{value}
}

func TestInvalidLogicalMessage(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	run := start(t, cfg)

	testenv.Exec(t, f.pgURL, `SELECT pg_logical_emit_message(true, 'walrelay', 'not json')`)

	// A WAL message cannot be fixed, so the error names the flags that set it aside.
	err := run.wait(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "--on-invalid=dead-letter") || !strings.Contains(err.Error(), "--start-lsn") {
		t.Fatalf("Run returned %v, want an error naming --on-invalid=dead-letter and --start-lsn", err)
	}

	dlx, dlq := testenv.Queue(t)
	cfg.OnInvalid = PolicyDeadLetter
	cfg.DeadLetterExchange = dlx
	start(t, cfg)
	dead := testenv.Consume(t, dlq)

	d := dead.Next(t, 30*time.Second)
	if !strings.HasPrefix(d.MessageId, "lsn:") {
		t.Errorf("dead letter message id = %q, want one derived from the LSN", d.MessageId)
	}
	if d.Timestamp.IsZero() {
		t.Error("dead letter has no timestamp; want the commit time")
	}
	var body struct {
		Row string `json:"row"`
	}
	if err := json.Unmarshal(d.Body, &body); err != nil || body.Row != "not json" {
		t.Errorf("dead letter body %s: want the message content as the row (error %v)", d.Body, err)
	}
}
