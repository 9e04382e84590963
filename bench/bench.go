package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/relay"
)

// The scenarios, in the order a run takes them whatever order they are
// given in.
const (
	ScenarioCeiling = "ceiling" // broker ceiling at three in-flight windows
	ScenarioBacklog = "backlog" // walrelay draining a backlog
	ScenarioLive    = "live"    // walrelay while connections insert
	ScenarioLatency = "latency" // commit-to-receipt latency at steady rates
	ScenarioPolling = "polling" // the polling relay: backlog, CPU, latency
	ScenarioPayload = "payload" // throughput at 300 B, 4 KB and 64 KB
	ScenarioCPU     = "cpu"     // CPU per message of walrelay (and polling)
	ScenarioRSS     = "rss"     // peak RSS during one large transaction
	ScenarioInbox   = "inbox"   // walrelay inbox recording, with and without duplicates
)

// Scenarios returns every scenario name in run order.
func Scenarios() []string {
	return []string{ScenarioCeiling, ScenarioBacklog, ScenarioLive, ScenarioLatency,
		ScenarioPolling, ScenarioPayload, ScenarioCPU, ScenarioRSS, ScenarioInbox}
}

// Defaults.
const (
	DefaultPostgresURL  = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultAMQPURL      = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRows         = 100_000
	DefaultPayloadBytes = 300
	DefaultStepDuration = 20 * time.Second
	DefaultConnections  = 4
	DefaultRSSRows      = 1_000_000
)

// DefaultLatencyRates are the steady rates of the latency scenario, in
// single-row transactions per second.
var DefaultLatencyRates = []int{500, 2000, 5000}

// Fixed parameters of the workloads.
var (
	ceilingWindows = []int{100, 1000, 10000}
	liveRowsPerTx  = []int{1, 100}
	payloadSizes   = []int{300, 4 << 10, 64 << 10}
	pollIntervals  = []time.Duration{100 * time.Millisecond, time.Second}
)

const (
	// backlogRowsPerTx is the transaction size of every backlog.
	backlogRowsPerTx = 100

	// latencyConnections insert the paced single-row transactions: enough
	// to keep 5000 commits a second going when a commit takes 1 ms.
	latencyConnections = 8

	// pollBatch is the polling relay's LIMIT.
	pollBatch = 100

	// idleTimeout is how long a step waits for the next message before it
	// fails.
	idleTimeout = 60 * time.Second

	// stepSpan separates the sequence numbers of consecutive steps, so a
	// late message of one step is never taken for one of the next.
	stepSpan = 100_000_000
)

// Config configures a run. The zero value of a field means its default.
type Config struct {
	// PostgresURL is a maintenance database on the server to measure; the
	// run creates its own database next to it. Default DefaultPostgresURL.
	PostgresURL string

	// AMQPURL is the RabbitMQ broker. Default DefaultAMQPURL.
	AMQPURL string

	// Rows is the size of each backlog and live step. Default 100,000.
	Rows int

	// PayloadBytes is the payload size of every scenario but payload.
	// Default 300.
	PayloadBytes int

	// Scenarios names the scenarios to run. Default: all.
	Scenarios []string

	// StepDuration is the length of each latency step. Default 20 s.
	StepDuration time.Duration

	// LatencyRates are the latency steps' rates in messages per second.
	// Default DefaultLatencyRates.
	LatencyRates []int

	// Connections is the number of inserting connections of the backlog
	// and live steps. Default 4.
	Connections int

	// MaxInFlight is walrelay's in-flight window. Default: the relay's.
	MaxInFlight int

	// RSSRows is the size of the transaction of the rss scenario. Default
	// 1,000,000.
	RSSRows int

	// Rounds repeats the ceiling and backlog scenarios, one after the
	// other, and reports the median of each. On a shared machine one run
	// of either can be off by several percent. It must be odd. Default 1.
	Rounds int

	// Executable is the walrelay binary that the cpu, rss and polling
	// scenarios start as a separate process (`run` and `bench poll`).
	// Default: the running executable.
	Executable string

	// CPUProfile, when set, is a file to write a pprof CPU profile of the
	// run to. Profiling starts once the run's database, exchange and queue
	// exist, so a run that fails before leaves no file.
	CPUProfile string

	// childEnv is added to the environment of those processes.
	childEnv []string
}

