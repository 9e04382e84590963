package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/outbox"
	"github.com/walrelay/walrelay/sink"
)

// publishLoop encodes queued messages and publishes them in order. It is
// the only caller of Publish, so that publishes keep the queue's order and
// a broker that applies flow control blocks this loop, never the stream.
func (s *session) publishLoop(ctx context.Context) error {
	enc := outbox.EncodeConfig{Exchange: s.r.cfg.Exchange, DelayedExchange: s.r.cfg.DelayedExchange}
	delayWarn := s.r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})

	for {
		var item queued
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case item, ok = <-s.queue:
			if !ok {
				return nil
			}
		}

		pub, err := outbox.Encode(&item.msg, enc, time.Now())
		if err != nil {
			return permanent(fmt.Errorf("halting: outbox row id %q: %w; fix or remove the row, then restart walrelay", item.msg.ID, err))
		}
		if pub.Delay > 0 && !pub.Delayed {
			delayWarn.Warn().Str("message_id", pub.MessageID).Dur("delay", pub.Delay).
				Msg("message asks for a delay but no delayed-message exchange is configured; published at once")
		}

		if err := s.pub.Publish(ctx, item.seq, pub); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("publish message %q: %w", pub.MessageID, err)
		}
	}
}

// confirmLoop feeds broker confirms into the ledger. A nack or a returned
// (unroutable) message ends the session with the flush position held
// before it, so the next session sends it again.
func (s *session) confirmLoop(ctx context.Context) error {
	confirms := s.pub.Confirmations()
	for {
		var c sink.Confirmation
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case c, ok = <-confirms:
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("broker connection lost with %d messages unconfirmed: %w", s.ledger.InFlight(), s.pub.Err())
		}

		switch c.Outcome {
		case sink.Acked:
			s.ledger.Confirm(c.Seq)
			s.signal()
		case sink.Nacked:
			return fmt.Errorf("broker rejected message %q (nack) on exchange %q", c.MessageID, c.Exchange)
		case sink.Returned:
			return fmt.Errorf("message %q is unroutable: exchange %q, routing key %q: %d %s",
				c.MessageID, c.Exchange, c.RoutingKey, c.ReplyCode, c.ReplyText)
		}
	}
}
