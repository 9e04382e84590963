package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/backfill"
	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/replication"
	"github.com/walrelay/walrelay/sink"
)

// failoverMinVersion is the first PostgreSQL (server_version_num) whose
// CREATE_REPLICATION_SLOT takes the FAILOVER option.
const failoverMinVersion = 170000

// ensureSlot makes the slot ready to stream. It creates a missing slot and
// publishes the rows its stream will not contain, and it finishes a
// backfill that a crash interrupted. Unless Recover is set, it refuses a
// slot that does not continue the stored checkpoint.
func (r *Relay) ensureSlot(ctx context.Context, db *pgx.Conn, info replication.ServerInfo) error {
	store := checkpoint.NewStore(db)
	cp, haveCheckpoint, err := store.Load(ctx, r.cfg.Slot)
	if err != nil {
		return err
	}

	slot, err := replication.LookupSlot(ctx, db, r.cfg.Slot)
	switch {
	case errors.Is(err, replication.ErrSlotNotFound):
		if haveCheckpoint && !r.cfg.Recover {
			return permanent(r.gapError(cp, "does not exist"))
		}
		if r.cfg.NoCreate {
			return permanent(fmt.Errorf("replication slot %q does not exist and creating it is disabled: run walrelay setup", r.cfg.Slot))
		}
		return r.createSlot(ctx, db, info, r.newSlotBackfill(cp, haveCheckpoint))

	case err != nil:
		return err
	}

	systemID, err := r.systemIdentifier(ctx)
	if err != nil {
		return err
	}
	gap := r.checkSlot(ctx, db, slot, info, systemID, cp, haveCheckpoint)
	if gap != nil && !r.cfg.Recover {
		return permanent(gap)
	}
	if gap != nil {
		if slot.Active {
			return permanent(fmt.Errorf("cannot recover: replication slot %q is in use by pid %d; stop that process first", r.cfg.Slot, slot.ActivePID))
		}
		r.log.Warn().Err(gap).Msg("recovering: dropping the replication slot to recreate it")
		if err := replication.DropSlot(ctx, db, r.cfg.Slot); err != nil {
			return err
		}
		return r.createSlot(ctx, db, info, r.newSlotBackfill(cp, true))
	}

	if haveCheckpoint && cp.Backfill != nil {
		return r.resumeBackfill(ctx, store, cp)
	}

	return nil
}

// checkSlot returns an error describing a gap when slot cannot continue
// the checkpoint cp: it is invalidated, belongs to another database cluster,
// or was dropped and recreated since cp was stored.
func (r *Relay) checkSlot(ctx context.Context, db *pgx.Conn, slot replication.Slot, info replication.ServerInfo,
	systemID string, cp checkpoint.Checkpoint, haveCheckpoint bool) error {
	if err := slot.Validate(info.Database); err != nil {
		if slot.WALStatus == "lost" && haveCheckpoint {
			return r.gapError(cp, "is invalidated (wal_status lost): the server removed WAL it still needed")
		}
		return permanent(err)
	}
	if !haveCheckpoint || cp.SystemIdentifier == "" {
		return nil
	}

	if systemID != cp.SystemIdentifier {
		return r.gapError(cp, fmt.Sprintf("belongs to database cluster %s, not to %s where walrelay relayed from it (a failover to a server that did not have the slot, or a restore)",
			systemID, cp.SystemIdentifier))
	}

	// Slot statistics only grow while a slot lives; a recreated slot
	// starts again at zero. A server restart may reset them too (after a
	// crash), so the check applies only when the server ran since the save.
	var started time.Time
	if err := db.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&started); err != nil {
		return fmt.Errorf("read the server's start time: %w", err)
	}
	if slot.TotalTxns < cp.SlotTotalTxns && started.Before(cp.UpdatedAt) {
		return r.gapError(cp, fmt.Sprintf("was dropped and recreated since walrelay last used it (it has decoded %d transactions, fewer than the %d stored)",
			slot.TotalTxns, cp.SlotTotalTxns))
	}

	return nil
}

// systemIdentifier returns the server's system identifier, read with
// IDENTIFY_SYSTEM, which needs no privilege beyond REPLICATION.
func (r *Relay) systemIdentifier(ctx context.Context) (string, error) {
	stream, err := replication.Dial(ctx, r.cfg.PostgresURL)
	if err != nil {
		return "", err
	}
	defer stream.Close(context.WithoutCancel(ctx))

	system, err := stream.IdentifySystem(ctx)
	if err != nil {
		return "", err
	}
	return system.SystemID, nil
}

