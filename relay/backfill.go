package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/walrelay/walrelay/backfill"
	"github.com/walrelay/walrelay/outbox"
	"github.com/walrelay/walrelay/sink"
)

// progressInterval and progressRows bound how long and over how many
// confirmed rows a backfill goes without storing its progress, which is
// where a restart resumes.
const (
	progressInterval = time.Second
	progressRows     = 1000
)

// BackfillObserver is implemented by observers that also track backfills.
type BackfillObserver interface {
	// BackfillProgress sets the rows published and confirmed so far, and
	// the rows the backfill selected at its start.
	BackfillProgress(done, total int64)
}

// rowPublisher publishes table rows with confirms, at most MaxInFlight
// unconfirmed, and reports the key of the last row whose publish and every
// earlier one the broker confirmed.
type rowPublisher struct {
	r       *Relay
	pub     *sink.Publisher
	headers map[string]any // added to every message, for replays
	rate    int            // rows per second; 0 means no limit

	// progress stores the last confirmed key. maybeReport calls it once per
	// progressInterval or progressRows confirmed rows, and at the end.
	progress func(backfill.Key) error

	total     int64
	published int64
	confirmed int64
	keys      []backfill.Key // keys of unconfirmed rows, in publish order
	sent      []time.Time    // publish times of unconfirmed rows, in the same order
	lastKey   backfill.Key
	lastSave  time.Time
	started   time.Time // first publish, for the rate limit
	lastLog   time.Time
	savedAt   int64 // confirmed count at the last progress save
}

// publishRow publishes one row, waiting for confirms while the window is
// full.
func (p *rowPublisher) publishRow(ctx context.Context, row backfill.Row) error {
	if p.rate > 0 {
		if p.started.IsZero() {
			p.started = time.Now()
		}
		due := p.started.Add(time.Duration(p.published) * time.Second / time.Duration(p.rate))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(due)):
		}
	}

	msg, err := outbox.Encode(&row.Message, outbox.EncodeConfig{
		Exchange:        p.r.cfg.Exchange,
		DelayedExchange: p.r.cfg.DelayedExchange,
	}, time.Now())
	if err != nil {
		return permanent(fmt.Errorf("backfill: outbox row id %q: %w; fix the row, then restart walrelay", row.Message.ID, err))
	}
	for k, v := range p.headers {
		msg.Headers[k] = v
	}

	p.published++
	p.keys = append(p.keys, row.Key)
	p.sent = append(p.sent, time.Now())
	if err := p.pub.Publish(ctx, uint64(p.published), msg); err != nil {
		return fmt.Errorf("backfill: publish row id %q: %w", row.Message.ID, err)
	}
	p.r.cfg.Observer.Published()

	for len(p.keys) >= p.r.cfg.MaxInFlight {
		if err := p.awaitConfirm(ctx, true); err != nil {
			return err
		}
	}
	for len(p.keys) > 0 {
		if err := p.awaitConfirm(ctx, false); err != nil {
			if err == errNoConfirm {
				break
			}
			return err
		}
	}

	return p.maybeReport(ctx, false)
}

// finish waits for every outstanding confirm and reports the final key.
func (p *rowPublisher) finish(ctx context.Context) error {
	for len(p.keys) > 0 {
		if err := p.awaitConfirm(ctx, true); err != nil {
			return err
		}
	}
	return p.maybeReport(ctx, true)
}

// errNoConfirm is returned by a non-blocking awaitConfirm when no confirm
// is waiting.
var errNoConfirm = fmt.Errorf("no confirm waiting")

// awaitConfirm takes one confirm; without block it returns errNoConfirm
// when none is waiting. Confirms arrive in publish order.
func (p *rowPublisher) awaitConfirm(ctx context.Context, block bool) error {
	var c sink.Confirmation
	var ok bool

	if block {
		timeout := time.NewTimer(p.r.cfg.ConfirmTimeout)
		defer timeout.Stop()
		select {
		case c, ok = <-p.pub.Confirmations():
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			if p.pub.Blocked() {
				return nil
			}
			return fmt.Errorf("backfill: no confirm from the broker for %s", p.r.cfg.ConfirmTimeout)
		}
	} else {
		select {
		case c, ok = <-p.pub.Confirmations():
		default:
			return errNoConfirm
		}
	}
	if !ok {
		return fmt.Errorf("backfill: broker connection lost: %w", p.pub.Err())
	}

	switch c.Outcome {
	case sink.Nacked:
		return fmt.Errorf("backfill: broker rejected row id %q (nack); retrying from the last confirmed row", c.MessageID)
	case sink.Returned:
		return fmt.Errorf("backfill: row id %q is unroutable: exchange %q, routing key %q: %d %s",
			c.MessageID, c.Exchange, c.RoutingKey, c.ReplyCode, c.ReplyText)
	}

	p.lastKey = p.keys[0]
	p.keys = p.keys[1:]
	p.confirmed++

	// A backfilled row has no commit in this stream: both latencies count
	// from the publish.
	since := time.Since(p.sent[0])
	p.sent = p.sent[1:]
	p.r.cfg.Observer.Confirmed(since, since)

	return nil
}

// maybeReport stores and logs progress once per progressInterval, or now
// with force.
func (p *rowPublisher) maybeReport(ctx context.Context, force bool) error {
	if !force && time.Since(p.lastSave) < progressInterval && p.confirmed-p.savedAt < progressRows {
		return nil
	}
	if time.Since(p.lastLog) >= progressInterval || force {
		p.lastLog = time.Now()
		p.r.log.Info().Int64("done", p.confirmed).Int64("total", p.total).Msg("backfill progress")
	}
	p.lastSave = time.Now()
	p.savedAt = p.confirmed

	if obs, ok := p.r.cfg.Observer.(BackfillObserver); ok {
		obs.BackfillProgress(p.confirmed, p.total)
	}
	if p.r.cfg.BackfillProgress != nil {
		p.r.cfg.BackfillProgress(p.confirmed, p.total)
	}
	if p.progress == nil || p.lastKey == (backfill.Key{}) {
		return nil
	}
	return p.progress(p.lastKey)
}
