package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Checkpoint is the stored state of one slot.
type Checkpoint struct {
	Slot             string
	SystemIdentifier string
	Timeline         int32
	Flushed          pglogrepl.LSN
	LastCommitTime   time.Time // zero when no transaction was relayed yet
	UpdatedAt        time.Time

	// SlotTotalTxns is pg_stat_replication_slots.total_txns when the
	// checkpoint was saved; a slot dropped and recreated starts again at 0.
	SlotTotalTxns int64

	// SlotCreatedAt and SlotCreatedLSN are set when walrelay created the
	// slot: the server's time and the slot's consistent point.
	SlotCreatedAt  time.Time
	SlotCreatedLSN pglogrepl.LSN

	// Backfill is the backfill still owed, or nil.
	Backfill *Backfill

	// HeadCommitLSN and HeadConfirmed describe the oldest unfinished
	// transaction when the checkpoint was stored: its commit LSN and how
	// many of its leading messages the broker had confirmed. Zero when none.
	HeadCommitLSN pglogrepl.LSN
	HeadConfirmed int64
}

// Backfill is an unfinished backfill: the rows of the outbox table that the
// slot's stream does not contain and that walrelay still has to publish.
type Backfill struct {
	Mode  string    // pending (status pending or failed) or all
	Since time.Time // rows created at or after; zero means no lower bound
	Until time.Time // rows created at or before; zero means no upper bound

	// AfterTime and AfterID are the (created_at, id) of the last row whose
	// publish the broker confirmed; zero and empty before the first.
	AfterTime time.Time
	AfterID   string
}

// Querier is the part of a pgx connection or pool that Store uses.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store reads and writes checkpoints in the walrelay_checkpoints table,
// which the walrelay migration set creates.
type Store struct {
	db Querier
}

// NewStore returns a Store that uses db.
func NewStore(db Querier) *Store {
	return &Store{db: db}
}

// Load returns the checkpoint of slot; found is false when none is stored.
func (s *Store) Load(ctx context.Context, slot string) (cp Checkpoint, found bool, err error) {
	var (
		flushed                            string
		createdLSN, mode, afterID, headLSN *string
		headConfirmed                      *int64
		commitTime, createdAt              *time.Time
		since, until, afterTime            *time.Time
		totalTxns                          *int64
	)

	err = s.db.QueryRow(ctx, `
		SELECT slot_name, system_identifier, timeline, flushed_lsn::text, last_commit_time, updated_at,
		       slot_total_txns, slot_created_at, slot_created_lsn::text,
		       backfill_mode, backfill_since, backfill_until, backfill_after_time, backfill_after_id,
		       head_commit_lsn::text, head_confirmed
		FROM walrelay_checkpoints WHERE slot_name = $1`, slot,
	).Scan(&cp.Slot, &cp.SystemIdentifier, &cp.Timeline, &flushed, &commitTime, &cp.UpdatedAt,
		&totalTxns, &createdAt, &createdLSN, &mode, &since, &until, &afterTime, &afterID, &headLSN, &headConfirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("load checkpoint of slot %q: %w", slot, err)
	}

	cp.Flushed, err = pglogrepl.ParseLSN(flushed)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("load checkpoint of slot %q: stored LSN %q: %w", slot, flushed, err)
	}
	if createdLSN != nil {
		if cp.SlotCreatedLSN, err = pglogrepl.ParseLSN(*createdLSN); err != nil {
			return Checkpoint{}, false, fmt.Errorf("load checkpoint of slot %q: stored LSN %q: %w", slot, *createdLSN, err)
		}
	}
	if headLSN != nil && headConfirmed != nil {
		if cp.HeadCommitLSN, err = pglogrepl.ParseLSN(*headLSN); err != nil {
			return Checkpoint{}, false, fmt.Errorf("load checkpoint of slot %q: stored LSN %q: %w", slot, *headLSN, err)
		}
		cp.HeadConfirmed = *headConfirmed
	}
	cp.LastCommitTime = utc(commitTime)
	cp.SlotCreatedAt = utc(createdAt)
	if totalTxns != nil {
		cp.SlotTotalTxns = *totalTxns
	}

	if mode != nil {
		cp.Backfill = &Backfill{Mode: *mode, Since: utc(since), Until: utc(until), AfterTime: utc(afterTime)}
		if afterID != nil {
			cp.Backfill.AfterID = *afterID
		}
	}

	return cp, true, nil
}