func (c Config) withDefaults() (Config, error) {
	if c.PostgresURL == "" {
		c.PostgresURL = DefaultPostgresURL
	}
	if c.AMQPURL == "" {
		c.AMQPURL = DefaultAMQPURL
	}
	if c.Rows == 0 {
		c.Rows = DefaultRows
	}
	if c.PayloadBytes == 0 {
		c.PayloadBytes = DefaultPayloadBytes
	}
	if c.StepDuration == 0 {
		c.StepDuration = DefaultStepDuration
	}
	if len(c.LatencyRates) == 0 {
		c.LatencyRates = DefaultLatencyRates
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = relay.DefaultMaxInFlight
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.RSSRows == 0 {
		c.RSSRows = DefaultRSSRows
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("find the walrelay executable for the relay processes: %w", err)
		}
		c.Executable = exe
	}

	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios()
	}
	var ordered []string
	for _, name := range Scenarios() {
		if slices.Contains(c.Scenarios, name) {
			ordered = append(ordered, name)
		}
	}
	for _, name := range c.Scenarios {
		if !slices.Contains(Scenarios(), name) {
			return c, fmt.Errorf("unknown scenario %q: use one or more of %s", name, strings.Join(Scenarios(), ", "))
		}
	}
	c.Scenarios = ordered

	switch {
	case c.Rows < 1 || c.Rows > stepSpan/10:
		return c, fmt.Errorf("invalid rows %d: use 1 to %d", c.Rows, stepSpan/10)
	case c.RSSRows < 1 || c.RSSRows > stepSpan/10:
		return c, fmt.Errorf("invalid RSS rows %d: use 1 to %d", c.RSSRows, stepSpan/10)
	case c.PayloadBytes < 1 || c.PayloadBytes > 64<<20:
		return c, fmt.Errorf("invalid payload size %d bytes: use 1 to %d", c.PayloadBytes, 64<<20)
	case c.StepDuration < 100*time.Millisecond:
		return c, fmt.Errorf("invalid latency step duration %s: use 100ms or more", c.StepDuration)
	case c.Connections < 1 || c.Connections > 64:
		return c, fmt.Errorf("invalid connections %d: use 1 to 64", c.Connections)
	case c.Rounds < 1 || c.Rounds > 99 || c.Rounds%2 == 0:
		return c, fmt.Errorf("invalid rounds %d: use an odd number from 1 to 99, so that one round is the median", c.Rounds)
	}
	for _, r := range c.LatencyRates {
		if r < 1 || float64(r)*c.StepDuration.Seconds() > stepSpan/10 {
			return c, fmt.Errorf("invalid latency rate %d msgs/s for steps of %s: use a positive rate with fewer than %d messages a step", r, c.StepDuration, stepSpan/10)
		}
	}

	return c, nil
}

// runner holds one run's state.
type runner struct {
	cfg    Config
	log    zerolog.Logger
	env    *env
	clock  clock
	shape  rowShape
	report *Report
	steps  int64
}

