package relay

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

// These tests change server-wide state: they restore it in t.Cleanup, and
// like every test here they never run in parallel.

func TestFaultBrokerAlarm(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	cfg.StatusInterval = 500 * time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second

	// A short wal_sender_timeout makes a relay that stops sending status
	// while blocked lose its walsender within the test.
	testenv.Exec(t, testenv.AdminURL(), `ALTER SYSTEM SET wal_sender_timeout = '3s'`)
	testenv.Exec(t, testenv.AdminURL(), `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		testenv.Exec(t, testenv.AdminURL(), `ALTER SYSTEM RESET wal_sender_timeout`)
		testenv.Exec(t, testenv.AdminURL(), `SELECT pg_reload_conf()`)
	})

	run := start(t, cfg)
	consumer := testenv.Consume(t, f.queue)
	insertRows(t, f.pgURL, 0, 10)
	consumer.Collect(t, 10, 30*time.Second)
	holder := slotHolder(t, f.pgURL, cfg.Slot)

	// A memory alarm blocks every publishing connection.
	watermark := memoryWatermark(t)
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	t.Cleanup(func() { rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, watermark...)...) })

	insertRows(t, f.pgURL, 10, 20)
	afterInsert := currentWAL(t, f.pgURL)
	eventually(t, 30*time.Second, func() error {
		if !obs.blocked.Load() {
			return notYet("broker has not blocked the relay")
		}
		return nil
	})

	// Twice wal_sender_timeout while blocked: status updates keep the
	// walsender alive, and the position holds before the blocked rows.
	time.Sleep(6 * time.Second)
	if now := slotHolder(t, f.pgURL, cfg.Slot); now != holder {
		t.Errorf("walsender changed from %d to %d while the broker was blocked", holder, now)
	}
	if pos := slotPosition(t, f.pgURL, cfg.Slot); pos >= afterInsert {
		t.Errorf("slot confirmed %s past unconfirmed rows (before %s)", pos, afterInsert)
	}

	rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, watermark...)...)
	deliveries := collectRange(t, consumer, 10, 30, time.Minute)
	if dups := checkDelivery(t, deliveries, 10, 30); dups != 0 {
		t.Errorf("%d duplicates after the alarm cleared, want none", dups)
	}

	// Shutdown during a block ends within the shutdown timeout.
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	insertRows(t, f.pgURL, 30, 5)
	eventually(t, 30*time.Second, func() error {
		if !obs.blocked.Load() {
			return notYet("broker has not blocked the relay again")
		}
		return nil
	})
	began := time.Now()
	run.stop(t)
	if took := time.Since(began); took > cfg.ShutdownTimeout+5*time.Second {
		t.Errorf("shutdown while blocked took %s, want about the shutdown timeout %s", took, cfg.ShutdownTimeout)
	}
	rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, watermark...)...)
}

func TestFaultBrokerRestart(t *testing.T) {
	f := newFixture(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	start(t, cfg)

	t.Cleanup(func() { rabbitmqctl(t, "start_app") })

	w := startWriter(t, f.pgURL, faultRows, 10, 10*time.Millisecond)
	w.waitWritten(t, faultRows/3)

	rabbitmqctl(t, "stop_app")
	time.Sleep(time.Second)
	rabbitmqctl(t, "start_app")
	w.wait(t)

	// The test's own consumer lost its connection too: the queue is
	// durable and the messages persistent, so a new consumer reads them.
	consumer := testenv.Consume(t, f.queue)
	deliveries := collectRange(t, consumer, 0, faultRows, 2*time.Minute)
	dups := checkDelivery(t, deliveries, 0, faultRows)
	t.Logf("%d duplicates after a broker restart", dups)

	eventually(t, 30*time.Second, func() error {
		if obs.reconnects.Load() < 1 {
			return notYet("no reconnect counted after the broker restart")
		}
		return nil
	})
}

func TestFaultPostgresRestart(t *testing.T) {
	f := newFixture(t)
	cluster := localCluster(t)
	obs := &countingObserver{}
	cfg := f.config()
	cfg.Observer = obs
	start(t, cfg)
	consumer := testenv.Consume(t, f.queue)

	t.Cleanup(func() { pgctlcluster(t, cluster, "start") })

	insertRows(t, f.pgURL, 0, 1000)
	pgctlcluster(t, cluster, "restart")
	insertRows(t, f.pgURL, 1000, 1000)

	deliveries := collectRange(t, consumer, 0, 2000, 2*time.Minute)
	dups := checkDelivery(t, deliveries, 0, 2000)
	t.Logf("%d duplicates after a Postgres restart", dups)

	eventually(t, 30*time.Second, func() error {
		if obs.reconnects.Load() < 1 {
			return notYet("no reconnect counted after the Postgres restart")
		}
		return nil
	})
}

// localCluster returns the version of the local Debian cluster "main", or
// skips the test when there is none to restart.
func localCluster(t *testing.T) string {
	t.Helper()

	dirs, _ := filepath.Glob("/etc/postgresql/*/main")
	if len(dirs) == 0 {
		t.Skip("no local pg_ctlcluster cluster to restart")
	}
	return filepath.Base(filepath.Dir(dirs[len(dirs)-1]))
}

// pgctlcluster runs pg_ctlcluster on the local cluster. "start" on a
// running cluster is not an error.
func pgctlcluster(t *testing.T, version, action string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	args := []string{"--skip-systemctl-redirect", version, "main", action}
	if action == "restart" {
		args = append(args, "-m", "fast")
	}
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", args...).CombinedOutput()
	if err != nil && !(action == "start" && strings.Contains(string(out), "already running")) {
		t.Fatalf("pg_ctlcluster %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
