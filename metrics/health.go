package metrics

import (
	"fmt"
	"sync/atomic"
	"time"
)

// state is the relay state that the health checks read; the Observer
// methods write it.
type state struct {
	streaming    atomic.Bool
	everStreamed atomic.Bool
	blocked      atomic.Bool
	draining     atomic.Bool
	lastAlive    atomic.Int64 // Unix nanoseconds; 0 before the first session streams

	backfillDone  atomic.Int64
	backfillTotal atomic.Int64
}

// Live reports whether the process's loops are making progress. It fails
// only while a session streams and the stream loop has not called Alive for
// longer than the stall timeout. A relay that is not streaming is live,
// because it retries on its own; Ready reports that state. The reason says
// why it failed, or "ok".
func (m *Metrics) Live() (ok bool, reason string) {
	if stalled, reason := m.stalled(); stalled {
		return false, reason
	}

	return true, "ok"
}

// Ready reports whether the relay streams from its slot with a broker
// connection that is not blocked. The reason states what is missing, or
// what the relay is doing when it is ready.
func (m *Metrics) Ready() (ok bool, reason string) {
	s := &m.state

	switch {
	case s.draining.Load():
		return false, "shutting down: waiting for outstanding confirms"
	case !s.streaming.Load() && !s.everStreamed.Load() && s.backfillDone.Load() < s.backfillTotal.Load():
		return false, fmt.Sprintf("not streaming yet: publishing the rows from before the slot (%d of %d confirmed)",
			s.backfillDone.Load(), s.backfillTotal.Load())
	case !s.streaming.Load() && !s.everStreamed.Load():
		return false, "not streaming yet: connecting to Postgres and RabbitMQ, or waiting for them (see the log)"
	case !s.streaming.Load():
		return false, "not streaming: the last session failed and the relay is reconnecting (see the log)"
	case s.blocked.Load():
		return false, "RabbitMQ blocks publishing (connection.blocked, a memory or disk alarm on the broker)"
	}

	if stalled, reason := m.stalled(); stalled {
		return false, reason
	}

	return true, "streaming from the slot"
}

// stalled reports whether the stream loop has been silent for longer than
// the stall timeout while streaming.
func (m *Metrics) stalled() (bool, string) {
	if !m.state.streaming.Load() {
		return false, ""
	}

	silent := m.cfg.Now().Sub(time.Unix(0, m.state.lastAlive.Load()))
	if silent <= m.cfg.StallTimeout {
		return false, ""
	}

	return true, fmt.Sprintf("stream loop stuck: no progress for %s (limit %s)",
		silent.Round(time.Second), m.cfg.StallTimeout)
}