// Run creates a database, an exchange and a queue for the run, measures the
// scenarios of cfg and removes what it created. When a scenario fails, or
// ctx is cancelled during one, Run returns the figures measured so far with
// the error. A failure before the first scenario returns no report.
func Run(ctx context.Context, cfg Config, log zerolog.Logger) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	started := time.Now()
	report := &Report{
		StartedAt: started.UTC(),
		Settings: Settings{
			Scenarios:     cfg.Scenarios,
			Rows:          cfg.Rows,
			PayloadBytes:  cfg.PayloadBytes,
			Connections:   cfg.Connections,
			MaxInFlight:   cfg.MaxInFlight,
			LatencyRates:  cfg.LatencyRates,
			LatencyStepMS: ms(cfg.StepDuration),
			RSSRows:       cfg.RSSRows,
			Rounds:        cfg.Rounds,
			PollBatch:     pollBatch,
		},
	}
	for _, d := range pollIntervals {
		report.Settings.PollIntervalMS = append(report.Settings.PollIntervalMS, d.Milliseconds())
	}

	if cfg.CPUProfile != "" {
		// Checked before the servers are touched; the file is created later.
		if dir := filepath.Dir(cfg.CPUProfile); !isDir(dir) {
			return nil, fmt.Errorf("invalid CPU profile path %q: directory %s does not exist; create it or choose another path", cfg.CPUProfile, dir)
		}
	}

	e, err := newEnv(ctx, cfg.PostgresURL, cfg.AMQPURL, log)
	if err != nil {
		return nil, err
	}
	defer e.close()
	report.RunID = e.id
	log.Info().Str("database", e.database).Str("exchange", e.exchange).Str("queue", e.queue).Msg("benchmark environment created")

	if cfg.CPUProfile != "" {
		stop, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer stop()
	}

	r := &runner{cfg: cfg, log: log, env: e, clock: clock{epoch: started}, report: report}
	report.Machine = describeMachine(ctx, e)

	r.shape, err = newShape(ctx, e.db, cfg.PayloadBytes)
	if err != nil {
		return nil, err
	}
	report.Settings.BodyBytes, err = r.shape.bodyBytes(ctx, e.db, stepSpan)
	if err != nil {
		return nil, err
	}

	scenarios := map[string]func(context.Context) error{
		ScenarioCeiling: r.ceiling,
		ScenarioBacklog: r.backlog,
		ScenarioLive:    r.live,
		ScenarioLatency: r.latency,
		ScenarioPolling: r.polling,
		ScenarioPayload: r.payload,
		ScenarioCPU:     r.cpu,
		ScenarioInbox:   r.inbox,
		ScenarioRSS:     r.rss,
	}
	if cfg.Rounds > 1 {
		// One scenario measures every round of both, and it takes the
		// place of the one that runs first.
		withCeiling := slices.Contains(cfg.Scenarios, ScenarioCeiling)
		withBacklog := slices.Contains(cfg.Scenarios, ScenarioBacklog)
		switch {
		case withCeiling:
			scenarios[ScenarioCeiling] = r.rounds(withCeiling, withBacklog)
			scenarios[ScenarioBacklog] = func(context.Context) error { return nil }
		case withBacklog:
			scenarios[ScenarioBacklog] = r.rounds(false, withBacklog)
		default:
			log.Warn().Int("rounds", cfg.Rounds).Msg("rounds apply to the ceiling and backlog scenarios only, and neither runs")
		}
	}
	for _, name := range cfg.Scenarios {
		begun := time.Now()
		log.Info().Str("scenario", name).Msg("scenario started")

		if err := scenarios[name](ctx); err != nil {
			report.ElapsedMS = ms(time.Since(started))
			report.Ratios = ratios(report)
			return report, fmt.Errorf("scenario %s: %w", name, err)
		}

		log.Info().Str("scenario", name).Dur("took", time.Since(begun)).Msg("scenario done")
	}

	report.ElapsedMS = ms(time.Since(started))
	report.Ratios = ratios(report)
	return report, nil
}

// nextBase returns the first sequence number of a new step.
func (r *runner) nextBase() int64 {
	r.steps++
	return r.steps * stepSpan
}

// startCPUProfile starts a pprof CPU profile written to path and returns
// the function that stops it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cannot create the CPU profile file: %w; choose a writable path", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// isDir reports whether path is an existing directory.
func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}
