package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/walrelay/walrelay/inbox"
)

// Inbox holds the metrics of walrelay inbox and implements inbox.Observer.
type Inbox struct {
	registry *prometheus.Registry

	received    prometheus.Counter
	redelivered prometheus.Counter
	recorded    prometheus.Counter
	duplicates  prometheus.Counter
	rejected    prometheus.Counter
	reconnects  *prometheus.CounterVec
	connected   prometheus.Gauge

	isConnected atomic.Bool
}

// NewInbox returns the inbox metrics on a registry of their own, with the
// Go and process collectors.
func NewInbox() *Inbox {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}

	m := &Inbox{
		registry:    reg,
		received:    counter("walrelay_inbox_deliveries_received_total", "Deliveries taken from the queue."),
		redelivered: counter("walrelay_inbox_deliveries_redelivered_total", "Deliveries the broker marked as redelivered."),
		recorded:    counter("walrelay_inbox_messages_recorded_total", "Messages inserted into the inbox table and acked."),
		duplicates:  counter("walrelay_inbox_messages_duplicate_total", "Deliveries whose message the inbox table contained already; acked without a new row."),
		rejected:    counter("walrelay_inbox_messages_rejected_total", "Deliveries rejected without requeue because they cannot become an inbox row."),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walrelay_inbox_reconnects_total",
			Help: "New sessions after a failure, by the side that failed.",
		}, []string{"side"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walrelay_inbox_connected",
			Help: "1 while the consumer holds working connections to Postgres and the broker.",
		}),
	}
	reg.MustRegister(m.reconnects, m.connected)

	return m
}

// Registry returns the registry the metrics are registered in.
func (m *Inbox) Registry() *prometheus.Registry { return m.registry }

// Received counts deliveries and redeliveries.
func (m *Inbox) Received(deliveries, redelivered int) {
	m.received.Add(float64(deliveries))
	m.redelivered.Add(float64(redelivered))
}

// Recorded counts recorded messages.
func (m *Inbox) Recorded(n int) { m.recorded.Add(float64(n)) }

// Duplicates counts duplicate deliveries.
func (m *Inbox) Duplicates(n int) { m.duplicates.Add(float64(n)) }

// Rejected counts rejected deliveries.
func (m *Inbox) Rejected(n int) { m.rejected.Add(float64(n)) }

// Reconnected counts a new session after side failed.
func (m *Inbox) Reconnected(side inbox.Side) { m.reconnects.WithLabelValues(string(side)).Inc() }

// Connected sets whether both connections work.
func (m *Inbox) Connected(connected bool) {
	m.isConnected.Store(connected)
	m.connected.Set(boolValue(connected))
}

// Live reports the process as alive: the consumer's loop reconnects on its
// own and has no stall to detect beyond its connections.
func (m *Inbox) Live() (bool, string) { return true, "ok" }

// Ready reports whether the consumer is connected to Postgres and the
// broker.
func (m *Inbox) Ready() (bool, string) {
	if !m.isConnected.Load() {
		return false, "not ready: the inbox consumer is not connected to both Postgres and RabbitMQ"
	}
	return true, "ready: consuming"
}
