package main

import (
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/bench"
)

func newBenchCommand(logs *logOptions) *cobra.Command {
	var (
		cfg       bench.Config
		scenarios string
		asJSON    bool
	)

	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure walrelay against the broker's limit and a polling relay",
		Long: "bench creates its own database, exchange and queue on the given servers, measures the\n" +
			"scenarios (" + strings.Join(bench.Scenarios(), ", ") + ") and removes what it created. It prints\n" +
			"one markdown table with every figure, or JSON with --json. A full run with the defaults\n" +
			"takes about seven minutes on two cores.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}

			if scenarios != "" {
				for _, name := range strings.Split(scenarios, ",") {
					cfg.Scenarios = append(cfg.Scenarios, strings.TrimSpace(name))
				}
			}

			report, runErr := bench.Run(cmd.Context(), cfg, log)
			if report != nil {
				if err := writeReport(cmd, report, asJSON); err != nil {
					return err
				}
			}
			return runErr
		},
	}

	f := cmd.Flags()
	f.StringVar(&cfg.PostgresURL, "pg-url", bench.DefaultPostgresURL,
		"Postgres maintenance database; the benchmark creates and drops its own database on that server")
	f.StringVar(&cfg.AMQPURL, "amqp-url", bench.DefaultAMQPURL, "RabbitMQ URL")
	f.IntVar(&cfg.Rows, "rows", bench.DefaultRows, "rows of each backlog and live step")
	f.IntVar(&cfg.PayloadBytes, "payload-bytes", bench.DefaultPayloadBytes, "payload size in bytes (the payload scenario uses 300, 4096 and 65536)")
	f.StringVar(&scenarios, "scenarios", "", "comma-separated scenarios to run (default all): "+strings.Join(bench.Scenarios(), ","))
	f.DurationVar(&cfg.StepDuration, "duration", bench.DefaultStepDuration, "length of each latency step")
	f.IntSliceVar(&cfg.LatencyRates, "latency-rates", bench.DefaultLatencyRates, "latency steps, in single-row transactions per second")
	f.IntVar(&cfg.Connections, "connections", bench.DefaultConnections, "inserting connections of the backlog and live steps")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "walrelay's in-flight window (default: walrelay's default)")
	f.IntVar(&cfg.RSSRows, "rss-rows", bench.DefaultRSSRows, "rows of the one transaction of the rss scenario")
	f.IntVar(&cfg.Rounds, "rounds", 1, "repeat the ceiling and backlog scenarios this many times, in turn, and report the medians")
	f.StringVar(&cfg.CPUProfile, "cpu-profile", "", "write a pprof CPU profile of the benchmark process, which runs walrelay in-process, to this file")
	f.BoolVar(&asJSON, "json", false, "print JSON (rates in msgs_per_s, times in ms, sizes in bytes) instead of markdown")

	cmd.AddCommand(newBenchPollCommand(logs))
	return cmd
}

func writeReport(cmd *cobra.Command, report *bench.Report, asJSON bool) error {
	out := cmd.OutOrStdout()
	if !asJSON {
		return report.WriteMarkdown(out)
	}

	data, err := report.JSON()
	if err != nil {
		return err
	}
	_, err = out.Write(append(data, '\n'))
	return err
}

// newBenchPollCommand runs the benchmark's polling relay on its own, so
// that the benchmark can measure its CPU time as a separate process.
func newBenchPollCommand(logs *logOptions) *cobra.Command {
	var cfg bench.PollerConfig

	cmd := &cobra.Command{
		Use:    "poll",
		Short:  "Run the benchmark's polling outbox relay until stopped",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}
			return bench.RunPoller(cmd.Context(), cfg, log)
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &cfg.PostgresURL)
	f.StringVar(&cfg.AMQPURL, "amqp-url", bench.DefaultAMQPURL, "RabbitMQ URL")
	f.StringVar(&cfg.Exchange, "exchange", "", "exchange to publish to (must exist)")
	f.DurationVar(&cfg.Interval, "interval", 100*time.Millisecond, "sleep after a batch that was not full")
	f.IntVar(&cfg.BatchSize, "batch-size", 100, "rows locked and published per transaction")
	return cmd
}
