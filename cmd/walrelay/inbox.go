package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/inbox"
	"github.com/walrelay/walrelay/metrics"
)

// defaultInboxHTTPAddr is one port above the relay's default, so a relay
// and an inbox consumer on one host do not collide.
const defaultInboxHTTPAddr = "127.0.0.1:9189"

func newInboxCommand(logs *logOptions) *cobra.Command {
	var (
		httpAddr string
		cfg      inbox.Config
		bindings []string
		declare  bool
	)

	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "Record the messages of a queue in the inbox table, each message id once",
		Long: "inbox consumes --queue and records each message in Event-Forge's inbox table for --source,\n" +
			"with INSERT ... ON CONFLICT (message_id, source) DO NOTHING, many deliveries per statement.\n" +
			"A delivery is acked only after its row has committed; duplicates are acked and counted; a\n" +
			"message that cannot become a row is rejected without requeue, so the queue's dead-letter\n" +
			"exchange receives it. SIGINT or SIGTERM finishes the batch in progress and exits 0.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}

			for _, s := range bindings {
				b, err := inbox.ParseBinding(s)
				if err != nil {
					return err
				}
				cfg.Bindings = append(cfg.Bindings, b)
			}
			cfg.NoDeclareExchange = !declare

			// Reject bad settings before the HTTP server binds its port.
			if err := cfg.Validate(); err != nil {
				return err
			}

			if httpAddr != "" {
				m := metrics.NewInbox()
				srv, err := metrics.Listen(httpAddr, m, log)
				if err != nil {
					return fmt.Errorf("%w: set --http-addr to a free host:port, or to an empty value to disable the server", err)
				}
				defer func() {
					stopCtx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), httpStopTimeout)
					defer cancel()
					if err := srv.Close(stopCtx); err != nil {
						log.Warn().Err(err).Msg("metrics and health server did not stop cleanly")
					}
				}()
				cfg.Observer = m
			}

			c, err := inbox.New(cfg, log)
			if err != nil {
				return err
			}
			return c.Run(cmd.Context())
		},
	}

	f := cmd.Flags()
	f.StringVar(&httpAddr, "http-addr", defaultInboxHTTPAddr,
		"host:port of the HTTP server for /metrics, /healthz and /readyz; empty disables it")
	addPostgresFlag(cmd, &cfg.PostgresURL)
	f.StringVar(&cfg.AMQPURL, "amqp-url", inbox.DefaultAMQPURL, "RabbitMQ URL")
	f.StringVar(&cfg.Queue, "queue", "", "queue to consume, declared durable (required)")
	f.StringSliceVar(&bindings, "bind", nil,
		"bind the queue to an exchange, as EXCHANGE:PATTERN (pattern default #); repeatable or comma-separated")
	f.BoolVar(&declare, "declare-exchange", true, "declare the exchanges of --bind as durable topic exchanges")
	f.StringVar(&cfg.DeadLetterExchange, "dead-letter-exchange", "",
		"set the queue's x-dead-letter-exchange when declaring it; an existing queue must have the same argument")
	f.StringVar(&cfg.Source, "source", "", "source column of the recorded rows, part of the deduplication key (required)")
	f.StringVar(&cfg.Table, "table", inbox.DefaultTable, "inbox table, as schema.table or table")
	f.IntVar(&cfg.Prefetch, "prefetch", inbox.DefaultPrefetch,
		"unacked deliveries the broker sends ahead; one insert records up to min(prefetch, 1000)")
	f.IntVar(&cfg.MaxRetries, "max-retries", inbox.DefaultMaxRetries,
		"value of max_retries for new rows, when the table has that column")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", 0, "maximum time to record one batch (default 30s)")

	return cmd
}
