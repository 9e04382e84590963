package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/relay"
)

// addPostgresFlag adds --pg-url. Its default is empty, which makes pgx take
// the standard PG* environment variables (PGHOST, PGUSER, ...) and fall back
// to localhost.
func addPostgresFlag(cmd *cobra.Command, url *string) {
	cmd.Flags().StringVar(url, "pg-url", "",
		"Postgres connection string (URL or key=value); default: the PG* environment variables, else localhost")
}

func newRunCommand(logs *logOptions) *cobra.Command {
	var (
		cfg      relay.Config
		create   bool
		declare  bool
		debezium bool
		amqpURLs []string
		httpAddr string
		slotOpts *slotFlags
	)

	cmd := &cobra.Command{
		Use:   "run",
		Short: "Relay outbox inserts to RabbitMQ until stopped",
		Long: "run streams the outbox table's inserts from a logical replication slot and publishes each\n" +
			"one to RabbitMQ with publisher confirms. SIGINT or SIGTERM stops reading, waits for the\n" +
			"outstanding confirms (up to --shutdown-timeout), reports the final position and exits 0.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}

			if len(amqpURLs) == 0 {
				return fmt.Errorf("missing --amqp-url: give at least one RabbitMQ URL")
			}
			cfg.AMQPURL, cfg.AMQPURLs = amqpURLs[0], amqpURLs[1:]
			cfg.NoCreate = !create
			cfg.NoDeclareExchange = !declare
			if err := slotOpts.apply(&cfg); err != nil {
				return err
			}
			if debezium {
				cfg.Columns = decode.DebeziumColumns()
			}

			// Reject bad settings before the HTTP server binds its port.
			if err := cfg.Validate(); err != nil {
				return err
			}

			observer, stopHTTP, err := startHTTP(cmd.Context(), httpAddr, log)
			if err != nil {
				return err
			}
			defer stopHTTP()
			cfg.Observer = observer

			r, err := relay.New(cfg, log)
			if err != nil {
				return err
			}

			return r.Run(cmd.Context())
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &cfg.PostgresURL)
	addHTTPFlag(cmd, &httpAddr)
	f.StringSliceVar(&amqpURLs, "amqp-url", []string{relay.DefaultAMQPURL},
		"RabbitMQ URL; repeat it (or separate with commas) for the nodes of a cluster, tried in turn after a failure")
	f.StringVar(&cfg.AMQPCACert, "amqp-ca", "", "PEM file of the CA that signs the broker's certificate, for amqps:// (default: system roots)")
	f.StringVar(&cfg.AMQPClientCert, "amqp-cert", "", "PEM client certificate for amqps://, when the broker requires one")
	f.StringVar(&cfg.AMQPClientKey, "amqp-key", "", "PEM key of --amqp-cert")
	f.StringVar(&cfg.OnUnroutable, "on-unroutable", relay.PolicyRetry,
		"unroutable messages: retry (hold the position, retry with backoff) or dead-letter")
	f.StringVar(&cfg.OnInvalid, "on-invalid", relay.PolicyHalt,
		"rows that cannot become a message: halt (stop with the position held) or dead-letter")
	f.StringVar(&cfg.DeadLetterExchange, "dead-letter-exchange", "", "exchange for dead-lettered messages (topic, durable)")
	f.DurationVar(&cfg.ConfirmTimeout, "confirm-timeout", 30*time.Second,
		"maximum wait for a broker confirm before the connection counts as hung")
	f.DurationVar(&cfg.ReceiveTimeout, "receive-timeout", 0,
		"maximum silence of the replication connection before it counts as dead (default 3 x --status-interval, at least 30s)")
	f.StringVar(&cfg.Table, "table", relay.DefaultTable, "outbox table, as schema.table or table")
	f.StringVar(&cfg.Publication, "publication", relay.DefaultPublication, "publication to stream; created for --table when missing")
	f.StringVar(&cfg.Slot, "slot", relay.DefaultSlot, "logical replication slot (lowercase letters, digits, underscores)")
	f.BoolVar(&create, "create", true, "create the publication and the slot when missing")
	f.StringVar(&cfg.Exchange, "exchange", relay.DefaultExchange, "default exchange (topic, durable)")
	f.BoolVar(&declare, "declare-exchange", true, "declare the exchanges at start")
	f.StringVar(&cfg.DelayedExchange, "delayed-exchange", "",
		"x-delayed-message exchange for delayed messages (needs the rabbitmq_delayed_message_exchange plugin)")
	f.StringVar(&cfg.MessagePrefix, "message-prefix", relay.DefaultMessagePrefix,
		"prefix of pg_logical_emit_message messages to relay")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", relay.DefaultMaxInFlight, "maximum published but unconfirmed messages")
	f.DurationVar(&cfg.StatusInterval, "status-interval", relay.DefaultStatusInterval,
		"interval of standby status updates to Postgres and of checkpoint writes")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", relay.DefaultShutdownTimeout,
		"maximum wait for outstanding confirms on shutdown")
	f.BoolVar(&debezium, "debezium-columns", false,
		"map a Debezium-style outbox table (id, aggregatetype, aggregateid, type, payload)")
	addColumnFlags(cmd, &cfg.Columns)
	slotOpts = addSlotFlags(cmd, &cfg)

	return cmd
}

// addColumnFlags adds one flag per outbox column name.
func addColumnFlags(cmd *cobra.Command, c *decode.Columns) {
	f := cmd.Flags()
	f.StringVar(&c.ID, "column-id", "", "id column (default id)")
	f.StringVar(&c.AggregateType, "column-aggregate-type", "", "aggregate type column (default aggregate_type)")
	f.StringVar(&c.AggregateID, "column-aggregate-id", "", "aggregate id column (default aggregate_id)")
	f.StringVar(&c.EventType, "column-event-type", "", "event type column (default event_type)")
	f.StringVar(&c.Payload, "column-payload", "", "payload column, json or jsonb (default payload)")
	f.StringVar(&c.Metadata, "column-metadata", "", "metadata column, json or jsonb; - for none (default metadata)")
	f.StringVar(&c.CreatedAt, "column-created-at", "", "creation time column; - for none (default created_at)")
	f.StringVar(&c.ScheduledAt, "column-scheduled-at", "", "scheduled time column; - for none (default scheduled_at)")
}