// Save stores cp's position, replacing the slot's previous one. A zero
// LastCommitTime keeps the stored one, because keepalive advances carry no
// commit time. The slot's creation and backfill state are left alone.
func (s *Store) Save(ctx context.Context, cp Checkpoint) error {
	_, err := s.db.Exec(ctx, `
		INSERT INTO walrelay_checkpoints
			(slot_name, system_identifier, timeline, flushed_lsn, last_commit_time, slot_total_txns,
			 head_commit_lsn, head_confirmed, updated_at)
		VALUES ($1, $2, $3, $4::pg_lsn, $5, $6, $7::pg_lsn, $8, now())
		ON CONFLICT (slot_name) DO UPDATE SET
			system_identifier = EXCLUDED.system_identifier,
			timeline = EXCLUDED.timeline,
			flushed_lsn = EXCLUDED.flushed_lsn,
			last_commit_time = COALESCE(EXCLUDED.last_commit_time, walrelay_checkpoints.last_commit_time),
			slot_total_txns = COALESCE(EXCLUDED.slot_total_txns, walrelay_checkpoints.slot_total_txns),
			head_commit_lsn = EXCLUDED.head_commit_lsn,
			head_confirmed = EXCLUDED.head_confirmed,
			updated_at = now()`,
		cp.Slot, cp.SystemIdentifier, cp.Timeline, cp.Flushed.String(), nullTime(cp.LastCommitTime), nullInt(cp.SlotTotalTxns),
		nullLSN(cp.HeadCommitLSN), nullInt(cp.HeadConfirmed))
	if err != nil {
		return fmt.Errorf("save checkpoint of slot %q at %s: %w", cp.Slot, cp.Flushed, err)
	}

	return nil
}

// SaveCreatedSlot records a slot that walrelay has just created at
// consistent point lsn, with the backfill it owes (nil for none). It
// replaces any earlier checkpoint of the slot but keeps its last commit
// time, which a recovery's backfill starts from.
func (s *Store) SaveCreatedSlot(ctx context.Context, cp Checkpoint, backfill *Backfill) error {
	var mode *string
	var since, until *time.Time
	if backfill != nil {
		mode = &backfill.Mode
		since, until = nullTime(backfill.Since), nullTime(backfill.Until)
	}

	_, err := s.db.Exec(ctx, `
		INSERT INTO walrelay_checkpoints
			(slot_name, system_identifier, timeline, flushed_lsn, slot_created_at, slot_created_lsn,
			 slot_total_txns, backfill_mode, backfill_since, backfill_until, updated_at)
		VALUES ($1, $2, $3, $4::pg_lsn, now(), $4::pg_lsn, 0, $5, $6, $7, now())
		ON CONFLICT (slot_name) DO UPDATE SET
			system_identifier = EXCLUDED.system_identifier,
			timeline = EXCLUDED.timeline,
			flushed_lsn = EXCLUDED.flushed_lsn,
			slot_created_at = EXCLUDED.slot_created_at,
			slot_created_lsn = EXCLUDED.slot_created_lsn,
			slot_total_txns = 0,
			backfill_mode = EXCLUDED.backfill_mode,
			backfill_since = EXCLUDED.backfill_since,
			backfill_until = EXCLUDED.backfill_until,
			backfill_after_time = NULL,
			backfill_after_id = NULL,
			head_commit_lsn = NULL,
			head_confirmed = NULL,
			updated_at = now()`,
		cp.Slot, cp.SystemIdentifier, cp.Timeline, cp.Flushed.String(), mode, since, until)
	if err != nil {
		return fmt.Errorf("save the new slot %q: %w", cp.Slot, err)
	}

	return nil
}

// SaveBackfillProgress records the (created_at, id) of the last backfilled
// row whose publish the broker confirmed.
func (s *Store) SaveBackfillProgress(ctx context.Context, slot string, afterTime time.Time, afterID string) error {
	_, err := s.db.Exec(ctx, `
		UPDATE walrelay_checkpoints SET backfill_after_time = $2, backfill_after_id = $3, updated_at = now()
		WHERE slot_name = $1`, slot, afterTime, afterID)
	if err != nil {
		return fmt.Errorf("save backfill progress of slot %q: %w", slot, err)
	}

	return nil
}

// FinishBackfill records that the slot owes no backfill any more.
func (s *Store) FinishBackfill(ctx context.Context, slot string) error {
	_, err := s.db.Exec(ctx, `
		UPDATE walrelay_checkpoints
		SET backfill_mode = NULL, backfill_since = NULL, backfill_until = NULL,
		    backfill_after_time = NULL, backfill_after_id = NULL, updated_at = now()
		WHERE slot_name = $1`, slot)
	if err != nil {
		return fmt.Errorf("finish the backfill of slot %q: %w", slot, err)
	}

	return nil
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nullLSN(lsn pglogrepl.LSN) *string {
	if lsn == 0 {
		return nil
	}
	s := lsn.String()
	return &s
}

func nullInt(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

// Delete removes the checkpoint of slot, as teardown does with the slot.
func (s *Store) Delete(ctx context.Context, slot string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM walrelay_checkpoints WHERE slot_name = $1`, slot); err != nil {
		return fmt.Errorf("delete checkpoint of slot %q: %w", slot, err)
	}

	return nil
}