// gapError describes a slot that does not continue the checkpoint, and the
// command that recovers.
func (r *Relay) gapError(cp checkpoint.Checkpoint, problem string) error {
	last := "no commit relayed yet"
	since := cp.SlotCreatedAt
	if !cp.LastCommitTime.IsZero() {
		last = "last relayed commit at " + cp.LastCommitTime.Format(time.RFC3339)
		since = cp.LastCommitTime
	}

	return fmt.Errorf("gap detected: replication slot %q %s; walrelay relayed up to LSN %s (%s), so rows committed after that may not have been relayed. "+
		"Run walrelay run --recover to recreate the slot and publish the rows created since %s minus --recovery-margin; consumers may receive some messages twice",
		r.cfg.Slot, problem, cp.Flushed, last, since.Format(time.RFC3339))
}

// newSlotBackfill returns the backfill a new slot owes: in recovery, every
// row created since the last relayed commit minus RecoveryMargin; else the
// rows Config.Backfill selects.
func (r *Relay) newSlotBackfill(cp checkpoint.Checkpoint, recovering bool) *checkpoint.Backfill {
	if recovering && r.cfg.Recover {
		since := cp.LastCommitTime
		if since.IsZero() {
			since = cp.SlotCreatedAt
		}
		if since.IsZero() {
			since = cp.UpdatedAt
		}
		return &checkpoint.Backfill{Mode: BackfillAll, Since: since.Add(-r.cfg.RecoveryMargin)}
	}

	if r.cfg.Backfill == BackfillNone {
		return nil
	}
	return &checkpoint.Backfill{Mode: r.cfg.Backfill}
}

