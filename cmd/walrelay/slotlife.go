package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/relay"
)

// slotFlags are run's flags for the slot's life: backfill, recovery,
// skipping ahead, failover slots and the table maintenance.
type slotFlags struct {
	startLSN string
}

// addSlotFlags adds the slot-life flags of run to cmd.
func addSlotFlags(cmd *cobra.Command, cfg *relay.Config) *slotFlags {
	sf := &slotFlags{}
	f := cmd.Flags()

	f.StringVar(&cfg.Backfill, "backfill", relay.BackfillPending,
		"rows to publish from the table when walrelay creates the slot: pending (status pending or failed), all or none")
	f.BoolVar(&cfg.Recover, "recover", false,
		"recreate a missing, invalidated or replaced slot and publish the rows created since the last relayed commit minus --recovery-margin (duplicates possible)")
	f.DurationVar(&cfg.RecoveryMargin, "recovery-margin", 5*time.Minute, "how far before the last relayed commit a recovery starts")
	f.StringVar(&sf.startLSN, "start-lsn", "",
		"start streaming at this LSN (like 0/16B3748), skipping what lies before it on purpose; it cannot be older than the slot's position")
	f.BoolVar(&cfg.FailoverSlot, "failover-slot", false, "create the slot with FAILOVER, synchronized to standbys (PostgreSQL 17 or later)")
	f.BoolVar(&cfg.MarkPublished, "mark-published", false,
		"set status 'published' and updated_at on relayed rows after their confirms (writes to every row)")
	f.DurationVar(&cfg.Retention, "retention", 0,
		"delete relayed rows older than this (like 168h), never one newer than the last relayed commit; 0 keeps every row")

	return sf
}

// apply sets the parsed values and, on a terminal, a progress bar for
// backfills.
func (sf *slotFlags) apply(cfg *relay.Config) error {
	if sf.startLSN != "" {
		lsn, err := pglogrepl.ParseLSN(sf.startLSN)
		if err != nil {
			return fmt.Errorf("invalid --start-lsn %q: use the form 0/16B3748", sf.startLSN)
		}
		cfg.StartLSN = lsn
	}

	if isTerminal(os.Stderr) {
		cfg.BackfillProgress = newProgressBar("backfill")
	}

	return nil
}

// newProgressBar returns a progress callback that draws a bar on stderr.
func newProgressBar(title string) func(done, total int64) {
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription(title),
				progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("rows"),
				progressbar.OptionShowIts(),
				progressbar.OptionClearOnFinish())
		}
		_ = bar.Set64(done)
	}
}

// newRecoverCommand returns run with --recover set: the command to give
// after a gap was detected.
func newRecoverCommand(logs *logOptions) *cobra.Command {
	cmd := newRunCommand(logs)
	cmd.Use = "recover"
	cmd.Short = "Recreate a lost slot, publish the rows written meanwhile, then relay (run --recover)"
	cmd.Long = "recover is run --recover: it recreates a missing, invalidated or replaced slot with an exported\n" +
		"snapshot, publishes the rows created since the last relayed commit minus --recovery-margin, then\n" +
		"streams. Consumers may receive some messages twice; no row is lost."

	flag := cmd.Flags().Lookup("recover")
	flag.DefValue = "true"
	_ = flag.Value.Set("true")

	return cmd
}

// newReplayCommand returns the replay command.
func newReplayCommand(logs *logOptions) *cobra.Command {
	var (
		cfg          relay.Config
		opts         relay.ReplayOptions
		since, until string
		declare      bool
		debezium     bool
		amqpURLs     []string
	)

	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Publish outbox rows again from the table, for consumers that lost messages",
		Long: "replay reads outbox rows created in a time range from the table and publishes them again with\n" +
			"the normal message contract plus the header " + relay.ReplayHeader + ". It prints how many rows it\n" +
			"will send before sending. It reads no replication slot and moves none.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}

			if opts.Since, err = parseTime("--since", since); err != nil {
				return err
			}
			if until != "" {
				if opts.Until, err = parseTime("--until", until); err != nil {
					return err
				}
			}
			cfg.NoDeclareExchange = !declare
			if debezium {
				cfg.Columns = decode.DebeziumColumns()
			}
			if len(amqpURLs) == 0 {
				return fmt.Errorf("missing --amqp-url: give at least one RabbitMQ URL")
			}
			cfg.AMQPURL, cfg.AMQPURLs = amqpURLs[0], amqpURLs[1:]

			r, err := relay.New(cfg, log)
			if err != nil {
				return err
			}

			out := cmd.OutOrStdout()
			sent, err := r.Replay(cmd.Context(), opts, func(rows int64) {
				verb := "will publish"
				if opts.DryRun {
					verb = "would publish"
				}
				fmt.Fprintf(out, "replay: %s %d rows\n", verb, rows)
			})
			if err != nil {
				return err
			}
			if !opts.DryRun {
				fmt.Fprintf(out, "replay: published %d rows\n", sent)
			}
			return nil
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &cfg.PostgresURL)
	f.StringSliceVar(&amqpURLs, "amqp-url", []string{relay.DefaultAMQPURL}, "RabbitMQ URL; repeat it for the nodes of a cluster")
	f.StringVar(&cfg.AMQPCACert, "amqp-ca", "", "PEM file of the CA that signs the broker's certificate, for amqps://")
	f.StringVar(&cfg.AMQPClientCert, "amqp-cert", "", "PEM client certificate for amqps://")
	f.StringVar(&cfg.AMQPClientKey, "amqp-key", "", "PEM key of --amqp-cert")
	f.StringVar(&cfg.Table, "table", relay.DefaultTable, "outbox table, as schema.table or table")
	f.StringVar(&cfg.Exchange, "exchange", relay.DefaultExchange, "default exchange (topic, durable)")
	f.BoolVar(&declare, "declare-exchange", true, "declare the exchange first")
	f.StringVar(&cfg.DelayedExchange, "delayed-exchange", "", "x-delayed-message exchange for delayed messages")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", relay.DefaultMaxInFlight, "maximum published but unconfirmed messages")
	f.BoolVar(&debezium, "debezium-columns", false, "map a Debezium-style outbox table")
	addColumnFlags(cmd, &cfg.Columns)

	f.StringVar(&since, "since", "", "first creation time to replay, RFC 3339 (2026-12-01T00:00:00Z) or 2026-12-01 00:00:00 (UTC); required")
	f.StringVar(&until, "until", "", "last creation time to replay, same forms; default now")
	f.StringVar(&opts.AggregateType, "aggregate-type", "", "replay only this aggregate type")
	f.StringVar(&opts.EventType, "event-type", "", "replay only this event type")
	f.BoolVar(&opts.DryRun, "dry-run", false, "print how many rows would be sent and send nothing")
	f.IntVar(&opts.Rate, "rate", 0, "maximum rows per second; 0 means no limit")

	return cmd
}

// parseTime parses an RFC 3339 time, or a date with an optional time in
// UTC, for the flag called name.
func parseTime(name, value string) (time.Time, error) {
	if value == "" {
		return time.Time{}, fmt.Errorf("missing %s: give a time such as 2026-12-01T00:00:00Z", name)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, strings.TrimSpace(value)); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid %s %q: use RFC 3339 (2026-12-01T00:00:00Z) or 2026-12-01 00:00:00 (UTC)", name, value)
}
