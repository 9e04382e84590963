package main

import (
	"os"

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

			cfg.NoCreate = !create
			cfg.NoDeclareExchange = !declare
			if debezium {
				cfg.Columns = decode.DebeziumColumns()
			}

			r, err := relay.New(cfg, log)
			if err != nil {
				return err
			}

			return r.Run(cmd.Context())
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &cfg.PostgresURL)
	f.StringVar(&cfg.AMQPURL, "amqp-url", relay.DefaultAMQPURL, "RabbitMQ URL")
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
