package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// OutputPlugin is the logical decoding plugin walrelay streams with.
const OutputPlugin = "pgoutput"

// Slot is the server's view of a replication slot.
type Slot struct {
	Name           string
	Plugin         string
	Type           string // logical or physical
	Database       string
	Active         bool
	ActivePID      int32 // zero when inactive
	ConfirmedFlush pglogrepl.LSN
	RestartLSN     pglogrepl.LSN
	WALStatus      string // reserved, extended, unreserved or lost
	LagBytes       int64  // current WAL position minus confirmed_flush_lsn

	// TotalTxns is pg_stat_replication_slots.total_txns, the transactions
	// decoded for this slot since it was created or its statistics reset.
	TotalTxns int64
}

// ErrSlotNotFound is returned by LookupSlot for a slot that does not exist.
var ErrSlotNotFound = errors.New("replication slot not found")

// LookupSlot returns the slot called name, or an error wrapping
// ErrSlotNotFound.
func LookupSlot(ctx context.Context, db *pgx.Conn, name string) (Slot, error) {
	var (
		s                  Slot
		plugin, database   *string
		activePID          *int32
		confirmed, restart *string
		walStatus          *string
		lag                *int64
		totalTxns          *int64
	)

	err := db.QueryRow(ctx, `
		SELECT s.slot_name, plugin, slot_type, database, active, active_pid,
		       confirmed_flush_lsn::text, restart_lsn::text, wal_status,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
		       st.total_txns
		FROM pg_replication_slots s LEFT JOIN pg_stat_replication_slots st USING (slot_name)
		WHERE s.slot_name = $1`, name,
	).Scan(&s.Name, &plugin, &s.Type, &database, &s.Active, &activePID, &confirmed, &restart, &walStatus, &lag, &totalTxns)
	if errors.Is(err, pgx.ErrNoRows) {
		return Slot{}, fmt.Errorf("slot %q: %w", name, ErrSlotNotFound)
	}
	if err != nil {
		return Slot{}, fmt.Errorf("look up replication slot %q: %w", name, err)
	}

	s.Plugin = deref(plugin)
	s.Database = deref(database)
	s.WALStatus = deref(walStatus)
	if activePID != nil {
		s.ActivePID = *activePID
	}
	if lag != nil {
		s.LagBytes = *lag
	}
	if totalTxns != nil {
		s.TotalTxns = *totalTxns
	}
	if confirmed != nil {
		if s.ConfirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return Slot{}, fmt.Errorf("slot %q: confirmed_flush_lsn %q: %w", name, *confirmed, err)
		}
	}
	if restart != nil {
		if s.RestartLSN, err = pglogrepl.ParseLSN(*restart); err != nil {
			return Slot{}, fmt.Errorf("slot %q: restart_lsn %q: %w", name, *restart, err)
		}
	}

	return s, nil
}

// Validate returns an error when the slot cannot serve walrelay in
// database: another plugin, a physical slot, another database, or a slot
// whose WAL the server has already removed.
func (s Slot) Validate(database string) error {
	if s.Type != "logical" {
		return fmt.Errorf("replication slot %q is a %s slot: walrelay needs a logical slot; choose another --slot", s.Name, s.Type)
	}
	if s.Plugin != OutputPlugin {
		return fmt.Errorf("replication slot %q uses plugin %q: walrelay needs %q; choose another --slot", s.Name, s.Plugin, OutputPlugin)
	}
	if s.Database != database {
		return fmt.Errorf("replication slot %q belongs to database %q, not %q: choose another --slot or connect to %q",
			s.Name, s.Database, database, s.Database)
	}
	if s.WALStatus == "lost" {
		return fmt.Errorf("replication slot %q is invalidated (wal_status lost): the server removed WAL it still needed, "+
			"so changes since %s may not have been relayed; recreate the slot and backfill", s.Name, s.ConfirmedFlush)
	}

	return nil
}

// DropSlot drops the slot called name. A missing slot is not an error; an
// active one fails with the server's error naming the walsender's pid.
func DropSlot(ctx context.Context, db *pgx.Conn, name string) error {
	_, err := db.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	if err != nil {
		return fmt.Errorf("drop replication slot %q: %w", name, err)
	}

	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ImportSnapshot makes tx see the snapshot a slot exported at creation
// (CreatedSlot.SnapshotName). tx must be a REPEATABLE READ transaction that
// has run no query yet, and the replication connection that created the
// slot must still be open and idle.
func ImportSnapshot(ctx context.Context, tx pgx.Tx, name string) error {
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(name)); err != nil {
		return fmt.Errorf("import the slot's snapshot %s: %w", name, err)
	}
	return nil
}
