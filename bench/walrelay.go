package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/metrics"
	"github.com/walrelay/walrelay/relay"
)

// inProcess is a walrelay relay running in this process.
type inProcess struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returns
	err     error         // Run's result, valid after done
	decoded *decodeRecorder
}

// decodeRecorder passes the relay's events on to its metrics and, while
// recording, keeps each commit-to-decode time.
type decodeRecorder struct {
	relay.Observer

	mu        sync.Mutex
	recording bool
	samples   []time.Duration
}

// Decoded passes the sample on and keeps it while recording.
func (d *decodeRecorder) Decoded(sinceCommit time.Duration) {
	d.Observer.Decoded(sinceCommit)
	d.mu.Lock()
	if d.recording {
		d.samples = append(d.samples, sinceCommit)
	}
	d.mu.Unlock()
}

// record starts keeping samples, dropping any from an earlier step.
func (d *decodeRecorder) record() {
	d.mu.Lock()
	d.recording, d.samples = true, d.samples[:0]
	d.mu.Unlock()
}

// stop ends the recording and returns the samples, sorted.
func (d *decodeRecorder) stop() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recording = false
	out := slices.Clone(d.samples)
	slices.Sort(out)
	return out
}

// startRelay starts a relay on slot and returns once it streams, so that
// every row committed afterwards is relayed. The slot is created when it is
// missing. The relay records its metrics as `walrelay run` does, without
// serving them.
func (r *runner) startRelay(ctx context.Context, slot string) (*inProcess, error) {
	log := r.log.With().Str("component", "relay").Logger()
	log = log.Level(max(zerolog.WarnLevel, r.log.GetLevel()))

	decoded := &decodeRecorder{Observer: metrics.New(metrics.Config{})}
	rl, err := relay.New(relay.Config{
		PostgresURL:       r.env.dbURL,
		AMQPURL:           r.env.amqpURL,
		Exchange:          r.env.exchange,
		NoDeclareExchange: true,
		Table:             outboxTable,
		Publication:       publication,
		Slot:              slot,
		MaxInFlight:       r.cfg.MaxInFlight,
		Observer:          decoded,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("configure the relay: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	p := &inProcess{cancel: cancel, done: make(chan struct{}), decoded: decoded}
	go func() {
		// The label separates the relay's goroutines, amqp091's among
		// them, from the benchmark's own in a CPU profile (--cpu-profile).
		pprof.Do(runCtx, pprof.Labels("component", "walrelay"), func(ctx context.Context) {
			p.err = rl.Run(ctx)
		})
		close(p.done)
	}()

	select {
	case <-rl.Streaming():
		return p, nil
	case <-p.done:
		cancel()
		if p.err == nil {
			// Run returns nil when ctx ends, which is the only clean stop.
			return nil, fmt.Errorf("relay stopped before it streamed: %w", context.Cause(ctx))
		}
		return nil, fmt.Errorf("relay stopped before it streamed: %w", p.err)
	case <-time.After(idleTimeout):
		_ = p.stop()
		return nil, fmt.Errorf("relay did not stream from slot %s within %s", slot, idleTimeout)
	}
}

// stop cancels the relay and waits for Run to return its result.
func (p *inProcess) stop() error {
	p.cancel()
	<-p.done
	if p.err != nil {
		return fmt.Errorf("relay failed: %w", p.err)
	}
	return nil
}

// backlog measures walrelay draining Rows rows committed before it starts.
func (r *runner) backlog(ctx context.Context) error {
	d, err := r.walrelayDrain(ctx, r.shape, r.cfg.Rows)
	if err != nil {
		return err
	}

	r.report.Backlog = d
	r.log.Info().Float64("msgs_per_s", d.MsgsPerS).Msg("walrelay backlog drained")
	return nil
}

// walrelayDrain starts a relay once to create its slot and stops it,
// inserts n rows in 100-row transactions, then starts the relay again and
// times it from that start to the last message received.
func (r *runner) walrelayDrain(ctx context.Context, shape rowShape, n int) (_ *Drain, err error) {
	e := r.env
	if err := e.reset(ctx); err != nil {
		return nil, err
	}

	slot := e.newSlot()
	defer func() { err = errors.Join(err, e.dropSlot(context.WithoutCancel(ctx), slot)) }()

	p, err := r.startRelay(ctx, slot)
	if err != nil {
		return nil, err
	}
	if err := p.stop(); err != nil {
		return nil, err
	}

	base := r.nextBase()
	insertMS, err := r.insertBacklog(ctx, shape, base, n)
	if err != nil {
		return nil, err
	}

	before, err := e.counts(ctx)
	if err != nil {
		return nil, err
	}

	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return nil, err
	}
	defer recv.stop()

	start := r.clock.now()
	p, err = r.startRelay(ctx, slot)
	if err != nil {
		return nil, err
	}
	waitErr := recv.wait(ctx, idleTimeout, p.done)
	if err := errors.Join(waitErr, p.stop()); err != nil {
		return nil, err
	}
	recv.stop()

	after, err := e.counts(ctx)
	if err != nil {
		return nil, err
	}

	elapsed := recv.last - start
	d := &Drain{
		Relay:      "walrelay",
		Messages:   n,
		RowsPerTx:  backlogRowsPerTx,
		InsertMS:   insertMS,
		ElapsedMS:  ms(elapsed),
		MsgsPerS:   rate(n, elapsed),
		Duplicates: recv.duplicates,
	}
	d.TableRowsReadPerMsg, d.TableRowsWrittenPerMsg = perMessage(before, after, n)
	return d, nil
}

// insertBacklog inserts rows base to base+n-1 in 100-row transactions over
// the configured connections and returns how long that took, in ms.
func (r *runner) insertBacklog(ctx context.Context, shape rowShape, base int64, n int) (float64, error) {
	ins, err := r.env.openInserters(ctx, r.cfg.Connections)
	if err != nil {
		return 0, err
	}
	defer ins.close()

	start := r.clock.now()
	last, err := ins.insertAll(ctx, r.clock, shape, base, n, backlogRowsPerTx, nil)
	if err != nil {
		return 0, err
	}
	return ms(last - start), nil
}

// live measures walrelay while several connections insert Rows rows, in
// single-row and in 100-row transactions.
func (r *runner) live(ctx context.Context) (err error) {
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

	for _, perTx := range liveRowsPerTx {
		step, err := r.liveStep(ctx, p, perTx)
		if err != nil {
			return err
		}
		r.report.Live = append(r.report.Live, step)
		r.log.Info().Int("rows_per_tx", perTx).Float64("msgs_per_s", step.MsgsPerS).
			Float64("trail_p99_ms", step.TrailP99MS).Msg("walrelay live step measured")
	}
	return nil
}

func (r *runner) liveStep(ctx context.Context, p *inProcess, perTx int) (LiveStep, error) {
	e := r.env
	n := r.cfg.Rows

	ins, err := e.openInserters(ctx, r.cfg.Connections)
	if err != nil {
		return LiveStep{}, err
	}
	defer ins.close()

	base := r.nextBase()
	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return LiveStep{}, err
	}
	defer recv.stop()

	commits := make([]time.Duration, n)
	start := r.clock.now()
	lastCommit, err := ins.insertAll(ctx, r.clock, r.shape, base, n, perTx, commits)
	if err != nil {
		return LiveStep{}, err
	}
	if err := recv.wait(ctx, idleTimeout, p.done); err != nil {
		return LiveStep{}, err
	}
	recv.stop()

	trail, _ := latencies(commits, recv.receipts)
	return LiveStep{
		RowsPerTx:      perTx,
		Connections:    r.cfg.Connections,
		Messages:       n,
		InsertMsgsPerS: rate(n, lastCommit-start),
		MsgsPerS:       rate(n, recv.last-start),
		TrailP50MS:     ms(percentile(trail, 0.50)),
		TrailP99MS:     ms(percentile(trail, 0.99)),
		TrailMaxMS:     ms(percentile(trail, 1)),
		TailMS:         ms(recv.last - lastCommit),
		Duplicates:     recv.duplicates,
	}, nil
}
