package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/backfill"
)

// ReplayHeader marks a republished message; its value is the time the
// replay started, RFC 3339 in UTC.
const ReplayHeader = "x-walrelay-replay"

// ReplayOptions selects the rows a replay republishes.
type ReplayOptions struct {
	Since, Until             time.Time // created_at bounds; Until zero means now
	AggregateType, EventType string    // exact matches when set
	DryRun                   bool      // count only
	Rate                     int       // rows per second; 0 means no limit
}

// Replay republishes outbox rows from the table with the normal message
// contract plus ReplayHeader, for consumers that lost messages. It reads no
// slot and moves none. announce is called with the number of selected rows
// before anything is sent. It returns the number of rows published, or
// selected with DryRun.
func (r *Relay) Replay(ctx context.Context, opts ReplayOptions, announce func(rows int64)) (int64, error) {
	if opts.Since.IsZero() {
		return 0, fmt.Errorf("missing --since: a replay needs the creation time of the first row to send")
	}
	if !opts.Until.IsZero() && opts.Until.Before(opts.Since) {
		return 0, fmt.Errorf("invalid --until %s: it is before --since %s", opts.Until.Format(time.RFC3339), opts.Since.Format(time.RFC3339))
	}
	if opts.Rate < 0 {
		return 0, fmt.Errorf("invalid --rate %d: use a positive number of rows per second, or 0 for no limit", opts.Rate)
	}

	conn, err := r.connectPostgres(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("replay: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	cols, err := r.backfillColumns(ctx, tx)
	if err != nil {
		return 0, err
	}
	filter := backfill.Filter{
		Since:         opts.Since,
		Until:         opts.Until,
		AggregateType: opts.AggregateType,
		EventType:     opts.EventType,
	}

	total, err := backfill.Count(ctx, tx, r.table.Quoted(), cols, filter)
	if err != nil {
		return 0, err
	}
	announce(total)
	if opts.DryRun || total == 0 {
		return total, nil
	}

	pub, err := r.dialBroker(ctx)
	if err != nil {
		return 0, err
	}
	defer pub.Close()

	rp := &rowPublisher{
		r:       r,
		pub:     pub,
		total:   total,
		rate:    opts.Rate,
		headers: map[string]any{ReplayHeader: time.Now().UTC().Format(time.RFC3339)},
	}
	err = backfill.Scan(ctx, tx, r.table.Quoted(), cols, filter, func(row backfill.Row) error {
		return rp.publishRow(ctx, row)
	})
	if err != nil {
		return rp.confirmed, err
	}
	if err := rp.finish(ctx); err != nil {
		return rp.confirmed, err
	}

	r.log.Info().Int64("rows", rp.confirmed).Time("since", opts.Since).Msg("replay finished")

	return rp.confirmed, nil
}

// checkMaintenanceColumns rejects MarkPublished and Retention on tables
// without the columns they write or read.
func (r *Relay) checkMaintenanceColumns(ctx context.Context, db *pgx.Conn) error {
	if !r.cfg.MarkPublished && r.cfg.Retention == 0 {
		return nil
	}

	cols, err := r.backfillColumns(ctx, db)
	if err != nil {
		return err
	}
	if r.cfg.MarkPublished && cols.Status == "" {
		return permanent(fmt.Errorf("--mark-published needs a status column, and table %s has none", r.table))
	}
	if r.cfg.Retention > 0 && cols.CreatedAt == "" {
		return permanent(fmt.Errorf("--retention needs a creation time column, and table %s has none; set --column-created-at", r.table))
	}

	return nil
}
