package bench

import (
	"context"
	"errors"
	"slices"
	"strconv"
)

// startRelayProcess starts `walrelay run` on slot as a separate process.
// Its metrics and health server listens on a free loopback port, so that it
// collects its metrics as by default without clashing with another relay.
func (r *runner) startRelayProcess(slot string) (*child, error) {
	return r.startChild("walrelay run", "run",
		"--http-addr", "127.0.0.1:0",
		"--exchange", r.env.exchange,
		"--declare-exchange=false",
		"--table", outboxTable,
		"--publication", publication,
		"--slot", slot,
		"--max-in-flight", strconv.Itoa(r.cfg.MaxInFlight),
		"--log-level", "warn")
}

// cpu measures the CPU time per message of walrelay, run as a separate
// process, on a backlog of Rows rows, and reports it next to the polling
// relay's (100 ms interval) on the same backlog. The polling figure comes
// from the polling scenario when it ran, and is measured here otherwise.
func (r *runner) cpu(ctx context.Context) (err error) {
	e := r.env
	n := r.cfg.Rows
	if err := e.reset(ctx); err != nil {
		return err
	}

	slot := e.newSlot()
	defer func() { err = errors.Join(err, e.dropSlot(context.WithoutCancel(ctx), slot)) }()

	// The first process creates the slot, so the backlog is in its stream.
	c, err := r.startRelayProcess(slot)
	if err != nil {
		return err
	}
	if err := errors.Join(e.waitSlotActive(ctx, slot, c.done), c.stop()); err != nil {
		return err
	}

	base := r.nextBase()
	if _, err := r.insertBacklog(ctx, r.shape, base, n); err != nil {
		return err
	}

	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return err
	}
	defer recv.stop()

	start := r.clock.now()
	c, err = r.startRelayProcess(slot)
	if err != nil {
		return err
	}
	if err := c.await(ctx, recv); err != nil {
		return errors.Join(err, c.stop())
	}
	walrelay, err := r.measureCPU(ctx, c, n, recv.last-start)
	if err := errors.Join(err, c.stop()); err != nil {
		return err
	}
	recv.stop()

	cost := &CPUCost{Walrelay: walrelay}
	if len(r.report.Polling) > 0 {
		cost.Polling = r.report.Polling[0].CPU
	} else if !slices.Contains(r.cfg.Scenarios, ScenarioPolling) {
		_, cost.Polling, err = r.pollingDrain(ctx, pollIntervals[0])
		if err != nil {
			return err
		}
	}

	r.report.CPU = cost
	r.log.Info().Float64("relay_cpu_ms_per_100k_msgs", walrelay.RelayCPUMSPer100k).Msg("walrelay CPU measured")
	return nil
}

// rss measures the peak resident set of walrelay, run as a separate
// process, while it relays one transaction of RSSRows rows.
func (r *runner) rss(ctx context.Context) (err error) {
	e := r.env
	n := r.cfg.RSSRows
	if err := e.reset(ctx); err != nil {
		return err
	}

	slot := e.newSlot()
	defer func() { err = errors.Join(err, e.dropSlot(context.WithoutCancel(ctx), slot)) }()

	c, err := r.startRelayProcess(slot)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()

	if err := e.waitSlotActive(ctx, slot, c.done); err != nil {
		return err
	}
	idle, err := procPeakRSS(c.pid())
	if err != nil {
		return err
	}

	base := r.nextBase()
	recv, err := e.receive(r.clock, base, n, false)
	if err != nil {
		return err
	}
	defer recv.stop()

	conn, err := connect(ctx, e.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	start := r.clock.now()
	if err := insertOne(ctx, conn, r.shape, base, base+int64(n)-1); err != nil {
		return err
	}
	committed := r.clock.now()

	if err := c.await(ctx, recv); err != nil {
		return err
	}
	peak, err := procPeakRSS(c.pid())
	if err != nil {
		return err
	}
	recv.stop()

	r.report.RSS = &RSSPeak{
		Rows:         n,
		InsertMS:     ms(committed - start),
		RelayMS:      ms(recv.last - committed),
		MsgsPerS:     rate(n, recv.last-committed),
		IdleRSSBytes: idle,
		PeakRSSBytes: peak,
		MaxInFlight:  r.cfg.MaxInFlight,
		Duplicates:   recv.duplicates,
	}
	r.log.Info().Int64("peak_rss_bytes", peak).Msg("walrelay peak RSS measured")
	return nil
}
