package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/replication"
)

// statusDebounce is the shortest gap between two standby status updates
// sent because the flush position advanced.
const statusDebounce = 100 * time.Millisecond

// streamState is the stream loop's own bookkeeping.
type streamState struct {
	lastSent     pglogrepl.LSN
	lastSentAt   time.Time
	lastReceived time.Time
	pinged       bool      // a status update with reply requested is unanswered
	nextCheck    time.Time // when the loop next checks status and health

	// commitTime is the commit time of the transaction being read.
	commitTime time.Time

	// skipLeft counts the leading messages of the current transaction that
	// an earlier session already had confirmed.
	skipLeft int

	// timeDecode is set while the current transaction is one whose rows
	// this process has not reported to Observer.Decoded before.
	timeDecode bool
}

// streamLoop owns the replication connection. It reads and decodes while
// fewer than MaxInFlight messages are unconfirmed and sends standby status
// updates on time whether or not it is reading. When stopCtx is canceled it
// stops reading, waits up to ShutdownTimeout for the outstanding confirms,
// sends a final status update and returns nil.
func (s *session) streamLoop(stopCtx, ctx context.Context) error {
	cfg := s.r.cfg
	st := &streamState{lastReceived: time.Now(), lastSentAt: time.Now(), lastSent: s.start}

	for {
		if stopCtx.Err() != nil {
			return s.drain(ctx, st)
		}
		if ctx.Err() != nil {
			return nil
		}

		now := time.Now()
		if !now.Before(st.nextCheck) {
			s.r.cfg.Observer.Alive(now)
			s.r.cfg.Observer.BrokerBlocked(s.pub.Blocked())
			if err := s.maybeSendStatus(st, now, false); err != nil {
				return err
			}
			st.nextCheck = now.Add(statusDebounce)
		}

		if s.ledger.InFlight() >= cfg.MaxInFlight {
			select {
			case <-s.wake:
			case <-time.After(time.Until(st.nextCheck)):
			case <-stopCtx.Done():
			case <-ctx.Done():
			}
			// The server's messages wait unread meanwhile, so silence is
			// not the server's fault.
			st.lastReceived = time.Now()
			continue
		}

		msg, err := s.stream.Receive(st.nextCheck)
		if err != nil {
			return err
		}

		switch msg.Kind {
		case replication.KindTimeout:
			if time.Since(st.lastReceived) > cfg.ReceiveTimeout {
				return fmt.Errorf("no message from Postgres for %s on slot %q: the replication connection is considered dead",
					cfg.ReceiveTimeout, cfg.Slot)
			}
			continue
		case replication.KindKeepalive:
			st.lastReceived = time.Now()
			st.pinged = false
			if s.ledger.Idle(msg.ServerWALEnd) || msg.ReplyRequested {
				if err := s.maybeSendStatus(st, time.Now(), msg.ReplyRequested); err != nil {
					return err
				}
			}
		case replication.KindXLogData:
			st.lastReceived = time.Now()
			st.pinged = false
			if err := s.handleWAL(st, msg); err != nil {
				return err
			}
		}
	}
}

// handleWAL decodes one XLogData message and feeds the ledger and the
// publish queue.
func (s *session) handleWAL(st *streamState, msg replication.Message) error {
	ev, err := s.r.decoder.Decode(msg.WALStart, msg.Data)
	if err != nil {
		var rowErr *decode.RowError
		if errors.As(err, &rowErr) {
			s.r.cfg.Observer.Invalid()
			if s.r.cfg.OnInvalid == PolicyDeadLetter {
				return s.enqueueInvalid(st, rowErr)
			}
			if rowErr.Logical {
				return permanent(fmt.Errorf("halting at %s: %w; a logical decoding message cannot be changed, so restart walrelay "+
					"with --on-invalid=dead-letter --dead-letter-exchange NAME to set it aside, or with --start-lsn past %s to skip it",
					msg.WALStart, err, msg.WALStart))
			}
			return permanent(fmt.Errorf("halting at %s: %w; fix the row (or set --on-invalid=dead-letter), then restart walrelay", msg.WALStart, err))
		}
		return permanent(fmt.Errorf("decode pgoutput message at %s: %w", msg.WALStart, err))
	}

	switch ev.Kind {
	case decode.KindBegin:
		if err := s.ledger.Begin(ev.CommitLSN, ev.CommitTime); err != nil {
			return err
		}
		st.commitTime = ev.CommitTime
		st.timeDecode = ev.CommitLSN > s.r.decodeTimedThrough
		if st.timeDecode {
			s.r.decodeTimedThrough = ev.CommitLSN
		}
		st.skipLeft = 0
		if ev.CommitLSN == s.r.resume.HeadCommitLSN {
			st.skipLeft = s.r.resume.HeadConfirmed
		}

	case decode.KindMessage:
		if !ev.Transactional {
			return s.enqueueStandalone(ev)
		}
		if st.skipLeft > 0 {
			st.skipLeft--
			return nil
		}
		seq, err := s.ledger.Add()
		if err != nil {
			return err
		}
		if st.timeDecode {
			s.r.cfg.Observer.Decoded(st.lastReceived.Sub(st.commitTime))
		}
		s.queue <- queued{seq: seq, msg: ev.Message, commitTime: st.commitTime}

	case decode.KindCommit:
		if _, err := s.ledger.Commit(ev.EndLSN); err != nil {
			return err
		}
	}

	return nil
}

