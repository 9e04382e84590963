package main

import (
	"regexp"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestStatusOfEmptyDatabase(t *testing.T) {
	pgURL := testenv.Database(t)
	slot := testenv.Name("slot")

	report := statusJSON(t, pgURL, slot)
	if report.Slot.Name != slot || report.Slot.Exists {
		t.Errorf("slot = %+v, want %s reported missing", report.Slot, slot)
	}
	if report.Publication.Exists || report.Publication.Tables == nil || len(report.Publication.Tables) != 0 {
		t.Errorf("publication = %+v, want missing with an empty table list", report.Publication)
	}
	if report.Checkpoint.TableExists || report.Checkpoint.Found {
		t.Errorf("checkpoint = %+v, want no table", report.Checkpoint)
	}

	text := runWalrelay(t, 30*time.Second, nil, "status", "--pg-url", pgURL, "--slot", slot)
	if text.exitCode != 0 {
		t.Fatalf("status exited %d: %s", text.exitCode, text.stderr)
	}
	for _, want := range []string{
		`Slot "` + slot + `"`,
		`state +missing: walrelay run creates it`,
		`tables +none: the publication is missing`,
		`walrelay_checkpoints is missing`,
	} {
		if !regexp.MustCompile(want).MatchString(text.stdout) {
			t.Errorf("status output does not match %q:\n%s", want, text.stdout)
		}
	}
}

func TestStatusAfterSetup(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	slot := testenv.Name("slot")
	migrate(t, pgURL)

	if res := runWalrelay(t, 60*time.Second, nil, "setup", "--pg-url", pgURL, "--slot", slot); res.exitCode != 0 {
		t.Fatalf("setup: %s", res.stderr)
	}

	// Setup records the new slot and the backfill it owes.
	created := statusJSON(t, pgURL, slot)
	if c := created.Checkpoint; !c.Found || c.SlotCreatedLSN != created.Slot.ConfirmedFlushLSN || c.SlotCreatedAt == nil {
		t.Errorf("checkpoint after setup = %+v, want the slot's creation at %s", c, created.Slot.ConfirmedFlushLSN)
	}
	if b := created.Checkpoint.Backfill; b == nil || b.Mode != "pending" {
		t.Errorf("backfill after setup = %+v, want pending rows owed", b)
	}

	testenv.Exec(t, pgURL, `
		UPDATE walrelay_checkpoints
		SET system_identifier = '7000000000000000001', flushed_lsn = '0/16B3748', last_commit_time = '2025-01-02T03:04:05Z',
		    backfill_after_time = '2025-01-01T00:00:00Z', backfill_after_id = 'row-7'
		WHERE slot_name = $1`, slot)

	report := statusJSON(t, pgURL, slot)
	if !report.Slot.Exists || report.Slot.Active || report.Slot.Plugin != "pgoutput" || report.Slot.WALStatus != "reserved" {
		t.Errorf("slot = %+v, want an inactive pgoutput slot with wal_status reserved", report.Slot)
	}
	if report.Slot.ConfirmedFlushLSN == "" || report.Slot.RestartLSN == "" || report.Slot.Problem != "" {
		t.Errorf("slot = %+v, want both LSNs and no problem", report.Slot)
	}
	c := report.Checkpoint
	if !c.Found || c.FlushedLSN != "0/16B3748" || c.SystemIdentifier != "7000000000000000001" || c.Timeline != 1 {
		t.Errorf("checkpoint = %+v, want the stored row", c)
	}
	if c.LastCommitTime == nil || !c.LastCommitTime.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("checkpoint last commit = %v, want 2025-01-02T03:04:05Z", c.LastCommitTime)
	}

	text := runWalrelay(t, 30*time.Second, nil, "status", "--pg-url", pgURL, "--slot", slot)
	if text.exitCode != 0 {
		t.Fatalf("status exited %d: %s", text.exitCode, text.stderr)
	}
	for _, want := range []string{
		`state +inactive`,
		`plugin +pgoutput`,
		`confirmed LSN +` + regexp.QuoteMeta(report.Slot.ConfirmedFlushLSN),
		`lag +\d+`,
		`wal_status +reserved`,
		`tables +public\.outbox_messages`,
		`flushed LSN +0/16B3748`,
		`last commit +2025-01-02T03:04:05Z`,
		`backfill +owed: pending rows; confirmed up to row row-7 \(2025-01-01T00:00:00Z\)`,
	} {
		if !regexp.MustCompile(want).MatchString(text.stdout) {
			t.Errorf("status output does not match %q:\n%s", want, text.stdout)
		}
	}
}
