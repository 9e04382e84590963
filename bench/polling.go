package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// polling measures the polling relay at each poll interval: a backlog drain
// (with its CPU cost) and the latency steps, with the outbox table's row
// counters for each.
func (r *runner) polling(ctx context.Context) error {
	for _, interval := range pollIntervals {
		run := PollingRun{IntervalMS: interval.Milliseconds()}

		drain, cpu, err := r.pollingDrain(ctx, interval)
		if err != nil {
			return err
		}
		run.Backlog, run.CPU = drain, cpu
		r.log.Info().Dur("interval", interval).Float64("msgs_per_s", drain.MsgsPerS).Msg("polling backlog drained")

		run.Latency, err = r.pollingLatency(ctx, interval)
		if err != nil {
			return err
		}

		r.report.Polling = append(r.report.Polling, run)
	}
	return nil
}

// startPoller starts the polling relay as a separate process.
func (r *runner) startPoller(interval time.Duration) (*child, error) {
	return r.startChild("polling relay", "bench", "poll",
		"--exchange", r.env.exchange,
		"--interval", interval.String(),
		"--batch-size", strconv.Itoa(pollBatch),
		"--log-level", "warn")
}

// pollingDrain inserts Rows rows in 100-row transactions, then starts the
// polling relay and times it from that start to the last message received.
func (r *runner) pollingDrain(ctx context.Context, interval time.Duration) (*Drain, *ProcessCPU, error) {
	e := r.env
	n := r.cfg.Rows
	if err := e.reset(ctx); err != nil {
		return nil, nil, err
	}

	base := r.nextBase()
	insertMS, err := r.insertBacklog(ctx, r.shape, base, n)
	if err != nil {
		return nil, nil, err
	}
	if err := e.analyze(ctx); err != nil {
		return nil, nil, err
	}

	before, err := e.counts(ctx)
	if err != nil {
		return nil, nil, err
	}

	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return nil, nil, err
	}
	defer recv.stop()

	start := r.clock.now()
	c, err := r.startPoller(interval)
	if err != nil {
		return nil, nil, err
	}
	if err := c.await(ctx, recv); err != nil {
		return nil, nil, errors.Join(err, c.stop())
	}
	elapsed := recv.last - start

	cpu, err := r.measureCPU(ctx, c, n, elapsed)
	if err := errors.Join(err, c.stop()); err != nil {
		return nil, nil, err
	}
	recv.stop()

	after, err := e.counts(ctx)
	if err != nil {
		return nil, nil, err
	}

	d := &Drain{
		Relay:      fmt.Sprintf("polling %s", interval),
		Messages:   n,
		RowsPerTx:  backlogRowsPerTx,
		InsertMS:   insertMS,
		ElapsedMS:  ms(elapsed),
		MsgsPerS:   rate(n, elapsed),
		Duplicates: recv.duplicates,
	}
	d.TableRowsReadPerMsg, d.TableRowsWrittenPerMsg = perMessage(before, after, n)
	return d, cpu, nil
}

// pollingLatency runs the latency steps against the polling relay. Each
// step has its own relay process, so that the table counters it flushes at
// exit belong to that step alone. The table keeps the rows the backlog
// drain published, so that it looks like an outbox in steady use: many
// published rows, few pending ones, and statistics that match.
func (r *runner) pollingLatency(ctx context.Context, interval time.Duration) ([]LatencyStep, error) {
	e := r.env
	if err := e.analyze(ctx); err != nil {
		return nil, err
	}

	ins, err := e.openInserters(ctx, latencyConnections)
	if err != nil {
		return nil, err
	}
	defer ins.close()

	var steps []LatencyStep
	for _, perSecond := range r.cfg.LatencyRates {
		before, err := e.counts(ctx)
		if err != nil {
			return nil, err
		}

		c, err := r.startPoller(interval)
		if err != nil {
			return nil, err
		}
		step, err := r.latencyStep(ctx, fmt.Sprintf("polling %s", interval), ins, perSecond, c.done)
		if err := errors.Join(err, c.stop()); err != nil {
			return nil, err
		}

		after, err := e.counts(ctx)
		if err != nil {
			return nil, err
		}
		step.TableRowsReadPerMsg, step.TableRowsWrittenPerMsg = perMessage(before, after, step.Messages)

		steps = append(steps, step)
		r.log.Info().Dur("interval", interval).Int("target_msgs_per_s", perSecond).Float64("p99_ms", step.P99MS).Msg("polling latency measured")
	}
	return steps, nil
}
