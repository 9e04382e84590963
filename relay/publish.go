package relay

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/outbox"
	"github.com/walrelay/walrelay/sink"
)

// publishLoop encodes queued messages and publishes them in order. It is
// the only caller of Publish, so that publishes keep the queue's order and
// a broker that applies flow control blocks this loop, never the stream.
// Dead letters from the confirm loop go first.
func (s *session) publishLoop(ctx context.Context) error {
	enc := outbox.NewEncoder(outbox.EncodeConfig{Exchange: s.r.cfg.Exchange, DelayedExchange: s.r.cfg.DelayedExchange})
	delayWarn := s.r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	keepForDeadLetter := s.r.cfg.OnUnroutable == PolicyDeadLetter

	for {
		var item queued
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case item = <-s.deadLetters:
		case item, ok = <-s.queue:
			if !ok {
				return s.publishDeadLetters(ctx)
			}
		}

		if err := s.publishBurst(ctx, item, enc, delayWarn, keepForDeadLetter); err != nil {
			return err
		}
	}
}

// burstMax bounds the messages sent with one write, so a long backlog
// still reaches the broker in steady pieces.
const burstMax = 256

// publishBurst publishes item and whatever else is already queued, up to
// burstMax, with the broker socket corked, so the burst costs one write.
func (s *session) publishBurst(ctx context.Context, item queued, enc *outbox.Encoder, delayWarn zerolog.Logger, keep bool) error {
	// One clock reading serves the whole burst, which goes out in one write.
	now := time.Now()
	s.pub.Cork()
	for n := 0; ; n++ {
		if err := s.publishItem(ctx, item, now, enc, delayWarn, keep); err != nil {
			_ = s.pub.Uncork()
			return err
		}
		if n+1 >= burstMax || len(s.queue) == 0 {
			break
		}
		next, ok := <-s.queue
		if !ok {
			break
		}
		item = next
	}
	if err := s.pub.Uncork(); err != nil {
		return fmt.Errorf("send published messages: %w", err)
	}
	return nil
}

// publishItem encodes and publishes one queued item.
func (s *session) publishItem(ctx context.Context, item queued, now time.Time, enc *outbox.Encoder, delayWarn zerolog.Logger, keepForDeadLetter bool) error {
	if item.deadLetter != nil {
		return s.publish(ctx, item, now, item.deadLetter.publishing(s.r.cfg.DeadLetterExchange), true)
	}

	pub, err := enc.Encode(&item.msg, now)
	if err != nil {
		s.r.cfg.Observer.Invalid()
		if s.r.cfg.OnInvalid != PolicyDeadLetter {
			return permanent(fmt.Errorf("halting: outbox row id %q: %w; fix or remove the row, then restart walrelay", item.msg.ID, err))
		}
		item.deadLetter = &deadLetter{reason: reasonInvalid, errorText: err.Error(), messageID: item.msg.ID, raw: item.msg.Payload}
		return s.publish(ctx, item, now, item.deadLetter.publishing(s.r.cfg.DeadLetterExchange), true)
	}
	if pub.Delay > 0 && !pub.Delayed {
		delayWarn.Warn().Str("message_id", pub.MessageID).Dur("delay", pub.Delay).
			Msg("message asks for a delay but no delayed-message exchange is configured; published at once")
	}

	// The encoder reuses pub for the next message. The dead-letter policy
	// needs the message later, so it stores a copy with its own header map
	// and body.
	slot := &s.inflight[item.seq%uint64(len(s.inflight))]
	slot.pub = nil
	if keepForDeadLetter {
		stored := *pub
		stored.Headers = maps.Clone(pub.Headers)
		stored.Body = slices.Clone(pub.Body)
		slot.pub = &stored
	}
	return s.publish(ctx, item, now, *pub, false)
}

// publishDeadLetters publishes the dead letters that arrive while the
// session drains after the queue closed.
func (s *session) publishDeadLetters(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case item := <-s.deadLetters:
			if err := s.publish(ctx, item, time.Now(), item.deadLetter.publishing(s.r.cfg.DeadLetterExchange), true); err != nil {
				return err
			}
		}
	}
}

