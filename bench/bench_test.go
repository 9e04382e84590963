package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/internal/testenv"
)

// TestRunReportsEveryFigure runs every scenario with tiny sizes and checks
// that each figure is there and plausible, and that the run removed what
// it created.
func TestRunReportsEveryFigure(t *testing.T) {
	testenv.RequireLogical(t)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	log := zerolog.New(io.Discard)
	if testing.Verbose() {
		log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rates := []int{250}
	rep, err := Run(ctx, Config{
		PostgresURL:  testenv.AdminURL(),
		AMQPURL:      testenv.AMQPURL(),
		Rows:         2000,
		StepDuration: time.Second,
		LatencyRates: rates,
		RSSRows:      3000,
		Executable:   exe,
		childEnv:     []string{childEnvVar + "=1"},
	}, log)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	checkCleanedUp(t, rep.RunID)

	t.Run("ceiling", func(t *testing.T) {
		if len(rep.Ceiling) != 3 {
			t.Fatalf("ceiling steps = %d, want 3", len(rep.Ceiling))
		}
		for i, window := range []int{100, 1000, 10000} {
			c := rep.Ceiling[i]
			if c.Window != window || c.Messages != 2000 {
				t.Errorf("ceiling step %d: window %d, %d messages; want window %d, 2000 messages", i, c.Window, c.Messages, window)
			}
			positive(t, "ceiling msgs/s", c.MsgsPerS)
		}
	})

	t.Run("backlog", func(t *testing.T) {
		b := rep.Backlog
		if b == nil {
			t.Fatal("no backlog figures")
		}
		positive(t, "backlog msgs/s", b.MsgsPerS)
		if b.Messages != 2000 || b.Duplicates != 0 {
			t.Errorf("backlog: %d messages, %d duplicates; want 2000, 0", b.Messages, b.Duplicates)
		}
		if b.TableRowsReadPerMsg != 0 || b.TableRowsWrittenPerMsg != 0 {
			t.Errorf("walrelay read %.2f and wrote %.2f outbox rows per message; want none", b.TableRowsReadPerMsg, b.TableRowsWrittenPerMsg)
		}
	})

	t.Run("live", func(t *testing.T) {
		if len(rep.Live) != 2 {
			t.Fatalf("live steps = %d, want 2", len(rep.Live))
		}
		for _, l := range rep.Live {
			positive(t, "live msgs/s", l.MsgsPerS)
			positive(t, "live insert msgs/s", l.InsertMsgsPerS)
			ordered(t, "live trail", l.TrailP50MS, l.TrailP99MS, l.TrailMaxMS)
		}
	})

	t.Run("latency", func(t *testing.T) {
		checkLatency(t, "walrelay", rep.Latency, rates)
	})

	t.Run("polling", func(t *testing.T) {
		if len(rep.Polling) != 2 {
			t.Fatalf("polling runs = %d, want 2", len(rep.Polling))
		}
		for i, interval := range []int64{100, 1000} {
			p := rep.Polling[i]
			if p.IntervalMS != interval {
				t.Errorf("polling run %d: interval %d ms, want %d", i, p.IntervalMS, interval)
			}
			if p.Backlog == nil || p.CPU == nil {
				t.Fatalf("polling %d ms: backlog or CPU figures missing", interval)
			}
			positive(t, "polling backlog msgs/s", p.Backlog.MsgsPerS)
			if p.Backlog.TableRowsReadPerMsg < 1 {
				t.Errorf("polling %d ms read %.2f outbox rows per message, want at least 1", interval, p.Backlog.TableRowsReadPerMsg)
			}
			if p.Backlog.TableRowsWrittenPerMsg != 1 {
				t.Errorf("polling %d ms wrote %.2f outbox rows per message, want 1 (the status update)", interval, p.Backlog.TableRowsWrittenPerMsg)
			}
			checkLatency(t, "polling", p.Latency, rates)
		}

		// A relay that sleeps 1 s between polls cannot deliver most
		// messages within 200 ms.
		if p99 := rep.Polling[1].Latency[0].P99MS; p99 < 200 {
			t.Errorf("polling 1 s p99 = %.1f ms, want at least 200 ms", p99)
		}
	})

	t.Run("payload", func(t *testing.T) {
		if len(rep.Payload) != 3 {
			t.Fatalf("payload steps = %d, want 3", len(rep.Payload))
		}
		for i, size := range []int{300, 4096, 65536} {
			p := rep.Payload[i]
			if p.PayloadBytes != size || p.BodyBytes <= size {
				t.Errorf("payload step %d: payload %d bytes, body %d bytes; want payload %d and a larger body", i, p.PayloadBytes, p.BodyBytes, size)
			}
			positive(t, "payload msgs/s", p.MsgsPerS)
			positive(t, "payload ceiling msgs/s", p.CeilingMsgsPerS)
			positive(t, "payload ratio to ceiling", p.RatioToCeilingMsg)
		}
	})

	t.Run("cpu", func(t *testing.T) {
		c := rep.CPU
		if c == nil || c.Walrelay == nil || c.Polling == nil {
			t.Fatalf("CPU figures missing: %+v", c)
		}
		for name, p := range map[string]*ProcessCPU{"walrelay": c.Walrelay, "polling": c.Polling} {
			positive(t, name+" relay CPU per 100k", p.RelayCPUMSPer100k)
			if !p.BackendsMeasured {
				t.Errorf("%s: Postgres backends not measured on a local server", name)
			}
			positive(t, name+" backend CPU per 100k", p.BackendCPUMSPer100)
		}
	})

	t.Run("rss", func(t *testing.T) {
		r := rep.RSS
		if r == nil {
			t.Fatal("no RSS figures")
		}
		positive(t, "idle RSS", float64(r.IdleRSSBytes))
		if r.PeakRSSBytes < r.IdleRSSBytes {
			t.Errorf("peak RSS %d < idle RSS %d", r.PeakRSSBytes, r.IdleRSSBytes)
		}
		if r.Rows != 3000 {
			t.Errorf("RSS rows = %d, want 3000", r.Rows)
		}
	})

	t.Run("inbox", func(t *testing.T) {
		if len(rep.Inbox) != 2 {
			t.Fatalf("inbox steps = %+v, want one without and one with duplicates", rep.Inbox)
		}
		for i, step := range rep.Inbox {
			if step.Duplicates != (i == 1) {
				t.Errorf("inbox step %d duplicates = %v", i, step.Duplicates)
			}
			if step.Messages != 2000 {
				t.Errorf("inbox step %d messages = %d, want 2000", i, step.Messages)
			}
			positive(t, fmt.Sprintf("inbox step %d msgs/s", i), step.MsgsPerS)
		}
	})

	t.Run("ratios", func(t *testing.T) {
		r := rep.Ratios
		if r == nil || r.BacklogToCeiling == nil || r.BacklogToPolling == nil || r.RelayCPUToPolling == nil || r.BackendCPUToPolling == nil {
			t.Fatalf("ratios missing: %+v", r)
		}
		positive(t, "backlog to ceiling", *r.BacklogToCeiling)
		positive(t, "backlog to polling", *r.BacklogToPolling)
		if len(r.LatencyP99ToPolling) != len(rates) {
			t.Errorf("latency p99 ratios = %v, want one per rate %v", r.LatencyP99ToPolling, rates)
		}
	})

	t.Run("markdown", func(t *testing.T) {
		var b bytes.Buffer
		if err := rep.WriteMarkdown(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, want := range []string{
			"| walrelay / ceiling | walrelay / polling 100 ms |",
			"| broker ceiling, window 10000 | msgs/s |",
			"| backlog of 2000 rows in 100-row transactions | msgs/s |",
			"| live, 100 row(s) per transaction, 4 connections | msgs/s (relayed) |",
			"| latency at 250 msgs/s, single-row transactions | commit-to-receipt p99, ms |",
			"| payload 64 KiB",
			"| relay CPU s (user+sys) per 100k msgs |",
			"| peak RSS of the relay process, MiB |",
			"| inbox: 2000 duplicate messages acked | msgs/s |",
			"RabbitMQ",
			"PostgreSQL",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("markdown lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		data, err := rep.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		backlog, _ := doc["backlog"].(map[string]any)
		if _, ok := backlog["msgs_per_s"].(float64); !ok {
			t.Errorf("JSON backlog lacks msgs_per_s: %v", backlog)
		}
		for _, key := range []string{`"p99_ms"`, `"peak_rss_bytes"`, `"relay_cpu_ms_per_100k_msgs"`, `"backlog_msgs_per_s_walrelay_to_ceiling"`} {
			if !bytes.Contains(data, []byte(key)) {
				t.Errorf("JSON lacks %s", key)
			}
		}
	})
}

func checkLatency(t *testing.T, relayName string, steps []LatencyStep, rates []int) {
	t.Helper()

	if len(steps) != len(rates) {
		t.Fatalf("%s latency steps = %d, want %d", relayName, len(steps), len(rates))
	}
	for i, s := range steps {
		if s.TargetMsgsPerS != rates[i] || s.Messages != rates[i] {
			t.Errorf("%s latency step %d: target %d msgs/s, %d messages; want %d of each", relayName, i, s.TargetMsgsPerS, s.Messages, rates[i])
		}
		positive(t, relayName+" latency p50", s.P50MS)
		ordered(t, relayName+" latency", s.P50MS, s.P90MS, s.P99MS, s.MaxMS)
		positive(t, relayName+" achieved msgs/s", s.AchievedMsgsPerS)
	}
}

func positive(t *testing.T, what string, v float64) {
	t.Helper()
	if !(v > 0) {
		t.Errorf("%s = %v, want > 0", what, v)
	}
}

func ordered(t *testing.T, what string, values ...float64) {
	t.Helper()
	for i := 1; i < len(values); i++ {
		if values[i] < values[i-1] {
			t.Errorf("%s percentiles out of order: %v", what, values)
			return
		}
	}
}

// checkCleanedUp fails unless the run's database, slots, exchange and queue
// are gone.
func checkCleanedUp(t *testing.T, id string) {
	t.Helper()

	if id == "" {
		t.Fatal("report has no run id")
	}
	name := "walrelay_bench_" + id

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)

	var databases, slots int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&databases); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1", name+"%").Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if databases != 0 || slots != 0 {
		t.Errorf("left behind: %d databases and %d slots named %s*", databases, slots, name)
	}

	conn, ch := testenv.Channel(t)
	defer conn.Close()
	if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); !isNotFound(err) {
		t.Errorf("queue %s still exists (passive declare: %v)", name, err)
	}
	ch, err = conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclarePassive(name, amqp.ExchangeTopic, true, false, false, false, nil); !isNotFound(err) {
		t.Errorf("exchange %s still exists (passive declare: %v)", name, err)
	}
}

