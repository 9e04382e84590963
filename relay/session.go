package relay

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/outbox"
	"github.com/walrelay/walrelay/replication"
	"github.com/walrelay/walrelay/sink"
)

// queued is a message waiting for the publish loop: a decoded message, or
// with deadLetter set, one to publish to the dead-letter exchange.
type queued struct {
	seq        uint64
	msg        outbox.Message
	commitTime time.Time
	deadLetter *deadLetter
}

// inflight is the session's record of a message between publish and
// confirm, one per window slot, indexed by sequence number.
type inflight struct {
	committed    time.Time
	published    time.Time // the start of the message's burst
	deadLettered bool

	// pub is kept only with the dead-letter policy for unroutable
	// messages, which publishes it again.
	pub *outbox.Publishing
}

// session is one connected run of the relay. Its fields are shared by the
// loops only where noted.
type session struct {
	r      *Relay
	stream *replication.Stream // stream loop only
	pub    *sink.Publisher
	db     *pgx.Conn // checkpoint loop only, once the loops run
	store  *checkpoint.Store
	ledger *checkpoint.Ledger

	system pglogrepl.IdentifySystemResult
	start  pglogrepl.LSN

	queue chan queued   // stream loop -> publish loop; capacity MaxInFlight
	wake  chan struct{} // confirm loop -> stream loop: space freed or flush advanced

	// inflight is written by the publish loop before Publish and read by
	// the confirm loop after the confirm, which the sink orders after it.
	inflight []inflight

	// deadLetters carries returned messages from the confirm loop to the
	// publish loop, which republishes them to the dead-letter exchange.
	deadLetters chan queued

	// marks carries the ids of confirmed messages to the mark loop when
	// MarkPublished is set.
	marks chan string

	// published and confirmed count this session's publishes and confirms,
	// for the confirm timeout.
	published atomic.Uint64
	confirmed atomic.Uint64
}

// session connects, streams and relays until ctx is canceled (a clean stop,
// which returns nil) or something fails.
func (r *Relay) session(ctx context.Context, recovering bool) (err error) {
	s := &session{
		r:           r,
		queue:       make(chan queued, r.cfg.MaxInFlight),
		wake:        make(chan struct{}, 1),
		inflight:    make([]inflight, r.cfg.MaxInFlight),
		deadLetters: make(chan queued, r.cfg.MaxInFlight),
		marks:       make(chan string, r.cfg.MaxInFlight),
	}
	obs := r.cfg.Observer
	defer s.close(context.WithoutCancel(ctx))

	if err := s.connect(ctx); err != nil {
		return err
	}

	r.streamingOnce.Do(func() { close(r.streaming) })
	obs.Streaming(true)
	defer obs.Streaming(false)

	if recovering {
		obs.Reconnected(SidePostgres)
		obs.Reconnected(SideBroker)
		r.log.Info().Str("lsn", s.start.String()).Msg("relay session recovered")
	} else {
		r.log.Info().Str("lsn", s.start.String()).Str("system_id", s.system.SystemID).
			Int32("timeline", s.system.Timeline).Msg("relay started")
	}

	// The loops get their own context: a canceled ctx means "drain and
	// stop", which only the stream loop acts on; loopCtx ends them all.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	g, gctx := errgroup.WithContext(loopCtx)

	g.Go(func() error {
		defer stopLoops()
		return s.streamLoop(ctx, gctx)
	})
	g.Go(func() error { return s.publishLoop(gctx) })
	g.Go(func() error { return s.confirmLoop(gctx) })
	g.Go(func() error { return s.checkpointLoop(gctx) })
	if r.cfg.MarkPublished {
		g.Go(func() error { return s.markLoop(gctx) })
	}
	if r.cfg.Retention > 0 {
		g.Go(func() error { return s.retentionLoop(gctx) })
	}

	err = g.Wait()
	r.resume = s.ledger.Resume()

	// The loops are done, so this goroutine owns the stream now. Reporting
	// what is confirmed spares the next start some duplicates; after a
	// connection failure it fails, which is harmless.
	if statusErr := s.stream.SendStatus(r.resume.Flushed.LSN, false); statusErr != nil {
		r.log.Debug().Err(statusErr).Msg("cannot send the final standby status")
	}

	if saveErr := s.saveCheckpoint(context.WithoutCancel(ctx), 0); saveErr != nil {
		r.log.Warn().Err(saveErr).Msg("cannot store the final checkpoint")
	}

	return err
}

