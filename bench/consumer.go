package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// clock gives every goroutine of a run the same monotonic time base.
type clock struct{ epoch time.Time }

// now is the time since the run's epoch; it is always positive, so a zero
// stands for "not yet".
func (c clock) now() time.Duration {
	return max(time.Since(c.epoch), 1)
}

// receiver consumes the run's queue for one step and records when each
// expected message arrives.
//
// In counting mode it only counts deliveries. Otherwise it reads the
// sequence number that the workload wrote into the payload ("seq") and
// keeps the first receipt of each. Numbers outside [base, base+want) are
// strays from an earlier step, and it ignores them.
type receiver struct {
	clock    clock
	counting bool
	base     int64
	want     int

	ch         *amqp.Channel
	tag        string
	deliveries <-chan amqp.Delivery

	// Written by the consuming goroutine; read after finished is closed.
	receipts   []time.Duration // by seq - base; zero means not received
	count      int
	seen       atomic.Int64 // count, readable while the goroutine runs
	duplicates int
	strays     int
	last       time.Duration

	stopOnce sync.Once
	progress chan struct{} // signalled (non-blocking) on each new message
	done     chan struct{} // closed when count reaches want
	finished chan struct{} // closed when the consuming goroutine returns
}

// receive starts consuming the run's queue, with automatic acks. It fails
// while another receiver of the run still consumes.
func (e *env) receive(c clock, base int64, want int, counting bool) (*receiver, error) {
	ch, err := e.amqp.Channel()
	if err != nil {
		return nil, fmt.Errorf("open consumer channel: %w", err)
	}

	r := &receiver{
		clock:    c,
		counting: counting,
		base:     base,
		want:     want,
		ch:       ch,
		tag:      fmt.Sprintf("walrelay-bench-%d", base),
		progress: make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	if !counting {
		r.receipts = make([]time.Duration, want)
	}

	// An exclusive consumer: a second one would take every other message.
	r.deliveries, err = ch.Consume(e.queue, r.tag, true, true, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("consume queue %s: %w", e.queue, err)
	}

	go r.run()
	return r, nil
}

func (r *receiver) run() {
	defer close(r.finished)

	for d := range r.deliveries {
		now := r.clock.now()
		if !r.record(d.Body, now) {
			continue
		}

		select {
		case r.progress <- struct{}{}:
		default:
		}
		if r.count == r.want {
			r.last = now
			close(r.done)
		}
	}
}

// record notes one delivery and reports whether it was a new expected
// message.
func (r *receiver) record(body []byte, now time.Duration) bool {
	if r.count >= r.want {
		r.strays++
		return false
	}

	if r.counting {
		r.count++
		r.seen.Store(int64(r.count))
		return true
	}

	seq, ok := parseSeq(body)
	i := seq - r.base
	if !ok || i < 0 || i >= int64(r.want) {
		r.strays++
		return false
	}
	if r.receipts[i] != 0 {
		r.duplicates++
		return false
	}

	r.receipts[i] = now
	r.count++
	r.seen.Store(int64(r.count))
	return true
}

// wait returns once every expected message has arrived. It fails when no
// new message arrives for idle, when ctx is done, or when stopped is
// closed because the relay under test exited. A nil stopped never closes.
func (r *receiver) wait(ctx context.Context, idle time.Duration, stopped <-chan struct{}) error {
	timer := time.NewTimer(idle)
	defer timer.Stop()

	for {
		select {
		case <-r.done:
			return nil
		case <-r.progress:
			timer.Reset(idle)
		case <-r.finished:
			return fmt.Errorf("consumer stopped (channel closed) before all %d messages arrived", r.want)
		case <-stopped:
			return fmt.Errorf("the relay stopped after %d of %d messages", r.seen.Load(), r.want)
		case <-timer.C:
			return fmt.Errorf("no message for %s: received %d of %d", idle, r.seen.Load(), r.want)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop cancels the consumer and waits for its goroutine, after which the
// receipts may be read. It is safe to call more than once.
func (r *receiver) stop() {
	r.stopOnce.Do(func() {
		_ = r.ch.Cancel(r.tag, false)
		_ = r.ch.Close()
	})
	<-r.finished
}

// seqKey is the payload's sequence number key as jsonb prints it.
var seqKey = []byte(`"seq":`)

// parseSeq finds the first "seq": N in body.
func parseSeq(body []byte) (int64, bool) {
	i := bytes.Index(body, seqKey)
	if i < 0 {
		return 0, false
	}
	rest := body[i+len(seqKey):]
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}

	var n int64
	digits := 0
	for _, b := range rest {
		if b < '0' || b > '9' {
			break
		}
		n = n*10 + int64(b-'0')
		digits++
	}
	return n, digits > 0 && digits < 19
}
