package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

// TestInboxEndToEndExactlyOnce runs the whole path with real processes:
// outbox rows, `walrelay run`, RabbitMQ, `walrelay inbox`, inbox table.
// The relay is killed with SIGKILL after its first messages are recorded,
// and then restarted. The inbox consumer is killed with SIGKILL after it has
// committed rows whose acks have not reached the broker. Every outbox row
// must end up in the inbox exactly once.
func TestInboxEndToEndExactlyOnce(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")
	runInboxMigrate(t, pgURL)
	db := openInboxTestConn(t, pgURL)

	relayArgs := []string{"run", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--declare-exchange=false", "--slot", slot, "--http-addr="}
	relay1 := startWalrelay(t, relayArgs...)
	relay1.waitForLog(t, `"relay started"`, 60*time.Second)

	// The first consumer reaches the broker through a proxy that can hold
	// back everything the consumer sends, acks included.
	brokerProxy := newHoldingProxy(t, "127.0.0.1:5672")
	proxiedURL, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxiedURL.Host = brokerProxy.addr()
	inboxArgs := func(amqpURL string) []string {
		return []string{"inbox", "--pg-url", pgURL, "--amqp-url", amqpURL, "--queue", queue,
			"--source", "e2e", "--prefetch", "10", "--http-addr="}
	}
	inbox1 := startWalrelay(t, inboxArgs(proxiedURL.String())...)
	inbox1.waitForLog(t, `"inbox consuming"`, 30*time.Second)

	// Rows 1-500, then the relay dies once the inbox has recorded some.
	insertOutboxRows(t, db, 1, 500)
	waitForInboxRows(t, db, "at least 50 inbox rows", 30*time.Second, func(n int) bool { return n >= 50 })
	killProcess(t, relay1)

	// Rows 501-1000 while no relay runs; the slot keeps them.
	insertOutboxRows(t, db, 501, 500)
	relay2 := startWalrelay(t, relayArgs...)
	relay2.waitForLog(t, `"relay started"`, 60*time.Second)
	waitForInboxRows(t, db, "1000 inbox rows", 60*time.Second, func(n int) bool { return n == 1000 })

	// Hold the consumer's acks, then give it rows 1001-1500. It commits
	// what it receives, up to the prefetch window, but no ack arrives.
	brokerProxy.hold()
	insertOutboxRows(t, db, 1001, 500)
	waitForInboxRows(t, db, "rows committed while acks are held", 30*time.Second, func(n int) bool { return n > 1000 })
	committedUnacked := countInboxRows(t, db) - 1000
	killProcess(t, inbox1)
	brokerProxy.close()

	// A second consumer, straight to the broker, gets the unacked
	// deliveries again and the rest of the stream.
	inbox2 := startWalrelay(t, inboxArgs(testenv.AMQPURL())...)
	inbox2.waitForLog(t, `"inbox consuming"`, 30*time.Second)
	waitForInboxRows(t, db, "1500 inbox rows", 60*time.Second, func(n int) bool { return n == 1500 })
	waitForInboxQueueEmpty(t, queue, 30*time.Second)
	if code := inbox2.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("inbox exit code after SIGTERM = %d, want 0; stderr:\n%s", code, inbox2.stderr.String())
	}
	if code := relay2.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("relay exit code after SIGTERM = %d, want 0; stderr:\n%s", code, relay2.stderr.String())
	}

	stats := inboxStoppedStats(t, inbox2.stderr.String())
	t.Logf("rows committed by the first consumer without an ack reaching the broker: %d", committedUnacked)
	t.Logf("second consumer: %d deliveries, %d redelivered by the broker, %d recorded, %d duplicates acked",
		stats.Received, stats.Redelivered, stats.Recorded, stats.Duplicates)

	if stats.Redelivered < 1 {
		t.Errorf("broker redeliveries seen by the second consumer = %d, want at least 1", stats.Redelivered)
	}
	if stats.Duplicates < uint64(committedUnacked) {
		t.Errorf("duplicates acked by the second consumer = %d, want at least the %d rows committed but not acked",
			stats.Duplicates, committedUnacked)
	}
	if got := countInboxRows(t, db); got != 1500 {
		t.Errorf("inbox rows = %d, want 1500", got)
	}
	if got := queryInboxInt(t, db, `SELECT count(DISTINCT message_id) FROM inbox_messages`); got != 1500 {
		t.Errorf("distinct message ids = %d, want 1500", got)
	}
	if got := queryInboxInt(t, db, `SELECT count(*) FROM outbox_messages o JOIN inbox_messages i
		ON i.message_id = o.id::text AND i.source = 'e2e'
		AND i.event_type = o.event_type AND i.payload = o.payload AND i.status = 'received'`); got != 1500 {
		t.Errorf("outbox rows recorded with their event type and payload = %d, want 1500", got)
	}
}

