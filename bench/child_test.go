package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/metrics"
	"github.com/walrelay/walrelay/relay"
)

// childEnvVar makes the test binary act as the relay process that the cpu,
// rss and polling scenarios start, since `go test` has no walrelay binary
// to give them. It accepts the arguments those scenarios pass to
// `walrelay run` and `walrelay bench poll`.
const childEnvVar = "WALRELAY_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnvVar) == "1" {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runChild runs the relay named by args until SIGTERM and returns the exit
// code.
func runChild(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)

	var err error
	switch {
	case len(args) > 0 && args[0] == "run":
		err = runRelayChild(ctx, args[1:], log)
	case len(args) > 1 && args[0] == "bench" && args[1] == "poll":
		err = runPollerChild(ctx, args[2:], log)
	default:
		err = fmt.Errorf("unknown child command %q", args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench test child: "+err.Error())
		return 1
	}
	return 0
}

func runRelayChild(ctx context.Context, args []string, log zerolog.Logger) error {
	cfg := relay.Config{
		PostgresURL: os.Getenv(envPrefix + "PG_URL"),
		AMQPURL:     os.Getenv(envPrefix + "AMQP_URL"),
	}
	declare := true

	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Exchange, "exchange", "", "")
	fs.BoolVar(&declare, "declare-exchange", true, "")
	fs.StringVar(&cfg.Table, "table", "", "")
	fs.StringVar(&cfg.Publication, "publication", "", "")
	fs.StringVar(&cfg.Slot, "slot", "", "")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "")
	fs.String("log-level", "", "")
	fs.String("http-addr", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.NoDeclareExchange = !declare
	cfg.Observer = metrics.New(metrics.Config{})

	r, err := relay.New(cfg, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

func runPollerChild(ctx context.Context, args []string, log zerolog.Logger) error {
	cfg := PollerConfig{
		PostgresURL: os.Getenv(envPrefix + "PG_URL"),
		AMQPURL:     os.Getenv(envPrefix + "AMQP_URL"),
	}

	fs := flag.NewFlagSet("poll", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Exchange, "exchange", "", "")
	fs.DurationVar(&cfg.Interval, "interval", 100*time.Millisecond, "")
	fs.IntVar(&cfg.BatchSize, "batch-size", 100, "")
	fs.String("log-level", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}

	return RunPoller(ctx, cfg, log)
}
