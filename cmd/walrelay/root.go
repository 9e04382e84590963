package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix is the prefix of the environment variable of every flag:
// --max-in-flight is WALRELAY_MAX_IN_FLIGHT.
const envPrefix = "WALRELAY_"

// logOptions are the logging flags every command shares.
type logOptions struct {
	level  string
	format string
}

func newRootCommand() *cobra.Command {
	logs := &logOptions{}

	root := &cobra.Command{
		Use:   "walrelay",
		Short: "Relay transactional outbox rows from the Postgres WAL to RabbitMQ",
		Long: "walrelay reads outbox inserts from a pgoutput logical replication slot, publishes each one\n" +
			"to RabbitMQ and confirms the slot position only after the broker confirms the message.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}

	root.PersistentFlags().StringVar(&logs.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logs.format, "log-format", "json", "log format: json or console")

	root.AddCommand(
		newRunCommand(logs),
		newMigrateCommand(logs),
		newVersionCommand(),
	)

	return root
}

// applyEnv sets every flag that was not given on the command line from its
// WALRELAY_* environment variable, so the precedence is flag, then
// environment, then default.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error

	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		name := envName(f.Name)
		value, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := f.Value.Set(value); err != nil {
			firstErr = fmt.Errorf("invalid %s=%q: %w", name, value, err)
		}
	})

	return firstErr
}

// envName returns the environment variable of the flag called name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// newLogger builds the logger from the shared flags.
func newLogger(opts *logOptions, out io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(opts.level)
	if err != nil || opts.level == "" {
		return zerolog.Logger{}, fmt.Errorf("invalid log level %q: use debug, info, warn or error", opts.level)
	}

	switch opts.format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339}
	default:
		return zerolog.Logger{}, fmt.Errorf("invalid log format %q: use json or console", opts.format)
	}

	return zerolog.New(out).Level(level).With().Timestamp().Logger(), nil
}