// TestInboxPythonTable records relayed messages in the inbox table as
// Event-Forge's Python library creates it: varchar(36) id and no database
// defaults, json payload, no retry columns.
func TestInboxPythonTable(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")
	runInboxMigrate(t, pgURL)
	db := openInboxTestConn(t, pgURL)

	// The SQLAlchemy model InboxMessageEntity of codeforprod/Event-Forge,
	// packages/python/src/callairis_event_forge/repositories/sqlalchemy/entities.py
	// at commit a4c057111a79fedb782bb5b034df86f28016eaa4.
	testenv.Exec(t, pgURL, `
		CREATE SCHEMA py;
		CREATE TABLE py.inbox_messages (
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
		)`)

	relay := startWalrelay(t, "run", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--exchange", exchange, "--declare-exchange=false", "--slot", slot, "--http-addr=")
	relay.waitForLog(t, `"relay started"`, 60*time.Second)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	consumer := startWalrelay(t, "inbox", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(),
		"--queue", queue, "--source", "py-service", "--table", "py.inbox_messages", "--http-addr", httpAddr)
	consumer.waitForLog(t, `"inbox consuming"`, 30*time.Second)
	waitForHTTP(t, "http://"+httpAddr+"/readyz", http.StatusOK, 10*time.Second)

	insertOutboxRows(t, db, 1, 200)
	countPy := func(n int) bool {
		return queryInboxInt(t, db, `SELECT count(*) FROM py.inbox_messages`) == n
	}
	waitForInboxRows(t, db, "200 rows in py.inbox_messages", 30*time.Second, func(int) bool { return countPy(200) })

	families := scrape(t, "http://"+httpAddr+"/metrics")
	if got := metricValue(families, "walrelay_inbox_messages_recorded_total"); got != 200 {
		t.Errorf("walrelay_inbox_messages_recorded_total = %v, want 200", got)
	}
	if got := metricValue(families, "walrelay_inbox_connected"); got != 1 {
		t.Errorf("walrelay_inbox_connected = %v, want 1", got)
	}

	if code := consumer.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("inbox exit code = %d, want 0; stderr:\n%s", code, consumer.stderr.String())
	}
	if code := relay.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("relay exit code = %d, want 0; stderr:\n%s", code, relay.stderr.String())
	}

	if got := queryInboxInt(t, db, `SELECT count(*) FROM outbox_messages o JOIN py.inbox_messages i
		ON i.message_id = o.id::text AND i.source = 'py-service' AND i.event_type = o.event_type
		AND i.payload::jsonb = o.payload AND i.status = 'received' AND i.created_at IS NOT NULL
		AND i.id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'`); got != 200 {
		t.Errorf("outbox rows recorded with a UUID id, event type, payload, status and created_at = %d, want 200", got)
	}
	if got := queryInboxInt(t, db, `SELECT count(*) FROM inbox_messages`); got != 0 {
		t.Errorf("rows in the TypeScript table public.inbox_messages = %d, want 0", got)
	}
}

func TestInboxRequiresQueueAndSource(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"inbox", "--source", "s"}, "missing queue"},
		{[]string{"inbox", "--queue", "q"}, "missing source"},
		{[]string{"inbox", "--queue", "q", "--source", "s", "--bind", ":x"}, "invalid binding"},
		{[]string{"inbox", "--queue", "q", "--source", "s", "--prefetch", "70000"}, "invalid prefetch 70000"},
	}
	for _, tt := range tests {
		res := runWalrelay(t, 30*time.Second, nil, tt.args...)
		if res.exitCode != 1 {
			t.Errorf("walrelay %s exited %d, want 1", strings.Join(tt.args, " "), res.exitCode)
		}
		if !strings.Contains(res.stderr, tt.want) {
			t.Errorf("walrelay %s printed %q, want %q", strings.Join(tt.args, " "), res.stderr, tt.want)
		}
	}
}