// publish sends pub as the message with sequence number item.seq and
// records now as its publish time.
func (s *session) publish(ctx context.Context, item queued, now time.Time, pub outbox.Publishing, deadLettered bool) error {
	slot := &s.inflight[item.seq%uint64(len(s.inflight))]
	slot.committed = item.commitTime
	slot.published = now
	slot.deadLettered = deadLettered

	if err := s.pub.Publish(ctx, item.seq, pub); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("publish message %q: %w", pub.MessageID, err)
	}

	s.published.Add(1)
	s.r.cfg.Observer.Published()

	return nil
}

// confirmLoop feeds broker confirms into the ledger. A nack, or a returned
// message under the retry policy, ends the session with the position held
// before it, so the next session sends it again after a backoff. It also
// ends a session whose broker has confirmed nothing for ConfirmTimeout.
func (s *session) confirmLoop(ctx context.Context) error {
	confirms := s.pub.Confirmations()
	obs := s.r.cfg.Observer

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	lastProgress := time.Now()

	for {
		var c sink.Confirmation
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := s.checkConfirmProgress(&lastProgress); err != nil {
				return err
			}
			continue
		case c, ok = <-confirms:
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("broker connection lost with %d messages unconfirmed: %w", s.ledger.InFlight(), s.pub.Err())
		}

		s.confirmed.Add(1)
		now := time.Now()
		lastProgress = now
		slot := s.inflight[c.Seq%uint64(len(s.inflight))]

		switch c.Outcome {
		case sink.Acked:
			s.ledger.Confirm(c.Seq)
			s.signal()

			obs.Confirmed(now.Sub(slot.published), now.Sub(slot.committed))
			obs.InFlight(s.ledger.InFlight())
			if slot.deadLettered {
				obs.DeadLettered()
			} else if s.r.cfg.MarkPublished {
				select {
				case s.marks <- c.MessageID:
				case <-ctx.Done():
					return nil
				}
			}

		case sink.Nacked:
			obs.Nacked()
			return fmt.Errorf("broker rejected message %q (nack) on exchange %q; retrying from the first unconfirmed message",
				c.MessageID, c.Exchange)

		case sink.Returned:
			obs.Returned()
			if err := s.handleReturn(c, slot); err != nil {
				return err
			}
		}
	}
}

// handleReturn applies the unroutable policy to a returned message.
func (s *session) handleReturn(c sink.Confirmation, slot inflight) error {
	reason := fmt.Sprintf("exchange %q, routing key %q: %d %s", c.Exchange, c.RoutingKey, c.ReplyCode, c.ReplyText)

	if slot.deadLettered {
		return fmt.Errorf("dead-letter message %q is unroutable: %s; bind a queue to the dead-letter exchange %q",
			c.MessageID, reason, s.r.cfg.DeadLetterExchange)
	}
	if s.r.cfg.OnUnroutable != PolicyDeadLetter || slot.pub == nil {
		return fmt.Errorf("message %q is unroutable: %s; bind a queue, or set --on-unroutable=dead-letter", c.MessageID, reason)
	}

	s.r.log.Error().Str("message_id", c.MessageID).Str("exchange", c.Exchange).Str("routing_key", c.RoutingKey).
		Bool("dead_lettered", true).Str("dead_letter_exchange", s.r.cfg.DeadLetterExchange).
		Msg("unroutable message sent to the dead-letter exchange")

	s.deadLetters <- queued{
		seq:        c.Seq,
		commitTime: slot.committed,
		deadLetter: &deadLetter{reason: reasonUnroutable, errorText: "unroutable: " + reason, original: slot.pub},
	}

	return nil
}

// checkConfirmProgress returns an error when published messages have
// waited ConfirmTimeout for a confirm while the broker does not block
// publishing.
func (s *session) checkConfirmProgress(lastProgress *time.Time) error {
	waiting := s.published.Load() > s.confirmed.Load()
	if !waiting || s.pub.Blocked() {
		*lastProgress = time.Now()
		return nil
	}

	if time.Since(*lastProgress) > s.r.cfg.ConfirmTimeout {
		return fmt.Errorf("no confirm from the broker for %s with %d messages published: the connection is considered hung",
			s.r.cfg.ConfirmTimeout, s.published.Load()-s.confirmed.Load())
	}

	return nil
}
