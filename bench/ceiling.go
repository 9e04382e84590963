package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/walrelay/walrelay/outbox"
)

// ceiling measures the broker's own throughput at each in-flight window.
func (r *runner) ceiling(ctx context.Context) error {
	for _, window := range ceilingWindows {
		step, err := r.ceilingStep(ctx, r.shape, window, r.cfg.Rows)
		if err != nil {
			return err
		}
		r.report.Ceiling = append(r.report.Ceiling, step)
		r.log.Info().Int("window", window).Float64("msgs_per_s", step.MsgsPerS).Msg("broker ceiling measured")
	}
	return nil
}

// ceilingStep publishes n messages shaped like walrelay's (the same
// encoder, exchange, headers and body size) with at most window of them
// unconfirmed, while the receiver drains the queue. The rate counts from
// the first publish to the last message received.
func (r *runner) ceilingStep(ctx context.Context, shape rowShape, window, n int) (CeilingStep, error) {
	e := r.env
	if err := e.reset(ctx); err != nil {
		return CeilingStep{}, err
	}

	m, err := shape.sample(ctx, e.db, stepSpan)
	if err != nil {
		return CeilingStep{}, err
	}
	pub, err := outbox.Encode(&m, outbox.EncodeConfig{Exchange: e.exchange}, time.Now())
	if err != nil {
		return CeilingStep{}, fmt.Errorf("encode the sample message: %w", err)
	}

	p, err := dialPublisher(e.amqpURL, window)
	if err != nil {
		return CeilingStep{}, err
	}
	defer p.close()

	recv, err := e.receive(r.clock, r.nextBase(), n, true)
	if err != nil {
		return CeilingStep{}, err
	}
	defer recv.stop()

	start := r.clock.now()
	for range n {
		if err := p.publish(ctx, &pub); err != nil {
			return CeilingStep{}, err
		}
	}
	if err := p.flush(ctx); err != nil {
		return CeilingStep{}, err
	}
	if err := recv.wait(ctx, idleTimeout, nil); err != nil {
		return CeilingStep{}, err
	}

	elapsed := recv.last - start
	return CeilingStep{
		Window:    window,
		Messages:  n,
		BodyBytes: len(pub.Body),
		ElapsedMS: ms(elapsed),
		MsgsPerS:  rate(n, elapsed),
	}, nil
}

// bestCeiling is the highest ceiling rate measured, or 0.
func bestCeiling(steps []CeilingStep) float64 {
	best := 0.0
	for _, s := range steps {
		best = max(best, s.MsgsPerS)
	}
	return best
}