// enqueueStandalone relays a non-transactional logical decoding message as
// a transaction of its own that ends just past the message's LSN, so that a
// restart after its confirm does not send it again.
func (s *session) enqueueStandalone(ev decode.Event) error {
	if ev.Message.CreatedAt.IsZero() {
		ev.Message.CreatedAt = time.Now().UTC()
	}
	if err := s.ledger.Begin(ev.LSN, ev.Message.CreatedAt); err != nil {
		return err
	}

	seq, err := s.ledger.Add()
	if err != nil {
		return err
	}
	s.queue <- queued{seq: seq, msg: ev.Message, commitTime: ev.Message.CreatedAt}

	_, err = s.ledger.Commit(ev.LSN + 1)
	return err
}

// maybeSendStatus sends a standby status update when the flush position
// moved (at most once per statusDebounce), when the status interval passed,
// or when force is set. After a status interval of silence from the server
// it requests a reply, so that a live connection is never silent for
// ReceiveTimeout and the stream loop can count silence as death.
func (s *session) maybeSendStatus(st *streamState, now time.Time, force bool) error {
	flushed := s.ledger.Flushed().LSN
	since := now.Sub(st.lastSentAt)

	due := force ||
		(flushed != st.lastSent && since >= statusDebounce) ||
		since >= s.r.cfg.StatusInterval
	if !due {
		return nil
	}

	askReply := !st.pinged && now.Sub(st.lastReceived) >= s.r.cfg.StatusInterval
	if err := s.stream.SendStatus(flushed, askReply); err != nil {
		return err
	}
	if askReply {
		st.pinged = true
	}

	if flushed != st.lastSent {
		s.r.cfg.Observer.Flushed(flushed)
		s.r.log.Debug().Str("lsn", flushed.String()).Msg("flush position reported")
	}
	st.lastSent = flushed
	st.lastSentAt = now

	return nil
}

// drain stops reading, lets the publish loop finish the queue, waits for
// the outstanding confirms and reports the final flush position.
func (s *session) drain(ctx context.Context, st *streamState) error {
	close(s.queue)

	deadline := time.Now().Add(s.r.cfg.ShutdownTimeout)
	for s.ledger.InFlight() > 0 && time.Now().Before(deadline) {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil
		case <-time.After(statusDebounce):
		}
		if err := s.maybeSendStatus(st, time.Now(), false); err != nil {
			return err
		}
	}

	if n := s.ledger.InFlight(); n > 0 {
		s.r.log.Warn().Int("in_flight", n).Dur("timeout", s.r.cfg.ShutdownTimeout).
			Msg("shutdown timeout reached with unconfirmed messages; they will be sent again at the next start")
	}

	return s.maybeSendStatus(st, time.Now(), true)
}

// enqueueInvalid queues a row that cannot become a message for the
// dead-letter exchange, in its place in the log, so the position passes it
// only once the broker confirms the dead-letter message.
func (s *session) enqueueInvalid(st *streamState, rowErr *decode.RowError) error {
	item := queued{
		commitTime: st.commitTime,
		deadLetter: &deadLetter{
			reason:    reasonInvalid,
			errorText: rowErr.Error(),
			messageID: rowErr.RowID,
			raw:       rowErr.Raw,
			lsn:       rowErr.LSN.String(),
			timestamp: st.commitTime,
		},
	}
	if item.deadLetter.messageID == "" {
		// No id could be read: name the dead letter by its WAL position,
		// which is stable across replays.
		item.deadLetter.messageID = "lsn:" + rowErr.LSN.String()
	}

	if rowErr.Standalone {
		if err := s.ledger.Begin(rowErr.LSN, time.Now().UTC()); err != nil {
			return err
		}
	} else if st.skipLeft > 0 {
		st.skipLeft--
		return nil
	}

	seq, err := s.ledger.Add()
	if err != nil {
		return err
	}
	item.seq = seq
	s.queue <- item

	s.r.log.Error().Str("message_id", item.deadLetter.messageID).Str("lsn", rowErr.LSN.String()).Str("column", rowErr.Column).
		Bool("dead_lettered", true).Str("dead_letter_exchange", s.r.cfg.DeadLetterExchange).Err(rowErr).
		Msg("publishing an invalid outbox row to the dead-letter exchange instead of relaying it")

	if rowErr.Standalone {
		_, err = s.ledger.Commit(rowErr.LSN + 1)
	}
	return err
}
