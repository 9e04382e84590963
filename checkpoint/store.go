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
		flushed    string
		commitTime *time.Time
	)

	err = s.db.QueryRow(ctx, `
		SELECT slot_name, system_identifier, timeline, flushed_lsn::text, last_commit_time, updated_at
		FROM walrelay_checkpoints WHERE slot_name = $1`, slot,
	).Scan(&cp.Slot, &cp.SystemIdentifier, &cp.Timeline, &flushed, &commitTime, &cp.UpdatedAt)
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
	if commitTime != nil {
		cp.LastCommitTime = commitTime.UTC()
	}

	return cp, true, nil
}

// Save stores cp, replacing the slot's previous checkpoint. A zero
// LastCommitTime keeps the stored one, because keepalive advances carry no
// commit time.
func (s *Store) Save(ctx context.Context, cp Checkpoint) error {
	var commitTime *time.Time
	if !cp.LastCommitTime.IsZero() {
		commitTime = &cp.LastCommitTime
	}

	_, err := s.db.Exec(ctx, `
		INSERT INTO walrelay_checkpoints
			(slot_name, system_identifier, timeline, flushed_lsn, last_commit_time, updated_at)
		VALUES ($1, $2, $3, $4::pg_lsn, $5, now())
		ON CONFLICT (slot_name) DO UPDATE SET
			system_identifier = EXCLUDED.system_identifier,
			timeline = EXCLUDED.timeline,
			flushed_lsn = EXCLUDED.flushed_lsn,
			last_commit_time = COALESCE(EXCLUDED.last_commit_time, walrelay_checkpoints.last_commit_time),
			updated_at = now()`,
		cp.Slot, cp.SystemIdentifier, cp.Timeline, cp.Flushed.String(), commitTime)
	if err != nil {
		return fmt.Errorf("save checkpoint of slot %q at %s: %w", cp.Slot, cp.Flushed, err)
	}

	return nil
}

// Delete removes the checkpoint of slot, as teardown does with the slot.
func (s *Store) Delete(ctx context.Context, slot string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM walrelay_checkpoints WHERE slot_name = $1`, slot); err != nil {
		return fmt.Errorf("delete checkpoint of slot %q: %w", slot, err)
	}

	return nil
}
