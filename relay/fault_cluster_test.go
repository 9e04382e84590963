package relay

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestFaultBrokerURLsTriedInTurn(t *testing.T) {
	f := newFixture(t)
	first := testenv.NewProxy(t, "127.0.0.1:5672")
	second := testenv.NewProxy(t, "127.0.0.1:5672")

	cfg := f.config()
	cfg.AMQPURL = "amqp://guest:guest@" + closedPort(t) + "/"
	cfg.AMQPURLs = []string{
		testenv.ThroughProxy(testenv.AMQPURL(), "127.0.0.1:5672", first.Addr),
		testenv.ThroughProxy(testenv.AMQPURL(), "127.0.0.1:5672", second.Addr),
	}
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	// The first URL refuses connections, so the relay runs on the second.
	insertRows(t, f.pgURL, 0, 100)
	consumer.Collect(t, 100, 30*time.Second)
	waitConfirmed(t, f.pgURL, cfg.Slot)

	// Losing that node moves the relay to the next one.
	first.Cut()
	insertRows(t, f.pgURL, 100, 100)
	deliveries := collectRange(t, consumer, 100, 200, time.Minute)
	checkDelivery(t, deliveries, 100, 200)
}

func TestFaultBrokerTLSWithClientCertificate(t *testing.T) {
	f := newFixture(t)
	certs := testenv.NewCertificates(t, "walrelay-test-client")
	term := testenv.NewTLSTerminator(t, certs, "127.0.0.1:5672")
	_, port, _ := net.SplitHostPort(term.Addr)

	cfg := f.config()
	cfg.AMQPURL = "amqps://guest:guest@localhost:" + port + "/"
	cfg.AMQPCACert = certs.CA
	cfg.AMQPClientCert = certs.ClientCert
	cfg.AMQPClientKey = certs.ClientKey
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	insertRows(t, f.pgURL, 0, 20)
	deliveries := consumer.Collect(t, 20, 30*time.Second)
	checkDelivery(t, deliveries, 0, 20)

	names := term.ClientNames()
	if len(names) == 0 || names[0] != "walrelay-test-client" {
		t.Errorf("verified client certificates %v, want walrelay-test-client", names)
	}
}

func TestFaultBrokerTLSRejectsUnknownCA(t *testing.T) {
	f := newFixture(t)
	certs := testenv.NewCertificates(t, "walrelay-test-client")
	other := testenv.NewCertificates(t, "walrelay-test-client")
	term := testenv.NewTLSTerminator(t, certs, "127.0.0.1:5672")
	_, port, _ := net.SplitHostPort(term.Addr)

	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	cfg.AMQPURL = "amqps://guest:guest@localhost:" + port + "/"
	cfg.AMQPCACert = other.CA // does not sign the terminator's certificate
	cfg.AMQPClientCert = certs.ClientCert
	cfg.AMQPClientKey = certs.ClientKey

	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run returned %v; a broker that fails verification is retried, not fatal", err)
	}

	if term.Verified.Load() != 0 {
		t.Error("a connection reached the broker although the server certificate is not trusted")
	}
	if n := obs.started.Load(); n != 0 {
		t.Errorf("%d sessions streamed through an untrusted broker connection, want none", n)
	}
}

func TestPostgresTLS(t *testing.T) {
	f := newFixture(t)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	var ssl string
	err = conn.QueryRow(ctx, "SHOW ssl").Scan(&ssl)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ssl != "on" {
		t.Skip("the local Postgres has ssl=off")
	}

	cfg := f.config()
	cfg.PostgresURL = strings.Replace(f.pgURL, "sslmode=disable", "sslmode=require", 1)
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	insertRows(t, f.pgURL, 0, 10)
	consumer.Collect(t, 10, 30*time.Second)

	conn, err = pgx.Connect(ctx, f.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var encrypted bool
	err = conn.QueryRow(ctx, `
		SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON r.active_pid = s.pid
		WHERE r.slot_name = $1`, cfg.Slot).Scan(&encrypted)
	if err != nil {
		t.Fatal(err)
	}
	if !encrypted {
		t.Error("the replication connection is not encrypted with sslmode=require")
	}
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return fmt.Sprint(addr)
}
