package sink

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/outbox"
)

// testURL is the local broker. Every test declares its own exchanges and
// queues under unique names and deletes them in cleanup.
const testURL = "amqp://guest:guest@127.0.0.1:5672/"

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against RabbitMQ on 127.0.0.1:5672; skipped with -short")
	}
}

func uniqueName(t *testing.T, kind string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random name suffix: %v", err)
	}
	return "walrelay-test-" + kind + "-" + hex.EncodeToString(b)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// adminChannel opens a plain amqp091 channel for setting up and inspecting
// the broker, closed in cleanup.
func adminChannel(t *testing.T) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(testURL)
	if err != nil {
		t.Fatalf("connect to RabbitMQ at 127.0.0.1:5672: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open admin channel: %v", err)
	}
	return ch
}

// deleteInCleanup deletes the named exchanges and queues after the test, on
// a connection of its own so that a channel error in the test cannot stop it.
func deleteInCleanup(t *testing.T, exchanges, queues []string) {
	t.Helper()
	t.Cleanup(func() {
		conn, err := amqp.Dial(testURL)
		if err != nil {
			t.Errorf("connect to delete test exchanges and queues: %v", err)
			return
		}
		defer conn.Close()

		for _, q := range queues {
			ch, err := conn.Channel()
			if err != nil {
				t.Errorf("open channel: %v", err)
				return
			}
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("delete queue %s: %v", q, err)
			}
			_ = ch.Close()
		}
		for _, ex := range exchanges {
			ch, err := conn.Channel()
			if err != nil {
				t.Errorf("open channel: %v", err)
				return
			}
			if err := ch.ExchangeDelete(ex, false, false); err != nil {
				t.Errorf("delete exchange %s: %v", ex, err)
			}
			_ = ch.Close()
		}
	})
}

// declareBoundQueue declares a queue with args and binds it to exchange.
func declareBoundQueue(t *testing.T, ch *amqp.Channel, exchange, key string, args amqp.Table) string {
	t.Helper()
	q := uniqueName(t, "q")
	deleteInCleanup(t, nil, []string{q})
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		t.Fatalf("declare queue %s: %v", q, err)
	}
	if err := ch.QueueBind(q, key, exchange, false, nil); err != nil {
		t.Fatalf("bind queue %s to %s with %q: %v", q, exchange, key, err)
	}
	return q
}

