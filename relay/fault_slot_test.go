package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestFaultInvalidatedSlot(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	run := start(t, cfg)
	consumer := testenv.Consume(t, f.queue)
	insertRows(t, f.pgURL, 0, 10)
	consumer.Collect(t, 10, 30*time.Second)
	run.stop(t)

	// A tiny max_slot_wal_keep_size and a few WAL segments make the next
	// checkpoint invalidate the idle slot (wal_status lost).
	testenv.Exec(t, testenv.AdminURL(), `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	testenv.Exec(t, testenv.AdminURL(), `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		testenv.Exec(t, testenv.AdminURL(), `ALTER SYSTEM RESET max_slot_wal_keep_size`)
		testenv.Exec(t, testenv.AdminURL(), `SELECT pg_reload_conf()`)
	})

	insertRows(t, f.pgURL, 10, 5)
	eventually(t, time.Minute, func() error {
		testenv.Exec(t, f.pgURL, `CREATE TABLE IF NOT EXISTS wal_filler (x text)`)
		for range 4 {
			testenv.Exec(t, f.pgURL, `INSERT INTO wal_filler VALUES ('x')`)
			testenv.Exec(t, f.pgURL, `SELECT pg_switch_wal()`)
		}
		testenv.Exec(t, testenv.AdminURL(), `CHECKPOINT`)

		var status string
		conn := pgConnect(t, f.pgURL)
		defer conn.Close(context.Background())
		err := conn.QueryRow(context.Background(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&status)
		if err != nil {
			return err
		}
		if status != "lost" {
			return notYet("wal_status %s", status)
		}
		return nil
	})

	// The relay refuses the slot instead of recreating it and skipping rows.
	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "invalidated") || !strings.Contains(err.Error(), cfg.Slot) {
		t.Fatalf("Run on an invalidated slot returned %v, want an error naming the slot as invalidated", err)
	}
	consumer.ExpectNone(t, 300*time.Millisecond)
}

func TestFaultSlotDroppedWhileRunning(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.RetryInitial = 2 * time.Second
	run := start(t, cfg)

	// Terminate the walsender and drop the slot before the relay's next
	// attempt takes it again.
	eventually(t, 30*time.Second, func() error {
		conn := pgConnect(t, f.pgURL)
		defer conn.Close(context.Background())
		_, err := conn.Exec(context.Background(), `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, cfg.Slot)
		if err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		_, err = conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, cfg.Slot)
		return err
	})

	err := run.wait(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), cfg.Slot) || !strings.Contains(err.Error(), "disappeared") {
		t.Fatalf("Run after the slot was dropped returned %v, want an error naming the missing slot", err)
	}
}

func TestFaultPublicationDroppedWhileRunning(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	run := start(t, cfg)

	testenv.Exec(t, f.pgURL, `DROP PUBLICATION `+cfg.Publication)
	insertRows(t, f.pgURL, 0, 1)

	err := run.wait(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), `publication "`+cfg.Publication+`" does not exist`) {
		t.Fatalf("Run after the publication was dropped returned %v, want an error naming the publication", err)
	}
	if !strings.Contains(err.Error(), "walrelay setup") {
		t.Errorf("error %q does not say how to recreate the publication", err)
	}
}

func TestFaultRoleWithoutReplication(t *testing.T) {
	f := newFixture(t)
	role := testenv.Name("walrelay_norepl")
	testenv.Exec(t, testenv.AdminURL(), `CREATE ROLE `+role+` LOGIN NOREPLICATION`)
	t.Cleanup(func() { testenv.Exec(t, testenv.AdminURL(), `DROP ROLE IF EXISTS `+role) })

	cfg := f.config()
	cfg.PostgresURL = strings.Replace(f.pgURL, "postgres@", role+"@", 1)

	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "may not start replication") || !strings.Contains(err.Error(), "WITH REPLICATION") {
		t.Fatalf("Run as a role without REPLICATION returned %v, want the missing attribute and the fix", err)
	}
}