// killProcess sends SIGKILL to the walrelay process b and waits until it is
// gone.
func killProcess(t *testing.T, b *background) {
	t.Helper()

	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill walrelay: %v", err)
	}
	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("walrelay still runs 10s after SIGKILL")
	}
}

// runInboxMigrate creates the Event-Forge tables.
func runInboxMigrate(t *testing.T, pgURL string) {
	t.Helper()

	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate exited %d: %s", res.exitCode, res.stderr)
	}
}

func openInboxTestConn(t *testing.T, pgURL string) *pgx.Conn {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// insertOutboxRows commits count outbox rows numbered from first on, in
// transactions of 100 rows.
func insertOutboxRows(t *testing.T, db *pgx.Conn, first, count int) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for from := first; from < first+count; from += 100 {
		to := min(from+99, first+count-1)
		_, err := db.Exec(ctx, `
			INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
			SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n) FROM generate_series($1::int, $2::int) n`,
			from, to)
		if err != nil {
			t.Fatalf("insert outbox rows %d-%d: %v", from, to, err)
		}
	}
}

func queryInboxInt(t *testing.T, db *pgx.Conn, sql string) int {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return n
}

func countInboxRows(t *testing.T, db *pgx.Conn) int {
	return queryInboxInt(t, db, `SELECT count(*) FROM inbox_messages`)
}

// waitForInboxRows polls the inbox row count until cond holds.
func waitForInboxRows(t *testing.T, db *pgx.Conn, what string, timeout time.Duration, cond func(n int) bool) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		n := countInboxRows(t, db)
		if cond(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; inbox rows: %d", timeout, what, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitForInboxQueueEmpty waits until the queue has no ready messages.
func waitForInboxQueueEmpty(t *testing.T, queue string, timeout time.Duration) {
	t.Helper()

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect queue %s: %v", queue, err)
		}
		if q.Messages == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s still holds %d messages after %s", queue, q.Messages, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inboxStats are the counters of the "inbox stopped" log line.
type inboxStats struct {
	Received    uint64 `json:"received"`
	Redelivered uint64 `json:"redelivered"`
	Recorded    uint64 `json:"recorded"`
	Duplicates  uint64 `json:"duplicates"`
	Rejected    uint64 `json:"rejected"`
}

func inboxStoppedStats(t *testing.T, logs string) inboxStats {
	t.Helper()

	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"message":"inbox stopped"`) {
			continue
		}
		var s inboxStats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		return s
	}
	t.Fatalf("no \"inbox stopped\" line in the logs:\n%s", logs)
	return inboxStats{}
}

// holdingProxy forwards TCP connections to a target. After hold, it
// forwards nothing more from clients to the target, while the target's
// data still reaches the clients: acks sent by a consumer then never reach
// the broker.
type holdingProxy struct {
	listener net.Listener
	target   string

	mu      sync.Mutex
	holding bool
	closed  bool
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newHoldingProxy(t *testing.T, target string) *holdingProxy {
	t.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &holdingProxy{listener: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holdingProxy) addr() string { return p.listener.Addr().String() }

func (p *holdingProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()

		p.wg.Add(2)
		go p.pipe(server, client, true)
		go p.pipe(client, server, false)
	}
}

// pipe copies src to dst; upstream pipes stop forwarding while the proxy
// holds, keeping what they read.
func (p *holdingProxy) pipe(dst, src net.Conn, upstream bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()

	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for upstream && p.isHolding() {
				if p.isClosed() {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdingProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
}

func (p *holdingProxy) isHolding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holding
}

func (p *holdingProxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// close drops every connection with whatever it holds, and waits for the
// proxy's goroutines.
func (p *holdingProxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.listener.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