func isNotFound(err error) bool {
	var amqpErr *amqp.Error
	return errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound
}

// TestCPUAloneMeasuresPolling runs the cpu scenario without the polling
// scenario, which then measures the polling relay's CPU itself.
func TestCPUAloneMeasuresPolling(t *testing.T) {
	testenv.RequireLogical(t)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rep, err := Run(ctx, Config{
		PostgresURL: testenv.AdminURL(),
		AMQPURL:     testenv.AMQPURL(),
		Rows:        1000,
		Scenarios:   []string{ScenarioCPU},
		Executable:  exe,
		childEnv:    []string{childEnvVar + "=1"},
	}, zerolog.New(io.Discard))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkCleanedUp(t, rep.RunID)

	if rep.CPU == nil || rep.CPU.Walrelay == nil || rep.CPU.Polling == nil {
		t.Fatalf("CPU figures missing: %+v", rep.CPU)
	}
	if rep.CPU.Polling.Messages != 1000 {
		t.Errorf("polling relayed %d messages, want 1000", rep.CPU.Polling.Messages)
	}
	positive(t, "polling relay CPU per 100k", rep.CPU.Polling.RelayCPUMSPer100k)
	if len(rep.Polling) != 0 || rep.Backlog != nil {
		t.Errorf("scenarios other than cpu ran: polling %d, backlog %v", len(rep.Polling), rep.Backlog)
	}
}
