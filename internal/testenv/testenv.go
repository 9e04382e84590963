// Package testenv gives integration tests their own database, exchange and
// queue on the local PostgreSQL and RabbitMQ, and removes them afterwards.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
)

// AdminURL is the maintenance database used to create test databases.
// WALRELAY_TEST_PG_URL overrides it.
func AdminURL() string {
	if u := os.Getenv("WALRELAY_TEST_PG_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// AMQPURL is the local broker. WALRELAY_TEST_AMQP_URL overrides it.
func AMQPURL() string {
	if u := os.Getenv("WALRELAY_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Name returns a unique lowercase name with prefix, valid as a database,
// slot, exchange or queue name.
func Name(prefix string) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "_" + hex.EncodeToString(b)
}

// Database creates a fresh database and returns its URL. Cleanup drops the
// replication slots of that database and then the database.
func Database(t testing.TB) string {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connect to the test Postgres at %s: %v", AdminURL(), err)
	}
	defer admin.Close(ctx)

	name := Name("walrelay_test")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}

	t.Cleanup(func() { dropDatabase(t, name) })

	return DatabaseURL(name)
}

// DatabaseURL returns the URL of the local database called name.
func DatabaseURL(name string) string {
	u := AdminURL()
	i := strings.LastIndex(u, "/")
	rest := ""
	if q := strings.Index(u[i:], "?"); q >= 0 {
		rest = u[i+q:]
	}
	return u[:i+1] + name + rest
}

func dropDatabase(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Errorf("cleanup: connect: %v", err)
		return
	}
	defer admin.Close(ctx)

	// A slot may still be held by a walsender that is shutting down: retry
	// for a while before giving up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = admin.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = admin.Exec(ctx, `
				SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = $1 AND NOT active`, name)
		}
		var left int
		if err == nil {
			err = admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left)
		}
		if err == nil && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cleanup: drop replication slots of %s: %v (%d left)", name, err, left)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("cleanup: drop database %s: %v", name, err)
	}
}

// RequireLogical skips the test unless the server runs wal_level=logical.
func RequireLogical(t testing.TB) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("connect to the test Postgres: %v", err)
	}
	defer conn.Close(ctx)

	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "logical" {
		t.Fatalf("wal_level is %q; run scripts/services.sh (make test does) to switch it to logical", level)
	}
}

// Exec runs sql on the database at url.
func Exec(t testing.TB, url, sql string, args ...any) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", abbreviate(sql), err)
	}
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// Queue declares a topic exchange and a queue bound to it with pattern "#",
// and deletes both in cleanup. It returns the exchange and queue names.
func Queue(t testing.TB) (exchange, queue string) {
	t.Helper()

	exchange = Name("walrelay_test_x")
	queue = Name("walrelay_test_q")

	conn, ch := Channel(t)
	defer conn.Close()

	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("declare exchange: %v", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		t.Fatalf("bind queue: %v", err)
	}

	t.Cleanup(func() {
		conn, ch := Channel(t)
		defer conn.Close()
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			t.Errorf("cleanup: delete queue %s: %v", queue, err)
		}
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", exchange, err)
		}
	})

	return exchange, queue
}

// Channel opens a connection and a channel to the local broker.
func Channel(t testing.TB) (*amqp.Connection, *amqp.Channel) {
	t.Helper()

	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		t.Fatalf("connect to RabbitMQ at 127.0.0.1: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatalf("open channel: %v", err)
	}

	return conn, ch
}

// Consumer receives the messages of one queue.
type Consumer struct {
	conn       *amqp.Connection
	deliveries <-chan amqp.Delivery
}

// Consume starts consuming queue with automatic acks.
func Consume(t testing.TB, queue string) *Consumer {
	t.Helper()

	conn, ch := Channel(t)
	if err := ch.Qos(5000, 0, false); err != nil {
		t.Fatalf("set prefetch: %v", err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		conn.Close()
		t.Fatalf("consume %s: %v", queue, err)
	}
	t.Cleanup(func() { conn.Close() })

	return &Consumer{conn: conn, deliveries: deliveries}
}

// Next returns the next delivery, failing the test after timeout.
func (c *Consumer) Next(t testing.TB, timeout time.Duration) amqp.Delivery {
	t.Helper()

	select {
	case d, ok := <-c.deliveries:
		if !ok {
			t.Fatal("consumer channel closed")
		}
		return d
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
		return amqp.Delivery{}
	}
}

// Collect receives n deliveries, failing the test when they do not arrive
// within timeout in total.
func (c *Consumer) Collect(t testing.TB, n int, timeout time.Duration) []amqp.Delivery {
	t.Helper()

	out := make([]amqp.Delivery, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case d, ok := <-c.deliveries:
			if !ok {
				t.Fatalf("consumer channel closed after %d of %d messages", len(out), n)
			}
			out = append(out, d)
		case <-deadline:
			t.Fatalf("received %d of %d messages within %s", len(out), n, timeout)
		}
	}

	return out
}

// ExpectNone fails the test if a message arrives within wait.
func (c *Consumer) ExpectNone(t testing.TB, wait time.Duration) {
	t.Helper()

	select {
	case d := <-c.deliveries:
		t.Fatalf("unexpected message %s: %s", d.MessageId, d.Body)
	case <-time.After(wait):
	}
}
