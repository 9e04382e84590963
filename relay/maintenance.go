package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Timings of the table maintenance loops.
const (
	markInterval   = 500 * time.Millisecond
	markBatch      = 1000
	markBufferMax  = 100_000
	retentionBatch = 1000
	retentionPause = 100 * time.Millisecond
)

// retentionInterval is the pause between retention passes; a variable so
// tests can shorten it.
var retentionInterval = time.Minute

// RetentionObserver is implemented by observers that also count the rows
// the retention deletes.
type RetentionObserver interface {
	RowsDeleted(n int)
}

// markLoop sets status 'published' and updated_at on the rows whose
// messages the broker confirmed, in batches. It writes to every relayed
// row, which is why MarkPublished is off by default. A failed update is
// retried at the next interval, with the ids kept in memory up to
// markBufferMax. Beyond that the oldest are dropped with an error log:
// the status serves dashboards and never decides what is relayed.
func (s *session) markLoop(ctx context.Context) error {
	conn, err := s.r.connectPostgres(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	isUUID, err := s.r.idIsUUID(ctx, conn)
	if err != nil {
		return err
	}
	sql := fmt.Sprintf(`UPDATE %s SET %s = 'published', updated_at = now() WHERE %s = ANY($1)`,
		s.r.table.Quoted(), pgx.Identifier{"status"}.Sanitize(), pgx.Identifier{s.r.cfg.Columns.WithDefaults().ID}.Sanitize())

	ticker := time.NewTicker(markInterval)
	defer ticker.Stop()

	var ids []string
	flush := func(ctx context.Context) {
		for len(ids) > 0 {
			n := min(len(ids), markBatch)
			if _, err := conn.Exec(ctx, sql, ids[:n]); err != nil {
				s.r.log.Warn().Err(err).Int("rows", len(ids)).Msg("cannot mark relayed rows as published; retrying")
				return
			}
			ids = ids[n:]
		}
	}

	for {
		select {
		case <-ctx.Done():
			flush(context.WithoutCancel(ctx))
			return nil
		case id := <-s.marks:
			var parsed pgtype.UUID
			if isUUID && parsed.Scan(id) != nil {
				continue // a logical decoding message: no row to mark
			}
			ids = append(ids, id)
			if len(ids) > markBufferMax {
				s.r.log.Error().Int("dropped", len(ids)-markBufferMax).Bool("status_not_marked", true).
					Msg("too many rows wait to be marked as published; their status stays as it is")
				ids = ids[len(ids)-markBufferMax:]
			}
		case <-ticker.C:
			flush(ctx)
		}
	}
}

// idIsUUID reports whether the table's id column has type uuid.
func (r *Relay) idIsUUID(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var dataType string
	err := conn.QueryRow(ctx, `
		SELECT data_type FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2 AND column_name = $3`,
		r.table.Schema, r.table.Name, r.cfg.Columns.WithDefaults().ID).Scan(&dataType)
	if err != nil {
		return false, fmt.Errorf("look up the id column of %s: %w", r.table, err)
	}
	return dataType == "uuid", nil
}

// retentionLoop deletes relayed rows older than Retention, in small
// batches with pauses so it never holds long locks. It never deletes a row
// created after the last relayed commit, which a recovery may still need.
// Deleting a relayed row loses no message: its insert is in the WAL.
func (s *session) retentionLoop(ctx context.Context) error {
	conn, err := s.r.connectPostgres(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	createdAt := pgx.Identifier{s.r.cfg.Columns.WithDefaults().CreatedAt}.Sanitize()
	sql := fmt.Sprintf(`DELETE FROM %[1]s WHERE ctid IN (SELECT ctid FROM %[1]s WHERE %[2]s < $1 LIMIT %[3]d)`,
		s.r.table.Quoted(), createdAt, retentionBatch)

	ticker := time.NewTicker(retentionInterval)
	defer ticker.Stop()

	for {
		cutoff := time.Now().Add(-s.r.cfg.Retention)
		if relayed := s.ledger.Flushed().CommitTime; relayed.Before(cutoff) {
			cutoff = relayed
		}

		deleted := 0
		for !cutoff.IsZero() {
			tag, err := conn.Exec(ctx, sql, cutoff)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.r.log.Warn().Err(err).Msg("retention: cannot delete relayed rows; retrying in a minute")
				break
			}
			n := int(tag.RowsAffected())
			deleted += n
			if obs, ok := s.r.cfg.Observer.(RetentionObserver); ok && n > 0 {
				obs.RowsDeleted(n)
			}
			if n < retentionBatch {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retentionPause):
			}
		}
		if deleted > 0 {
			s.r.log.Info().Int("rows", deleted).Time("before", cutoff).Msg("retention: deleted relayed rows")
		}

		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
