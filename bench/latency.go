package bench

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"
)

// latency measures walrelay's commit-to-receipt latency at each steady rate
// of single-row transactions.
func (r *runner) latency(ctx context.Context) (err error) {
	e := r.env
	if err := e.reset(ctx); err != nil {
		return err
	}

	slot := e.newSlot()
	defer func() { err = errors.Join(err, e.dropSlot(context.WithoutCancel(ctx), slot)) }()

	p, err := r.startRelay(ctx, slot)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.stop()) }()

	ins, err := e.openInserters(ctx, latencyConnections)
	if err != nil {
		return err
	}
	defer ins.close()

	for _, perSecond := range r.cfg.LatencyRates {
		before, err := e.counts(ctx)
		if err != nil {
			return err
		}

		p.decoded.record()
		step, err := r.latencyStep(ctx, "walrelay", ins, perSecond, p.done)
		if err != nil {
			return err
		}
		decoded := p.decoded.stop()
		step.CommitToDecodeP50MS = ms(percentile(decoded, 0.50))
		step.CommitToDecodeP99MS = ms(percentile(decoded, 0.99))

		after, err := e.counts(ctx)
		if err != nil {
			return err
		}
		step.TableRowsReadPerMsg, step.TableRowsWrittenPerMsg = perMessage(before, after, step.Messages)

		r.report.Latency = append(r.report.Latency, step)
		r.log.Info().Int("target_msgs_per_s", perSecond).Float64("p99_ms", step.P99MS).Msg("walrelay latency measured")
	}
	return nil
}

// latencyStep inserts single-row transactions at perSecond for the step
// duration while a relay runs, and takes each message's latency from the
// moment its COMMIT returned to the moment the receiver got it. stopped is
// closed when the relay under test exits.
func (r *runner) latencyStep(ctx context.Context, relayName string, ins *inserters, perSecond int, stopped <-chan struct{}) (LatencyStep, error) {
	e := r.env
	n := max(int(float64(perSecond)*r.cfg.StepDuration.Seconds()), 1)

	if _, err := e.db.Exec(ctx, "CHECKPOINT"); err != nil {
		r.log.Debug().Err(err).Msg("cannot run CHECKPOINT before the step; measuring anyway")
	}

	base := r.nextBase()
	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return LatencyStep{}, err
	}
	defer recv.stop()

	commits := make([]time.Duration, n)
	took, err := ins.insertPaced(ctx, r.clock, r.shape, base, n, perSecond, commits)
	if err != nil {
		return LatencyStep{}, err
	}
	if err := recv.wait(ctx, idleTimeout, stopped); err != nil {
		return LatencyStep{}, err
	}
	recv.stop()

	lat, early := latencies(commits, recv.receipts)
	return LatencyStep{
		Relay:                        relayName,
		TargetMsgsPerS:               perSecond,
		AchievedMsgsPerS:             rate(n, took),
		Messages:                     n,
		P50MS:                        ms(percentile(lat, 0.50)),
		P90MS:                        ms(percentile(lat, 0.90)),
		P99MS:                        ms(percentile(lat, 0.99)),
		MaxMS:                        ms(percentile(lat, 1)),
		Duplicates:                   recv.duplicates,
		ReceivedBeforeCommitReturned: early,
	}, nil
}

// latencies returns receipt minus commit for every message, sorted, with
// the messages that arrived before their commit returned counted as 0 and
// their number.
func latencies(commits, receipts []time.Duration) ([]time.Duration, int) {
	out := make([]time.Duration, len(commits))
	early := 0
	for i := range commits {
		d := receipts[i] - commits[i]
		if d < 0 {
			early++
			d = 0
		}
		out[i] = d
	}
	slices.Sort(out)
	return out, early
}

// percentile returns the nearest-rank q-quantile of sorted values (q = 1 is
// the maximum), or 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
