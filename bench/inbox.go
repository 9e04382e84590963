package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/inbox"
	"github.com/walrelay/walrelay/outbox"
)

// InboxStep is the inbox consumer recording a queue of messages.
type InboxStep struct {
	// Duplicates is true when every message's id was recorded already, so
	// each delivery is a conflict that inserts nothing.
	Duplicates bool    `json:"duplicates"`
	Messages   int     `json:"messages"`
	MsgsPerS   float64 `json:"msgs_per_s"`
}

// inbox measures walrelay inbox in messages recorded per second. The
// queue is filled with Rows messages before the consumer starts. Then the
// same messages are sent again, so the consumer meets only duplicates.
func (r *runner) inbox(ctx context.Context) error {
	shape, err := newShape(ctx, r.env.db, r.cfg.PayloadBytes)
	if err != nil {
		return err
	}
	queue := r.env.queue + "_inbox"

	for _, duplicates := range []bool{false, true} {
		if err := r.fillInboxQueue(ctx, shape, queue); err != nil {
			return err
		}

		took, err := r.drainInbox(ctx, queue, duplicates)
		if err != nil {
			return err
		}

		step := InboxStep{Duplicates: duplicates, Messages: r.cfg.Rows, MsgsPerS: float64(r.cfg.Rows) / took.Seconds()}
		r.report.Inbox = append(r.report.Inbox, step)
		r.log.Info().Bool("duplicates", duplicates).Float64("msgs_per_s", step.MsgsPerS).Msg("inbox step measured")
	}

	_, err = r.env.mgmt.QueueDelete(queue, false, false, false)
	return err
}

// fillInboxQueue publishes Rows messages with ids 1..Rows, shaped as the
// relay sends them, to a queue of their own.
func (r *runner) fillInboxQueue(ctx context.Context, shape rowShape, queue string) error {
	if _, err := r.env.mgmt.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}

	pub, err := dialPublisher(r.env.amqpURL, r.cfg.MaxInFlight)
	if err != nil {
		return err
	}
	defer pub.close()

	msg, err := shape.sample(ctx, r.env.db, 1)
	if err != nil {
		return err
	}
	for i := 1; i <= r.cfg.Rows; i++ {
		msg.ID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		p, err := outbox.Encode(&msg, outbox.EncodeConfig{}, time.Now())
		if err != nil {
			return err
		}
		p.Exchange, p.RoutingKey = "", queue
		if err := pub.publish(ctx, &p); err != nil {
			return err
		}
	}
	return pub.flush(ctx)
}

// drainInbox runs the inbox consumer on queue until it has handled Rows
// deliveries, and returns how long that took.
func (r *runner) drainInbox(ctx context.Context, queue string, duplicates bool) (time.Duration, error) {
	c, err := inbox.New(inbox.Config{
		PostgresURL: r.env.dbURL,
		AMQPURL:     r.env.amqpURL,
		Queue:       queue,
		Source:      "bench",
	}, zerolog.New(io.Discard))
	if err != nil {
		return 0, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- c.Run(runCtx) }()

	want := uint64(r.cfg.Rows)
	deadline := time.Now().Add(idleTimeout + time.Duration(r.cfg.Rows)*time.Millisecond)
	for {
		s := c.Stats()
		if s.Recorded+s.Duplicates >= want {
			took := time.Since(started)
			cancel()
			<-done
			if duplicates && s.Duplicates < want {
				return 0, fmt.Errorf("inbox recorded %d of %d messages that should all be duplicates", s.Recorded, want)
			}
			if !duplicates && s.Recorded < want {
				return 0, fmt.Errorf("inbox counted %d duplicates among %d new messages", s.Duplicates, want)
			}
			return took, nil
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return 0, fmt.Errorf("inbox handled %d of %d messages before the deadline", s.Recorded+s.Duplicates, want)
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("inbox consumer stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