func dialPublisher(t *testing.T, cfg Config) *Publisher {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = testURL
	}
	p, err := Dial(testContext(t), cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// collect reads n confirmations, failing the test after timeout.
func collect(t *testing.T, p *Publisher, n int, timeout time.Duration) []Confirmation {
	t.Helper()
	deadline := time.After(timeout)
	var got []Confirmation
	for len(got) < n {
		select {
		case c, ok := <-p.Confirmations():
			if !ok {
				t.Fatalf("Confirmations closed after %d of %d (Err: %v)", len(got), n, p.Err())
			}
			got = append(got, c)
		case <-deadline:
			t.Fatalf("received %d of %d confirmations within %v", len(got), n, timeout)
		}
	}
	return got
}

func encode(t *testing.T, m *outbox.Message, exchange string) outbox.Publishing {
	t.Helper()
	pub, err := outbox.Encode(m, outbox.EncodeConfig{Exchange: exchange}, time.Now())
	if err != nil {
		t.Fatalf("encode message %s: %v", m.ID, err)
	}
	return pub
}

func simplePublishing(id, exchange, key string) outbox.Publishing {
	return outbox.Publishing{
		Exchange:    exchange,
		RoutingKey:  key,
		MessageID:   id,
		ContentType: "application/json",
		Body:        []byte(`{}`),
	}
}

func TestPublishThousandAckedAndConsumed(t *testing.T) {
	skipShort(t)
	const n = 1000
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)

	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true, ConfirmBuffer: n})
	admin := adminChannel(t)
	queue := declareBoundQueue(t, admin, exchange, "order.#", nil)
	ctx := testContext(t)

	created := time.Date(2026, 12, 4, 20, 13, 58, 0, time.UTC)
	messages := make([]outbox.Publishing, n)
	for i := range messages {
		messages[i] = encode(t, &outbox.Message{
			ID:            fmt.Sprintf("msg-%04d", i+1),
			AggregateType: "order",
			AggregateID:   fmt.Sprint(i + 1),
			EventType:     "created",
			Payload:       json.RawMessage(fmt.Sprintf(`{"n": %d}`, i+1)),
			Metadata:      json.RawMessage(fmt.Sprintf(`{"correlationId":"corr-%d","headers":{"tenant":"t1","attempt":%d}}`, i+1, i+1)),
			CreatedAt:     created.Add(time.Duration(i) * time.Second),
		}, exchange)
	}

	publishErr := make(chan error, 1)
	go func() {
		for i, m := range messages {
			if err := p.Publish(ctx, uint64(i+1), m); err != nil {
				publishErr <- err
				return
			}
		}
		publishErr <- nil
	}()

	confirmations := collect(t, p, n, 20*time.Second)
	if err := <-publishErr; err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for i, c := range confirmations {
		if c.Seq != uint64(i+1) {
			t.Fatalf("confirmation %d has Seq %d, want %d", i, c.Seq, i+1)
		}
		if c.Outcome != Acked {
			t.Errorf("Seq %d: Outcome = %v, want acked", c.Seq, c.Outcome)
		}
		if c.MessageID != messages[i].MessageID {
			t.Errorf("Seq %d: MessageID = %q, want %q", c.Seq, c.MessageID, messages[i].MessageID)
		}
		if c.Exchange != exchange || c.RoutingKey != "order.created" {
			t.Errorf("Seq %d: routed to %s/%s, want %s/order.created", c.Seq, c.Exchange, c.RoutingKey, exchange)
		}
	}

	deliveries, err := admin.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	timeout := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		var d amqp.Delivery
		select {
		case d = <-deliveries:
		case <-timeout:
			t.Fatalf("consumed %d of %d messages", i, n)
		}

		want := messages[i]
		if d.MessageId != want.MessageID {
			t.Fatalf("delivery %d: MessageId = %q, want %q (order lost)", i, d.MessageId, want.MessageID)
		}
		if d.ContentType != "application/json" {
			t.Errorf("%s: ContentType = %q", d.MessageId, d.ContentType)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("%s: DeliveryMode = %d, want 2", d.MessageId, d.DeliveryMode)
		}
		if d.Type != "created" {
			t.Errorf("%s: Type = %q, want created", d.MessageId, d.Type)
		}
		if !d.Timestamp.Equal(want.Timestamp) {
			t.Errorf("%s: Timestamp = %v, want %v", d.MessageId, d.Timestamp, want.Timestamp)
		}
		if d.CorrelationId != fmt.Sprintf("corr-%d", i+1) {
			t.Errorf("%s: CorrelationId = %q", d.MessageId, d.CorrelationId)
		}
		if d.Exchange != exchange || d.RoutingKey != "order.created" {
			t.Errorf("%s: delivered from %s/%s", d.MessageId, d.Exchange, d.RoutingKey)
		}
		if !bytes.Equal(d.Body, want.Body) {
			t.Errorf("%s: Body = %s, want %s", d.MessageId, d.Body, want.Body)
		}
		wantHeaders := map[string]any{
			"x-aggregate-type": "order",
			"x-aggregate-id":   fmt.Sprint(i + 1),
			"x-event-type":     "created",
			"tenant":           "t1",
			"attempt":          int64(i + 1),
		}
		for k, v := range wantHeaders {
			if d.Headers[k] != v {
				t.Errorf("%s: header %s = %#v, want %#v", d.MessageId, k, d.Headers[k], v)
			}
		}
		if len(d.Headers) != len(wantHeaders) {
			t.Errorf("%s: headers = %v, want %v", d.MessageId, d.Headers, wantHeaders)
		}
	}
}

func TestPublishUnroutableReturned(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)

	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true})
	declareBoundQueue(t, adminChannel(t), exchange, "routed", nil)
	ctx := testContext(t)

	sends := []struct {
		id, key string
		want    Outcome
	}{
		{"m1", "nowhere", Returned},
		{"m2", "routed", Acked},
		{"m3", "nowhere", Returned},
		{"m4", "nowhere", Returned},
		{"m5", "routed", Acked},
		// The same id twice: the return belongs to the unroutable copy only.
		{"dup", "nowhere", Returned},
		{"dup", "routed", Acked},
	}
	for i, s := range sends {
		if err := p.Publish(ctx, uint64(i+1), simplePublishing(s.id, exchange, s.key)); err != nil {
			t.Fatalf("Publish %s: %v", s.id, err)
		}
	}

	got := collect(t, p, len(sends), 10*time.Second)
	for i, c := range got {
		s := sends[i]
		if c.Seq != uint64(i+1) || c.MessageID != s.id {
			t.Fatalf("confirmation %d = seq %d id %s, want seq %d id %s", i, c.Seq, c.MessageID, i+1, s.id)
		}
		if c.Outcome != s.want {
			t.Errorf("seq %d (%s to %q): Outcome = %v, want %v", c.Seq, s.id, s.key, c.Outcome, s.want)
		}
		if s.want == Returned {
			if c.ReplyCode != 312 || c.ReplyText != "NO_ROUTE" {
				t.Errorf("seq %d: reply = %d %s, want 312 NO_ROUTE", c.Seq, c.ReplyCode, c.ReplyText)
			}
		} else if c.ReplyCode != 0 {
			t.Errorf("seq %d: ReplyCode = %d on an acked message", c.Seq, c.ReplyCode)
		}
	}
}

