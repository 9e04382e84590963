package relay

import (
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

// faultRows is the number of rows each connection fault test writes.
const faultRows = 3000

func TestFaultWalsenderTerminated(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	w := startWriter(t, f.pgURL, faultRows, 10, 2*time.Millisecond)
	w.waitWritten(t, faultRows/3)

	pid := slotHolder(t, f.pgURL, cfg.Slot)
	testenv.Exec(t, f.pgURL, `SELECT pg_terminate_backend($1)`, pid)
	w.wait(t)

	deliveries := collectRange(t, consumer, 0, faultRows, time.Minute)
	dups := checkDelivery(t, deliveries, 0, faultRows)
	t.Logf("%d duplicates after one walsender termination", dups)

	if dups > DefaultMaxInFlight+10 {
		t.Errorf("%d duplicates, want at most the window %d plus one transaction", dups, DefaultMaxInFlight)
	}
	if obs.reconnects.Load() < 1 {
		t.Error("no reconnect counted after the walsender was terminated")
	}
	eventually(t, 30*time.Second, func() error {
		if holder := slotHolder(t, f.pgURL, cfg.Slot); holder == 0 || holder == pid {
			return notYet("slot held by %d", holder)
		}
		return nil
	})
}

func TestFaultConnectionCut(t *testing.T) {
	sides := []struct {
		name     string
		upstream string
		route    func(cfg *Config, f *fixture, addr string)
	}{
		{"postgres", "127.0.0.1:5432", func(cfg *Config, f *fixture, addr string) {
			cfg.PostgresURL = testenv.ThroughProxy(f.pgURL, "127.0.0.1:5432", addr)
		}},
		{"broker", "127.0.0.1:5672", func(cfg *Config, _ *fixture, addr string) {
			cfg.AMQPURL = testenv.ThroughProxy(testenv.AMQPURL(), "127.0.0.1:5672", addr)
		}},
	}

	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			f := newFixture(t)
			proxy := testenv.NewProxy(t, side.upstream)
			obs := &countingObserver{}
			cfg := f.config()
			side.route(&cfg, f, proxy.Addr)
			cfg.Observer = obs
			start(t, cfg)
			consumer := testenv.Consume(t, f.queue)

			w := startWriter(t, f.pgURL, faultRows, 10, 2*time.Millisecond)
			w.waitWritten(t, faultRows/3)

			proxy.Cut()
			time.Sleep(time.Second)
			proxy.Restore()
			w.wait(t)

			deliveries := collectRange(t, consumer, 0, faultRows, time.Minute)
			dups := checkDelivery(t, deliveries, 0, faultRows)
			t.Logf("%d duplicates after a cut %s connection", dups, side.name)

			if dups > DefaultMaxInFlight+10 {
				t.Errorf("%d duplicates, want at most the window %d plus one transaction", dups, DefaultMaxInFlight)
			}
			if obs.reconnects.Load() < 1 {
				t.Error("no reconnect counted after the cut")
			}

			// Rows read again after the reconnect are timed once. The rows
			// of a transaction cut off halfway are not timed again either,
			// so one transaction of 10 rows may be missing.
			if n := obs.decoded.Load(); n > faultRows || n < faultRows-10 {
				t.Errorf("%d rows timed from commit to decode, want %d to %d (each row once)", n, faultRows-10, faultRows)
			}
		})
	}
}

func TestFaultConnectionStalled(t *testing.T) {
	toPostgres := func(cfg *Config, f *fixture, addr string) {
		cfg.PostgresURL = testenv.ThroughProxy(f.pgURL, "127.0.0.1:5432", addr)
	}
	toBroker := func(cfg *Config, _ *fixture, addr string) {
		cfg.AMQPURL = testenv.ThroughProxy(testenv.AMQPURL(), "127.0.0.1:5672", addr)
	}

	// A stalled path passes nothing and closes nothing. The receive
	// timeout notices silence from Postgres, and the confirm timeout
	// notices a broker that confirms nothing.
	cases := []struct {
		name      string
		upstream  string
		direction string // both, upstream (to the server) or downstream
		route     func(cfg *Config, f *fixture, addr string)
	}{
		{"postgres both ways", "127.0.0.1:5432", "both", toPostgres},
		{"postgres to relay", "127.0.0.1:5432", "downstream", toPostgres},
		{"broker both ways", "127.0.0.1:5672", "both", toBroker},
		{"relay to broker", "127.0.0.1:5672", "upstream", toBroker},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			proxy := testenv.NewProxy(t, tc.upstream)
			obs := &countingObserver{}
			cfg := f.config()
			tc.route(&cfg, f, proxy.Addr)
			cfg.StatusInterval = 500 * time.Millisecond
			cfg.ReceiveTimeout = 2 * time.Second
			cfg.ConfirmTimeout = 2 * time.Second
			cfg.Observer = obs
			start(t, cfg)
			consumer := testenv.Consume(t, f.queue)

			insertRows(t, f.pgURL, 0, 50)
			consumer.Collect(t, 50, 30*time.Second)
			waitConfirmed(t, f.pgURL, cfg.Slot)

			if tc.direction == "both" {
				proxy.Stall()
			} else {
				proxy.StallDirection(tc.direction)
			}
			insertRows(t, f.pgURL, 50, 50)
			eventually(t, 30*time.Second, func() error {
				if obs.ended.Load() == 0 {
					return notYet("relay still waits on the stalled connection")
				}
				return nil
			})
			proxy.Unstall()

			// Rows 0-49 were confirmed before the stall: the range check
			// fails if one of them comes again.
			deliveries := collectRange(t, consumer, 50, 100, time.Minute)
			dups := checkDelivery(t, deliveries, 50, 100)
			t.Logf("%d duplicates after a stall: %s", dups, tc.name)
		})
	}
}