// createSlot creates the slot. When bf is not nil, it then publishes the
// rows bf selects inside the slot's exported snapshot, which contains
// exactly the rows committed before the slot's consistent point. So the backfill
// and the stream neither miss nor repeat a row.
func (r *Relay) createSlot(ctx context.Context, db *pgx.Conn, info replication.ServerInfo, bf *checkpoint.Backfill) error {
	if r.cfg.FailoverSlot && info.VersionNum < failoverMinVersion {
		return permanent(fmt.Errorf("--failover-slot needs PostgreSQL 17 or later, but the server is PostgreSQL %s: "+
			"create the slot without it, or upgrade the server", info.Version))
	}

	stream, err := replication.Dial(ctx, r.cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer stream.Close(context.WithoutCancel(ctx))

	system, err := stream.IdentifySystem(ctx)
	if err != nil {
		return err
	}

	created, err := stream.CreateSlot(ctx, r.cfg.Slot, bf != nil, r.cfg.FailoverSlot)
	if errors.Is(err, replication.ErrSlotExists) {
		return fmt.Errorf("replication slot %q was created by another process meanwhile: %w", r.cfg.Slot, err)
	}
	if err != nil {
		return permanent(err)
	}

	store := checkpoint.NewStore(db)
	cp := checkpoint.Checkpoint{
		Slot:             r.cfg.Slot,
		SystemIdentifier: system.SystemID,
		Timeline:         system.Timeline,
		Flushed:          created.ConsistentPoint,
	}
	if err := store.SaveCreatedSlot(ctx, cp, bf); err != nil {
		return err
	}
	r.log.Info().Str("lsn", created.ConsistentPoint.String()).Bool("failover", r.cfg.FailoverSlot).Msg("created replication slot")

	if bf == nil {
		return nil
	}

	// The snapshot lives until the next command on stream, which stays
	// idle while the backfill runs.
	if err := r.runBackfill(ctx, store, bf, created.SnapshotName); err != nil {
		return err
	}

	return store.FinishBackfill(ctx, r.cfg.Slot)
}

// resumeBackfill finishes a backfill that a crash interrupted. The slot's
// snapshot is gone, so the rows are bounded by the slot's creation time
// instead; rows committed around that time may be published twice.
func (r *Relay) resumeBackfill(ctx context.Context, store *checkpoint.Store, cp checkpoint.Checkpoint) error {
	bf := *cp.Backfill
	if bf.Until.IsZero() {
		bf.Until = cp.SlotCreatedAt
	}
	if bf.AfterID == "" {
		r.log.Info().Msg("starting the backfill owed since the slot was created")
	} else {
		r.log.Info().Time("after", bf.AfterTime).Str("after_id", bf.AfterID).Msg("resuming an interrupted backfill after the last confirmed row")
	}

	if err := r.runBackfill(ctx, store, &bf, ""); err != nil {
		return err
	}

	return store.FinishBackfill(ctx, r.cfg.Slot)
}

// runBackfill publishes the rows bf selects, inside snapshot when it is
// set, and stores its progress as the broker confirms.
func (r *Relay) runBackfill(ctx context.Context, store *checkpoint.Store, bf *checkpoint.Backfill, snapshot string) error {
	conn, err := r.connectPostgres(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("backfill: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	if snapshot != "" {
		if err := replication.ImportSnapshot(ctx, tx, snapshot); err != nil {
			return fmt.Errorf("backfill: %w", err)
		}
	}

	cols, err := r.backfillColumns(ctx, tx)
	if err != nil {
		return err
	}
	filter := backfill.Filter{
		Since: bf.Since,
		Until: bf.Until,
		After: backfill.Key{CreatedAt: bf.AfterTime, ID: bf.AfterID},
	}
	if bf.Mode == BackfillPending {
		if cols.Status == "" {
			r.log.Warn().Str("table", r.table.String()).Msg("backfill: the table has no status column, so every row counts as pending")
		} else {
			filter.Statuses = []string{"pending", "failed"}
		}
	}

	total, err := backfill.Count(ctx, tx, r.table.Quoted(), cols, filter)
	if err != nil {
		return err
	}
	event := r.log.Info().Int64("rows", total).Str("mode", bf.Mode)
	if !bf.Since.IsZero() {
		event = event.Time("since", bf.Since)
	}
	event.Msg("backfill started")

	pub, err := r.dialBroker(ctx)
	if err != nil {
		return err
	}
	defer pub.Close()

	rp := &rowPublisher{
		r:     r,
		pub:   pub,
		total: total,
		progress: func(key backfill.Key) error {
			return store.SaveBackfillProgress(ctx, r.cfg.Slot, key.CreatedAt, key.ID)
		},
	}
	err = backfill.Scan(ctx, tx, r.table.Quoted(), cols, filter, func(row backfill.Row) error {
		return rp.publishRow(ctx, row)
	})
	if err != nil {
		return err
	}
	if err := rp.finish(ctx); err != nil {
		return err
	}

	r.log.Info().Int64("rows", rp.confirmed).Msg("backfill finished")

	return nil
}

// backfillColumns returns the relay's column names for the backfill
// reader, leaving out optional columns the table lacks, plus Event-Forge's
// status column when the table has one.
func (r *Relay) backfillColumns(ctx context.Context, db backfill.Querier) (backfill.Columns, error) {
	rows, err := db.Query(ctx, `
		SELECT column_name FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2`, r.table.Schema, r.table.Name)
	if err != nil {
		return backfill.Columns{}, fmt.Errorf("list the columns of %s: %w", r.table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return backfill.Columns{}, fmt.Errorf("list the columns of %s: %w", r.table, err)
	}

	exists := make(map[string]bool, len(names))
	for _, n := range names {
		exists[n] = true
	}
	optional := func(name string) string {
		if exists[name] {
			return name
		}
		return ""
	}

	c := r.cfg.Columns.WithDefaults()
	return backfill.Columns{
		ID:            c.ID,
		AggregateType: c.AggregateType,
		AggregateID:   c.AggregateID,
		EventType:     c.EventType,
		Payload:       c.Payload,
		Metadata:      optional(c.Metadata),
		CreatedAt:     optional(c.CreatedAt),
		ScheduledAt:   optional(c.ScheduledAt),
		Status:        optional("status"),
	}, nil
}

// dialBroker connects a publisher to the current broker URL.
func (r *Relay) dialBroker(ctx context.Context) (*sink.Publisher, error) {
	return sink.Dial(ctx, sink.Config{
		URL:                r.brokerURLs[r.brokerNext],
		Exchange:           r.cfg.Exchange,
		DeclareExchange:    !r.cfg.NoDeclareExchange,
		DelayedExchange:    r.cfg.DelayedExchange,
		DeadLetterExchange: r.cfg.DeadLetterExchange,
		TLS:                r.brokerTLS,
		ConfirmBuffer:      2 * r.cfg.MaxInFlight,
	}, r.log)
}