func TestPublishRejectedByFullQueueNacked(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)

	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true})
	declareBoundQueue(t, adminChannel(t), exchange, "full", amqp.Table{
		"x-max-length": int32(1),
		"x-overflow":   "reject-publish",
	})
	ctx := testContext(t)

	for i := 1; i <= 4; i++ {
		if err := p.Publish(ctx, uint64(i), simplePublishing(fmt.Sprintf("m%d", i), exchange, "full")); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}

	got := collect(t, p, 4, 10*time.Second)
	want := []Outcome{Acked, Nacked, Nacked, Nacked}
	for i, c := range got {
		if c.Seq != uint64(i+1) {
			t.Fatalf("confirmation %d has Seq %d", i, c.Seq)
		}
		if c.Outcome != want[i] {
			t.Errorf("seq %d: Outcome = %v, want %v", c.Seq, c.Outcome, want[i])
		}
	}
}

func TestPublishMissingExchangeClosesChannel(t *testing.T) {
	skipShort(t)
	missing := uniqueName(t, "missing")
	p := dialPublisher(t, Config{Exchange: missing, DeclareExchange: false})
	ctx := testContext(t)

	// The publish itself succeeds; the broker closes the channel afterwards.
	if err := p.Publish(ctx, 1, simplePublishing("m1", missing, "any")); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("Done not closed after publishing to a missing exchange")
	}

	err := p.Err()
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Err() = %v, want an error wrapping ErrClosed", err)
	}
	var closeErr *CloseError
	if !errors.As(err, &closeErr) {
		t.Fatalf("Err() = %v, want a *CloseError", err)
	}
	if closeErr.Code != 404 || closeErr.Scope != "channel" || !closeErr.Server {
		t.Errorf("CloseError = %+v, want a channel close with 404 from the server", closeErr)
	}
	if !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Errorf("Err() = %q, want 404 and NOT_FOUND in the text", err)
	}

	// The message was never confirmed, so it gets no Confirmation.
	select {
	case c, ok := <-p.Confirmations():
		if ok {
			t.Errorf("got confirmation %+v for a message the broker never confirmed", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Confirmations not closed after the channel closed")
	}

	if err := p.Publish(ctx, 2, simplePublishing("m2", missing, "any")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after close = %v, want an error wrapping ErrClosed", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)
	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true})

	if err := p.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	select {
	case <-p.Done():
	default:
		t.Errorf("Done not closed after Close")
	}
	if !errors.Is(p.Err(), ErrClosed) {
		t.Errorf("Err() = %v, want an error wrapping ErrClosed", p.Err())
	}
	if _, ok := <-p.Confirmations(); ok {
		t.Errorf("Confirmations still open after Close")
	}
	if err := p.Publish(testContext(t), 1, simplePublishing("m1", exchange, "k")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v, want an error wrapping ErrClosed", err)
	}
}

func TestPublishCancelledKeepsSequenceMapping(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)
	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true})
	declareBoundQueue(t, adminChannel(t), exchange, "k", nil)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(cancelled, 1, simplePublishing("m1", exchange, "k")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with cancelled context = %v, want context.Canceled", err)
	}
	if err := p.Publish(testContext(t), 2, simplePublishing("m2", exchange, "k")); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	got := collect(t, p, 1, 10*time.Second)
	if got[0].Seq != 2 || got[0].MessageID != "m2" || got[0].Outcome != Acked {
		t.Errorf("confirmation = %+v, want seq 2 m2 acked", got[0])
	}
}

