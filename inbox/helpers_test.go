package inbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/internal/testenv"
	"github.com/walrelay/walrelay/migrations"
)

// pythonTableSQL is the inbox table as Event-Forge's Python library
// declares it: SQLAlchemy model InboxMessageEntity in repository
// codeforprod/Event-Forge, file
// packages/python/src/callairis_event_forge/repositories/sqlalchemy/entities.py,
// commit a4c057111a79fedb782bb5b034df86f28016eaa4 (later versions add retry
// columns). The id, status and created_at defaults live in Python, so the
// database has none, and the payload is json.
const pythonTableSQL = `
	CREATE TABLE inbox_messages (
		id            varchar(36) PRIMARY KEY,
		message_id    varchar(255) NOT NULL,
		source        varchar(255) NOT NULL,
		event_type    varchar(255) NOT NULL,
		payload       json NOT NULL,
		status        varchar(50) NOT NULL,
		processed_at  timestamptz,
		error_message text,
		created_at    timestamptz NOT NULL,
		CONSTRAINT uq_inbox_message_source UNIQUE (message_id, source)
	);
	CREATE INDEX idx_inbox_status ON inbox_messages (status);
	CREATE INDEX idx_inbox_created ON inbox_messages (created_at);
	CREATE INDEX idx_inbox_processed ON inbox_messages (processed_at)`

// shape is one of the two inbox table layouts.
type shape string

const (
	typescriptShape shape = "typescript"
	pythonShape     shape = "python"
)

var shapes = []shape{typescriptShape, pythonShape}

// newDatabase creates a database with the inbox table in the given shape
// and returns its URL.
func newDatabase(t *testing.T, s shape) string {
	t.Helper()

	pgURL := testenv.Database(t)
	switch s {
	case typescriptShape:
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := migrations.Up(ctx, pgURL, zerolog.Nop(), migrations.SetEventForge); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	case pythonShape:
		testenv.Exec(t, pgURL, pythonTableSQL)
	}
	return pgURL
}

// newPool opens a pool on pgURL, closed in cleanup.
func newPool(t *testing.T, pgURL string) *pgxpool.Pool {
	t.Helper()

	pool, err := pgxpool.New(context.Background(), pgURL)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// queryInt runs a query returning one integer.
func queryInt(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return n
}

// testLogger logs to the test output in verbose mode only.
func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return zerolog.New(io.Discard)
}

// newQueue declares a durable queue whose dead-letter exchange routes to a
// second queue, all deleted in cleanup. It returns the
// queue and the dead-letter queue.
func newQueue(t *testing.T) (queue, deadLetterExchange, deadLetterQueue string) {
	t.Helper()

	queue = testenv.Name("walrelay_test_inbox")
	deadLetterExchange = testenv.Name("walrelay_test_dlx")
	deadLetterQueue = testenv.Name("walrelay_test_dlq")

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if err := ch.ExchangeDeclare(deadLetterExchange, "fanout", true, false, false, false, nil); err != nil {
		t.Fatalf("declare dead-letter exchange: %v", err)
	}
	if _, err := ch.QueueDeclare(deadLetterQueue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare dead-letter queue: %v", err)
	}
	if err := ch.QueueBind(deadLetterQueue, "", deadLetterExchange, false, nil); err != nil {
		t.Fatalf("bind dead-letter queue: %v", err)
	}
	args := amqp.Table{"x-dead-letter-exchange": deadLetterExchange}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		t.Fatalf("declare queue: %v", err)
	}

	t.Cleanup(func() {
		conn, ch := testenv.Channel(t)
		defer conn.Close()
		for _, q := range []string{queue, deadLetterQueue} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: delete queue %s: %v", q, err)
			}
		}
		if err := ch.ExchangeDelete(deadLetterExchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", deadLetterExchange, err)
		}
	})
	return queue, deadLetterExchange, deadLetterQueue
}

// publish sends messages to queue through the default exchange, with
// publisher confirms.
func publish(t *testing.T, queue string, msgs ...amqp.Publishing) {
	t.Helper()

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range msgs {
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, m)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if ok, err := conf.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish not confirmed: ok=%v err=%v", ok, err)
		}
	}
}

// eventForgeMessage returns a message as the relay and Event-Forge's
// publishers send it.
func eventForgeMessage(id string, n int) amqp.Publishing {
	body := fmt.Sprintf(`{"id":%q,"aggregateType":"order","aggregateId":"o-%d","eventType":"created","payload":{"n":%d},"metadata":{"trace":"t-%d"},"createdAt":"2024-05-01T10:00:00.000Z"}`,
		id, n, n, n)
	return amqp.Publishing{
		MessageId:    id,
		Type:         "created",
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Body:         []byte(body),
		Headers:      amqp.Table{"x-aggregate-type": "order", "x-aggregate-id": fmt.Sprintf("o-%d", n), "x-event-type": "created"},
	}
}

// queueDepth returns the number of ready messages in queue.
func queueDepth(t *testing.T, queue string) int {
	t.Helper()

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}

// waitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runConsumer starts c.Run in the background; the returned function
// cancels it and returns Run's error. Cleanup stops it too.
func runConsumer(t *testing.T, c *Consumer) (stop func() error) {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = errors.New("consumer did not stop within 30s")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })

	select {
	case <-c.Consuming():
	case err := <-done:
		done <- err
		t.Fatalf("consumer exited before consuming: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not start consuming within 30s")
	}
	return stop
}

// countingObserver counts the consumer's events.
type countingObserver struct {
	received, redelivered, recorded, duplicates, rejected atomic.Int64
	postgresReconnects, brokerReconnects                  atomic.Int64
	connected                                             atomic.Bool
}

func (o *countingObserver) Received(n, redelivered int) {
	o.received.Add(int64(n))
	o.redelivered.Add(int64(redelivered))
}
func (o *countingObserver) Recorded(n int)   { o.recorded.Add(int64(n)) }
func (o *countingObserver) Duplicates(n int) { o.duplicates.Add(int64(n)) }
func (o *countingObserver) Rejected(n int)   { o.rejected.Add(int64(n)) }
func (o *countingObserver) Connected(c bool) { o.connected.Store(c) }
func (o *countingObserver) Reconnected(side Side) {
	switch side {
	case SidePostgres:
		o.postgresReconnects.Add(1)
	case SideBroker:
		o.brokerReconnects.Add(1)
	}
}

// proxy forwards TCP connections from a local port to target, and can cut
// them: while down it closes every open connection and every new one at
// once, as a server that went away.
type proxy struct {
	listener net.Listener
	target   string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newProxy starts a proxy to target on a free port of 127.0.0.1; cleanup
// closes it.
func newProxy(t *testing.T, target string) *proxy {
	t.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &proxy{listener: l, target: target, conns: make(map[net.Conn]struct{})}

	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is the proxy's host:port.
func (p *proxy) addr() string {
	return p.listener.Addr().String()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *proxy) serve(client net.Conn) {
	defer p.wg.Done()

	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		client.Close()
		server.Close()
		return
	}

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done

	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// track registers a connection pair unless the proxy is down.
func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// setDown cuts every connection and refuses new ones (down), or lets them
// through again.
func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *proxy) close() {
	p.listener.Close()
	p.setDown(true)
	p.wg.Wait()
}
