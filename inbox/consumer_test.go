package inbox

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/internal/testenv"
)

// testConfig returns a consumer configuration with short intervals.
func testConfig(pgURL, queue, dlx string) Config {
	return Config{
		PostgresURL:        pgURL,
		AMQPURL:            testenv.AMQPURL(),
		Queue:              queue,
		DeadLetterExchange: dlx,
		Source:             "orders-service",
		Prefetch:           50,
		HealthInterval:     200 * time.Millisecond,
		RetryInitial:       50 * time.Millisecond,
		RetryMax:           500 * time.Millisecond,
	}
}

func TestConsumerRecordsEachMessageOnce(t *testing.T) {
	for _, s := range shapes {
		t.Run(string(s), func(t *testing.T) {
			pgURL := newDatabase(t, s)
			pool := newPool(t, pgURL)
			queue, dlx, dlq := newQueue(t)

			// 40 messages, 10 of them sent twice, and one that is not JSON.
			var msgs []amqp.Publishing
			for i := range 40 {
				msgs = append(msgs, eventForgeMessage(fmt.Sprintf("msg-%03d", i), i))
			}
			for i := range 10 {
				msgs = append(msgs, eventForgeMessage(fmt.Sprintf("msg-%03d", i), i))
			}
			msgs = append(msgs, amqp.Publishing{MessageId: "broken-1", Type: "created", Body: []byte("not json")})
			publish(t, queue, msgs...)

			obs := &countingObserver{}
			cfg := testConfig(pgURL, queue, dlx)
			cfg.Observer = obs
			c, err := New(cfg, testLogger(t))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			stop := runConsumer(t, c)
			waitFor(t, 20*time.Second, "51 deliveries", func() bool { return c.Stats().Received == 51 })
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}

			stats := c.Stats()
			if stats.Recorded != 40 {
				t.Errorf("recorded = %d, want 40", stats.Recorded)
			}
			if stats.Duplicates != 10 {
				t.Errorf("duplicates = %d, want 10", stats.Duplicates)
			}
			if stats.Rejected != 1 {
				t.Errorf("rejected = %d, want 1", stats.Rejected)
			}
			if obs.recorded.Load() != 40 || obs.duplicates.Load() != 10 || obs.rejected.Load() != 1 || obs.received.Load() != 51 {
				t.Errorf("observer counted received %d, recorded %d, duplicates %d, rejected %d; want 51, 40, 10, 1",
					obs.received.Load(), obs.recorded.Load(), obs.duplicates.Load(), obs.rejected.Load())
			}

			if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages`); n != 40 {
				t.Errorf("inbox rows = %d, want 40", n)
			}
			if n := queryInt(t, pool, `SELECT count(DISTINCT message_id) FROM inbox_messages WHERE source = 'orders-service'`); n != 40 {
				t.Errorf("distinct message ids = %d, want 40", n)
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages
				WHERE payload::jsonb = jsonb_build_object('n', substr(message_id, 5)::int)
				  AND event_type = 'created' AND status = 'received' AND length(id::text) = 36 AND created_at IS NOT NULL`); n != 40 {
				t.Errorf("rows with the expected payload, event type, status, id and created_at = %d, want 40", n)
			}
			if s == typescriptShape {
				if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages
					WHERE metadata = jsonb_build_object('trace', 't-' || substr(message_id, 5)::int) AND max_retries = 3 AND retry_count = 0`); n != 40 {
					t.Errorf("rows with the expected metadata and retry columns = %d, want 40", n)
				}
			}

			if n := queueDepth(t, queue); n != 0 {
				t.Errorf("queue holds %d messages after the run, want 0", n)
			}
			if n := queueDepth(t, dlq); n != 1 {
				t.Errorf("dead-letter queue holds %d messages, want the 1 rejected", n)
			}
		})
	}
}

func TestConsumerRejectsInvalidRows(t *testing.T) {
	pgURL := newDatabase(t, typescriptShape)
	pool := newPool(t, pgURL)
	queue, dlx, dlq := newQueue(t)

	// Both pass Parse. The 300-character id is longer than message_id's
	// varchar(255), which the consumer checks before the insert. jsonb cannot
	// store \u0000, so Postgres rejects the insert and the consumer records
	// the batch row by row. Neither may hold up the good messages.
	long := eventForgeMessage(strings.Repeat("x", 300), 1)
	long.MessageId = "long-1" // an AMQP message_id holds at most 255 bytes
	nul := amqp.Publishing{MessageId: "nul-1", Type: "created", Body: []byte(`{"id":"nul-1","payload":{"s":"a\u0000b"}}`)}
	publish(t, queue, eventForgeMessage("good-1", 1), nul, eventForgeMessage("good-2", 2), long, eventForgeMessage("good-3", 3))

	c, err := New(testConfig(pgURL, queue, dlx), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop := runConsumer(t, c)
	waitFor(t, 20*time.Second, "5 deliveries", func() bool { return c.Stats().Received == 5 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if got := c.Stats(); got.Recorded != 3 || got.Rejected != 2 {
		t.Errorf("stats = %+v, want 3 recorded and 2 rejected", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE message_id IN ('good-1', 'good-2', 'good-3')`); n != 3 {
		t.Errorf("good rows = %d, want 3", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages`); n != 3 {
		t.Errorf("inbox rows = %d, want 3", n)
	}
	if n := queueDepth(t, dlq); n != 2 {
		t.Errorf("dead-letter queue holds %d messages, want 2", n)
	}
	if n := queueDepth(t, queue); n != 0 {
		t.Errorf("queue holds %d messages, want 0", n)
	}
}

func TestConsumerSurvivesPostgresOutage(t *testing.T) {
	pgURL := newDatabase(t, typescriptShape)
	pool := newPool(t, pgURL)
	queue, dlx, _ := newQueue(t)

	// The consumer reaches Postgres through a proxy that the test cuts.
	pgProxy := newProxy(t, "127.0.0.1:5432")
	proxied, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	proxied.Host = pgProxy.addr()

	obs := &countingObserver{}
	cfg := testConfig(proxied.String(), queue, dlx)
	cfg.Observer = obs
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop := runConsumer(t, c)

	first := make([]amqp.Publishing, 0, 100)
	for i := range 100 {
		first = append(first, eventForgeMessage(fmt.Sprintf("a-%03d", i), i))
	}
	publish(t, queue, first...)
	waitFor(t, 20*time.Second, "100 rows", func() bool { return queryInt(t, pool, `SELECT count(*) FROM inbox_messages`) == 100 })

	pgProxy.setDown(true)
	waitFor(t, 10*time.Second, "the consumer to report not ready", func() bool { return !c.Ready() })
	if obs.connected.Load() {
		t.Error("observer still reports connected while Postgres is down")
	}

	second := make([]amqp.Publishing, 0, 100)
	for i := range 100 {
		second = append(second, eventForgeMessage(fmt.Sprintf("b-%03d", i), i))
	}
	publish(t, queue, second...)

	// Nothing is acked while Postgres is down: all 100 wait in the queue.
	waitFor(t, 10*time.Second, "100 messages waiting in the queue", func() bool { return queueDepth(t, queue) == 100 })
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages`); n != 100 {
		t.Errorf("inbox rows during the outage = %d, want 100", n)
	}

	pgProxy.setDown(false)
	waitFor(t, 20*time.Second, "200 rows", func() bool { return queryInt(t, pool, `SELECT count(*) FROM inbox_messages`) == 200 })
	waitFor(t, 10*time.Second, "the consumer to report ready", c.Ready)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if n := queryInt(t, pool, `SELECT count(DISTINCT message_id) FROM inbox_messages`); n != 200 {
		t.Errorf("distinct message ids = %d, want 200", n)
	}
	if obs.postgresReconnects.Load() < 1 {
		t.Errorf("postgres reconnects = %d, want at least 1", obs.postgresReconnects.Load())
	}
	if n := queueDepth(t, queue); n != 0 {
		t.Errorf("queue holds %d messages after recovery, want 0", n)
	}
}

func TestConsumerSurvivesBrokerOutage(t *testing.T) {
	pgURL := newDatabase(t, pythonShape)
	pool := newPool(t, pgURL)
	queue, dlx, _ := newQueue(t)

	brokerProxy := newProxy(t, "127.0.0.1:5672")
	proxied, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxied.Host = brokerProxy.addr()

	obs := &countingObserver{}
	cfg := testConfig(pgURL, queue, dlx)
	cfg.AMQPURL = proxied.String()
	cfg.Observer = obs
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop := runConsumer(t, c)

	publish(t, queue, eventForgeMessage("before-1", 1), eventForgeMessage("before-2", 2))
	waitFor(t, 20*time.Second, "2 rows", func() bool { return queryInt(t, pool, `SELECT count(*) FROM inbox_messages`) == 2 })

	brokerProxy.setDown(true)
	waitFor(t, 10*time.Second, "the consumer to report not ready", func() bool { return !c.Ready() })

	// Published straight to the broker while the consumer cannot reach it.
	publish(t, queue, eventForgeMessage("during-1", 3), eventForgeMessage("during-2", 4), eventForgeMessage("before-1", 1))

	brokerProxy.setDown(false)
	waitFor(t, 20*time.Second, "4 rows", func() bool { return queryInt(t, pool, `SELECT count(*) FROM inbox_messages`) == 4 })
	waitFor(t, 10*time.Second, "the duplicate to be acked", func() bool { return c.Stats().Duplicates == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if obs.brokerReconnects.Load() < 1 {
		t.Errorf("broker reconnects = %d, want at least 1", obs.brokerReconnects.Load())
	}
	if n := queryInt(t, pool, `SELECT count(DISTINCT message_id) FROM inbox_messages`); n != 4 {
		t.Errorf("distinct message ids = %d, want 4", n)
	}
}

func TestConsumerStopsOnSchemaError(t *testing.T) {
	pgURL := testenv.Database(t)
	queue, dlx, _ := newQueue(t)

	c, err := New(testConfig(pgURL, queue, dlx), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "inbox table public.inbox_messages does not exist") {
		t.Fatalf("Run = %v, want the missing table error", err)
	}
}

func TestConsumerBindsExchange(t *testing.T) {
	pgURL := newDatabase(t, typescriptShape)
	pool := newPool(t, pgURL)
	queue, dlx, _ := newQueue(t)
	exchange := testenv.Name("walrelay_test_x")
	t.Cleanup(func() {
		conn, ch := testenv.Channel(t)
		defer conn.Close()
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", exchange, err)
		}
	})

	cfg := testConfig(pgURL, queue, dlx)
	cfg.Bindings = []Binding{{Exchange: exchange, Pattern: "order.*"}}
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stop := runConsumer(t, c)

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, key := range []string{"order.created", "invoice.created"} {
		m := eventForgeMessage("via-"+key, 1)
		if err := ch.PublishWithContext(ctx, exchange, key, false, false, m); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	waitFor(t, 20*time.Second, "the order message", func() bool { return c.Stats().Recorded == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE message_id = 'via-order.created'`); n != 1 {
		t.Errorf("rows for the bound routing key = %d, want 1", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages`); n != 1 {
		t.Errorf("inbox rows = %d, want 1 (invoice.created does not match order.*)", n)
	}
}