func TestPublishWaitsWhileBlocked(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)
	p := dialPublisher(t, Config{Exchange: exchange, DeclareExchange: true})
	declareBoundQueue(t, adminChannel(t), exchange, "k", nil)

	// Stand in for connection.blocked: a real one needs a broker-wide
	// memory alarm, which would stall every other test on this broker.
	p.setBlocked(amqp.Blocking{Active: true, Reason: "test"})
	if !p.Blocked() {
		t.Fatalf("Blocked() = false after connection.blocked")
	}

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Publish(short, 1, simplePublishing("m1", exchange, "k")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish while blocked = %v, want context.DeadlineExceeded", err)
	}

	published := make(chan error, 1)
	go func() { published <- p.Publish(testContext(t), 2, simplePublishing("m2", exchange, "k")) }()
	select {
	case err := <-published:
		t.Fatalf("Publish returned %v while blocked", err)
	case <-time.After(100 * time.Millisecond):
	}

	p.setBlocked(amqp.Blocking{Active: false})
	if err := <-published; err != nil {
		t.Fatalf("Publish after unblock: %v", err)
	}
	if p.Blocked() {
		t.Errorf("Blocked() = true after connection.unblocked")
	}
	got := collect(t, p, 1, 10*time.Second)
	if got[0].Seq != 2 || got[0].Outcome != Acked {
		t.Errorf("confirmation = %+v, want seq 2 acked", got[0])
	}
}

func TestDialDelayedExchange(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	delayed := uniqueName(t, "delayed")
	deleteInCleanup(t, []string{exchange, delayed}, nil)

	p, err := Dial(testContext(t), Config{
		URL: testURL, Exchange: exchange, DelayedExchange: delayed, DeclareExchange: true,
	}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		// The plugin is not enabled, so the error must name the command that enables it.
		t.Logf("Dial error without the plugin: %v", err)
		if !strings.Contains(err.Error(), "rabbitmq_delayed_message_exchange") {
			t.Errorf("Dial error %q does not name the rabbitmq_delayed_message_exchange plugin", err)
		}
		if !strings.Contains(err.Error(), delayed) {
			t.Errorf("Dial error %q does not name the exchange %s", err, delayed)
		}
		return
	}
	defer p.Close()

	// The plugin is enabled: a delayed message must be acked, not returned.
	declareBoundQueue(t, adminChannel(t), delayed, "order.#", nil)
	m, err := outbox.Encode(&outbox.Message{
		ID: "d1", AggregateType: "order", AggregateID: "1", EventType: "created",
		Payload: json.RawMessage(`{}`), Metadata: json.RawMessage(`{"delay": 50}`),
	}, outbox.EncodeConfig{Exchange: exchange, DelayedExchange: delayed}, time.Now())
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if err := p.Publish(testContext(t), 1, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := collect(t, p, 1, 10*time.Second)
	if got[0].Outcome != Acked {
		t.Errorf("delayed message Outcome = %v, want acked", got[0].Outcome)
	}
}

func TestDialExistingExchangeOfOtherType(t *testing.T) {
	skipShort(t)
	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)
	if err := adminChannel(t).ExchangeDeclare(exchange, amqp.ExchangeDirect, false, true, false, false, nil); err != nil {
		t.Fatalf("declare direct exchange: %v", err)
	}

	_, err := Dial(testContext(t), Config{URL: testURL, Exchange: exchange, DeclareExchange: true}, zerolog.Nop())
	if err == nil {
		t.Fatalf("Dial: got no error for an existing direct exchange")
	}
	if !strings.Contains(err.Error(), "406") || !strings.Contains(err.Error(), "exists with another type") {
		t.Errorf("Dial error %q does not explain the 406 PRECONDITION_FAILED", err)
	}
}

func TestDialNeverShowsPassword(t *testing.T) {
	skipShort(t)
	const secret = "s3cret-pa55"

	var logs bytes.Buffer
	log := zerolog.New(&logs)
	for _, url := range []string{
		"amqp://guest:" + secret + "@127.0.0.1:1/",        // nothing listens on port 1
		"amqp://guest:" + secret + "@127.0.0.1:notaport/", // does not parse
		"amqp://guest:" + secret + "@127.0.0.1:5672/",     // wrong password
	} {
		_, err := Dial(testContext(t), Config{URL: url, Exchange: "unused", DialTimeout: 5 * time.Second}, log)
		if err == nil {
			t.Errorf("Dial: got no error")
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Dial error shows the password: %v", err)
		}
	}

	exchange := uniqueName(t, "ex")
	deleteInCleanup(t, []string{exchange}, nil)
	p, err := Dial(testContext(t), Config{URL: testURL, Exchange: exchange, DeclareExchange: true}, log)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer p.Close()

	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "guest:guest@") {
		t.Errorf("logs show a password: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "guest:xxxxx@127.0.0.1:5672") {
		t.Errorf("logs lack the redacted URL: %s", logs.String())
	}
}

func TestDialCancelledContext(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, Config{URL: testURL}, zerolog.Nop())
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with cancelled context = %v, want context.Canceled", err)
	}
}