// connect opens the session's connections and starts replication from the
// later of the slot's confirmed position and the position this process has
// seen confirmed.
func (s *session) connect(ctx context.Context) error {
	cfg := s.r.cfg

	db, err := s.r.connectPostgres(ctx)
	if err != nil {
		return err
	}
	s.db = db
	s.store = checkpoint.NewStore(db)

	cp, haveCheckpoint, err := s.store.Load(ctx, cfg.Slot)
	if err != nil {
		return err
	}
	slot, err := replication.LookupSlot(ctx, db, cfg.Slot)
	if err != nil {
		if errors.Is(err, replication.ErrSlotNotFound) {
			return permanent(fmt.Errorf("replication slot %q disappeared while walrelay was running: %w", cfg.Slot, s.r.gapError(cp, "does not exist")))
		}
		return err
	}
	// A publication dropped or changed while the relay runs ends the
	// stream: return an error that names the problem instead of retrying.
	if _, err := replication.EnsurePublication(ctx, db, cfg.Publication, s.r.table, false); err != nil {
		if isNetworkError(err) {
			return err
		}
		return permanent(err)
	}

	s.stream, err = replication.Dial(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	s.system, err = s.stream.IdentifySystem(ctx)
	if err != nil {
		return err
	}

	// The URL may name no database (the server then takes the user's), so
	// ask the server.
	info := replication.ServerInfo{}
	if err := db.QueryRow(ctx, `SELECT current_database()`).Scan(&info.Database); err != nil {
		return fmt.Errorf("query the current database: %w", err)
	}
	if err := s.r.checkSlot(ctx, db, slot, info, s.system.SystemID, cp, haveCheckpoint); err != nil {
		return permanent(err)
	}

	s.pub, err = s.r.dialBroker(ctx)
	if err != nil {
		return err
	}

	// A new process continues from the stored checkpoint: the position,
	// and the confirmed part of the transaction a crash interrupted.
	if !s.r.resumeLoaded && haveCheckpoint {
		s.r.resume = checkpoint.Resume{
			Flushed:       checkpoint.Position{LSN: cp.Flushed, CommitTime: cp.LastCommitTime},
			HeadCommitLSN: cp.HeadCommitLSN,
			HeadConfirmed: int(cp.HeadConfirmed),
		}
	}
	s.r.resumeLoaded = true

	s.start = max(slot.ConfirmedFlush, s.r.resume.Flushed.LSN)
	if cfg.StartLSN != 0 && !s.r.startLSNApplied {
		if cfg.StartLSN < slot.ConfirmedFlush {
			return permanent(fmt.Errorf("invalid start LSN %s: it is older than the slot's confirmed position %s, "+
				"and a logical replication slot cannot rewind; to send older rows again use walrelay replay", cfg.StartLSN, slot.ConfirmedFlush))
		}
		s.r.log.Warn().Str("from_lsn", slot.ConfirmedFlush.String()).Str("lsn", cfg.StartLSN.String()).
			Uint64("skipped_bytes", uint64(cfg.StartLSN-slot.ConfirmedFlush)).
			Msg("skipping ahead on request: transactions that commit before the start LSN are not relayed")
		s.start = cfg.StartLSN
		s.r.startLSNApplied = true
	}
	if err := s.stream.Start(ctx, cfg.Slot, []string{cfg.Publication}, s.start); err != nil {
		return err
	}

	// The stored commit time bounds the retention until this process
	// relays a transaction of its own.
	commitTime := s.r.resume.Flushed.CommitTime
	if commitTime.IsZero() && haveCheckpoint {
		commitTime = cp.LastCommitTime
	}
	s.ledger = checkpoint.NewLedger(checkpoint.Position{LSN: s.start, CommitTime: commitTime})
	s.r.decoder.Reset()

	return nil
}

func (s *session) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	if s.pub != nil {
		if err := s.pub.Close(); err != nil {
			s.r.log.Debug().Err(err).Msg("close broker connection")
		}
	}
	if s.stream != nil {
		if err := s.stream.Close(ctx); err != nil {
			s.r.log.Debug().Err(err).Msg("close replication connection")
		}
	}
	if s.db != nil {
		if err := s.db.Close(ctx); err != nil {
			s.r.log.Debug().Err(err).Msg("close Postgres connection")
		}
	}
}

// signal wakes the stream loop without blocking.
func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// saveCheckpoint stores the ledger's flushed position and, when not zero,
// the slot's decoded-transaction count. A canceled query closes the
// connection, so a closed one is replaced first.
func (s *session) saveCheckpoint(ctx context.Context, totalTxns int64) error {
	if s.ledger == nil || s.store == nil {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	if s.db.IsClosed() {
		db, err := s.r.connectPostgres(ctx)
		if err != nil {
			return err
		}
		s.db = db
		s.store = checkpoint.NewStore(db)
	}

	// One Resume call gives the position and the unfinished transaction's
	// progress as of the same instant.
	resume := s.ledger.Resume()

	return s.store.Save(ctx, checkpoint.Checkpoint{
		Slot:             s.r.cfg.Slot,
		SystemIdentifier: s.system.SystemID,
		Timeline:         s.system.Timeline,
		Flushed:          resume.Flushed.LSN,
		LastCommitTime:   resume.Flushed.CommitTime,
		SlotTotalTxns:    totalTxns,
		HeadCommitLSN:    resume.HeadCommitLSN,
		HeadConfirmed:    int64(resume.HeadConfirmed),
	})
}

// checkpointLoop stores the flushed position once per status interval when
// it has moved. A failed write is retried at the next interval: the slot,
// not this table, is what replication resumes from.
func (s *session) checkpointLoop(ctx context.Context) error {
	ticker := time.NewTicker(s.r.cfg.StatusInterval)
	defer ticker.Stop()

	var saved pglogrepl.LSN
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}

		totalTxns := s.reportSlotLag(ctx)

		flushed := s.ledger.Flushed().LSN
		if flushed == saved && s.ledger.InFlight() == 0 {
			continue
		}
		if err := s.saveCheckpoint(ctx, totalTxns); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.r.log.Warn().Err(err).Msg("cannot store checkpoint; retrying at the next status interval")
			continue
		}
		saved = flushed
	}
}

// reportSlotLag queries the slot's lag for the observer and returns its
// decoded-transaction count for the checkpoint. A failed query is logged at
// debug level only, and returns 0, which keeps the stored count: the next
// interval tries again.
func (s *session) reportSlotLag(ctx context.Context) int64 {
	slot, err := replication.LookupSlot(ctx, s.db, s.r.cfg.Slot)
	if err != nil {
		s.r.log.Debug().Err(err).Msg("cannot query slot lag")
		return 0
	}
	s.r.cfg.Observer.SlotLag(slot.LagBytes)
	return slot.TotalTxns
}
