// Command inbox-handler is a small example of the inbox handler API with
// amqp091-go. It consumes a queue and adds the total of each order.created
// message to a per-customer balance. It does so once per message id, however
// often the broker delivers the message.
//
// Run it against the tables of `walrelay migrate` and a queue bound to
// walrelay's exchange:
//
//	walrelay migrate --pg-url "$PG_URL"
//	PG_URL=postgres://... AMQP_URL=amqp://guest:guest@localhost:5672/ QUEUE=billing \
//	    go run ./examples/inbox-handler
//
// The handler writes through the transaction it is given, so its write
// commits together with the inbox row that marks the message processed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/inbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	if err := run(ctx, log); err != nil {
		log.Error().Err(err).Msg("inbox-handler failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, log zerolog.Logger) error {
	pool, err := pgxpool.New(ctx, os.Getenv("PG_URL"))
	if err != nil {
		return fmt.Errorf("open Postgres pool: %w", err)
	}
	defer pool.Close()

	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS customer_balances (
		customer_id text PRIMARY KEY, balance numeric NOT NULL)`); err != nil {
		return fmt.Errorf("create customer_balances: %w", err)
	}

	processor, err := inbox.NewProcessor(ctx, pool, inbox.ProcessorConfig{Source: "orders-service"}, log)
	if err != nil {
		return err
	}

	// Failed messages whose retry is due run again from the inbox table.
	go func() { _ = processor.RunDue(ctx, addToBalance) }()

	conn, err := amqp.Dial(envOr("AMQP_URL", "amqp://guest:guest@localhost:5672/"))
	if err != nil {
		return fmt.Errorf("connect to RabbitMQ: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(20, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(envOr("QUEUE", "billing"), "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("the broker closed the channel")
			}
			if err := settle(ctx, processor, d, log); err != nil {
				return err
			}
		}
	}
}

// settle processes one delivery and acks, rejects or requeues it.
func settle(ctx context.Context, processor *inbox.Processor, d amqp.Delivery, log zerolog.Logger) error {
	res, err := processor.Handle(ctx, d, addToBalance)
	switch {
	case errors.Is(err, inbox.ErrInvalidMessage):
		log.Error().Err(err).Str("message_id", d.MessageId).Msg("message rejected")
		return d.Reject(false)
	case err != nil:
		// Nothing committed: the broker delivers the message again.
		log.Warn().Err(err).Str("message_id", d.MessageId).Msg("message requeued")
		return d.Nack(false, true)
	}

	log.Info().Str("message_id", d.MessageId).Str("outcome", res.Outcome.String()).Msg("message handled")
	return d.Ack(false)
}

// addToBalance is the idempotent effect: it runs inside the inbox
// transaction, which Processor commits only once per message id.
func addToBalance(ctx context.Context, tx pgx.Tx, m inbox.Message) error {
	if m.EventType != "created" {
		return nil
	}

	var order struct {
		CustomerID string  `json:"customerId"`
		Total      float64 `json:"total"`
	}
	if err := json.Unmarshal(m.Payload, &order); err != nil || order.CustomerID == "" {
		// No retry can fix a malformed payload.
		return inbox.Permanent(fmt.Errorf("payload of order message %s has no customerId and total: %s", m.ID, m.Payload))
	}

	_, err := tx.Exec(ctx, `
		INSERT INTO customer_balances (customer_id, balance) VALUES ($1, $2)
		ON CONFLICT (customer_id) DO UPDATE SET balance = customer_balances.balance + EXCLUDED.balance`,
		order.CustomerID, order.Total)
	return err
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
