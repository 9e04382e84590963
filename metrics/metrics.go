package metrics

import (
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/walrelay/walrelay/relay"
)

// namespace prefixes every metric name.
const namespace = "walrelay"

// DefaultStallTimeout is how long the stream loop may go without calling
// Alive while the relay streams before /healthz reports it as stuck. The
// loop calls Alive every 100 ms, and its longest blocking step (a write to
// the replication connection) times out after 10 s.
const DefaultStallTimeout = 30 * time.Second

// Latency buckets, in seconds. Publish to confirm is a broker round trip,
// usually milliseconds. Commit to confirm also includes the time a message
// waits in the WAL, which grows to minutes after a backlog.
var (
	publishConfirmBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	commitConfirmBuckets  = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Config configures Metrics. The zero value of a field means its default.
type Config struct {
	// StallTimeout is how long the stream loop may go without calling
	// Alive while streaming before the relay counts as stuck. Default
	// DefaultStallTimeout.
	StallTimeout time.Duration

	// Version is the walrelay version reported by walrelay_build_info.
	// Default "unknown".
	Version string

	// Now returns the current time; tests replace it. Default time.Now.
	Now func() time.Time
}

// Metrics collects the relay's events as Prometheus metrics and tracks its
// health. It implements relay.Observer; all methods are safe for
// concurrent use.
type Metrics struct {
	cfg      Config
	registry *prometheus.Registry
	state    state

	published      prometheus.Counter
	confirmed      prometheus.Counter
	nacked         prometheus.Counter
	returned       prometheus.Counter
	invalid        prometheus.Counter
	deadLettered   prometheus.Counter
	inFlight       prometheus.Gauge
	publishConfirm prometheus.Histogram
	commitConfirm  prometheus.Histogram
	commitDecode   prometheus.Histogram
	flushLSN       prometheus.Gauge
	reconnects     *prometheus.CounterVec
	brokerBlocked  prometheus.Gauge
	streaming      prometheus.Gauge
	backfillTotal  prometheus.Gauge
	backfillDone   prometheus.Gauge
	retained       prometheus.Counter

	// slotLag is registered on the first SlotLag call, so that a scrape
	// before the first query shows no value instead of a false zero.
	slotLag         prometheus.Gauge
	slotLagRegister sync.Once
}

var (
	_ relay.Observer         = (*Metrics)(nil)
	_ relay.BackfillObserver = (*Metrics)(nil)
)

// New returns Metrics with its own registry, which also holds the Go
// runtime and process collectors.
func New(cfg Config) *Metrics {
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	m := &Metrics{cfg: cfg, registry: prometheus.NewRegistry()}

	m.published = m.counter("messages_published_total", "Messages handed to the broker.")
	m.confirmed = m.counter("messages_confirmed_total", "Messages the broker confirmed (acked).")
	m.nacked = m.counter("messages_nacked_total", "Messages the broker rejected with a nack.")
	m.returned = m.counter("messages_returned_total", "Unroutable messages the broker returned.")
	m.invalid = m.counter("messages_invalid_total", "Outbox rows that could not become a message.")
	m.deadLettered = m.counter("messages_dead_lettered_total", "Messages sent to the dead-letter exchange.")

	m.inFlight = m.gauge("messages_in_flight", "Messages published but not yet confirmed.")
	m.flushLSN = m.gauge("flush_lsn",
		"Position last reported to Postgres as flushed, as a number of bytes of WAL (exact up to 2^53).")
	m.brokerBlocked = m.gauge("broker_blocked", "1 while the broker blocks publishing (connection.blocked), else 0.")
	m.streaming = m.gauge("streaming", "1 while a session streams from the slot with a broker connection, else 0.")
	m.backfillTotal = m.gauge("backfill_rows",
		"Rows from before the slot that the running or last backfill selected; 0 before any backfill.")
	m.backfillDone = m.gauge("backfill_rows_confirmed", "Rows of the running or last backfill that the broker confirmed.")
	m.retained = m.counter("retention_rows_deleted_total", "Relayed outbox rows deleted by --retention.")
	m.slotLag = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "slot_lag_bytes",
		Help:      "Bytes of WAL between the server's current position and the slot's confirmed position, queried at each status interval.",
	})

	m.publishConfirm = m.histogram("publish_confirm_latency_seconds",
		"Time from publishing a message to the broker's confirm.", publishConfirmBuckets)
	m.commitConfirm = m.histogram("commit_confirm_latency_seconds",
		"Time from the transaction's commit in Postgres to the broker's confirm of its message.", commitConfirmBuckets)
	m.commitDecode = m.histogram("commit_decode_latency_seconds",
		"Time from the transaction's commit in Postgres to walrelay reading its row from the replication stream.", commitConfirmBuckets)

	m.reconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "reconnects_total",
		Help:      "New connections after a failure, by side (postgres or broker).",
	}, []string{"side"})
	m.registry.MustRegister(m.reconnects)
	m.reconnects.WithLabelValues(string(relay.SidePostgres))
	m.reconnects.WithLabelValues(string(relay.SideBroker))

	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "stream_alive_timestamp_seconds",
		Help:      "Unix time of the stream loop's last sign of progress; 0 before the first session streams.",
	}, m.lastAliveSeconds))

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels name the walrelay and Go versions.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.registry.MustRegister(buildInfo)

	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	return m
}

// Registry returns the registry that holds every walrelay collector, for
// serving or for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	return m.registry
}

func (m *Metrics) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	m.registry.MustRegister(c)
	return c
}

func (m *Metrics) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	m.registry.MustRegister(g)
	return g
}

func (m *Metrics) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	m.registry.MustRegister(h)
	return h
}

func (m *Metrics) lastAliveSeconds() float64 {
	at := m.state.lastAlive.Load()
	if at == 0 {
		return 0
	}
	return float64(at) / float64(time.Second)
}

// Decoded records the time from a commit to walrelay reading its row. A
// negative time (the Postgres server's clock ahead of this host's) is
// recorded as zero.
func (m *Metrics) Decoded(sinceCommit time.Duration) {
	m.commitDecode.Observe(max(sinceCommit, 0).Seconds())
}

// Published counts a message handed to the broker.
func (m *Metrics) Published() { m.published.Inc() }

// Confirmed counts a confirmed message and records its latencies. A
// negative commit latency (the Postgres server's clock ahead of this host's)
// is recorded as zero.
func (m *Metrics) Confirmed(sincePublish, sinceCommit time.Duration) {
	m.confirmed.Inc()
	m.publishConfirm.Observe(max(sincePublish, 0).Seconds())
	m.commitConfirm.Observe(max(sinceCommit, 0).Seconds())
}

// Nacked counts a message the broker rejected.
func (m *Metrics) Nacked() { m.nacked.Inc() }

// Returned counts an unroutable message.
func (m *Metrics) Returned() { m.returned.Inc() }

// Invalid counts a row that cannot become a message.
func (m *Metrics) Invalid() { m.invalid.Inc() }

// DeadLettered counts a message sent to the dead-letter exchange.
func (m *Metrics) DeadLettered() { m.deadLettered.Inc() }

// InFlight sets the number of unconfirmed messages.
func (m *Metrics) InFlight(n int) { m.inFlight.Set(float64(n)) }

// Flushed sets the flush position.
func (m *Metrics) Flushed(lsn pglogrepl.LSN) { m.flushLSN.Set(float64(lsn)) }

// SlotLag sets the slot's lag in bytes.
func (m *Metrics) SlotLag(bytes int64) {
	m.slotLagRegister.Do(func() { m.registry.MustRegister(m.slotLag) })
	m.slotLag.Set(float64(bytes))
}

// Reconnected counts a new connection to side.
func (m *Metrics) Reconnected(side relay.Side) { m.reconnects.WithLabelValues(string(side)).Inc() }

// BrokerBlocked sets whether the broker blocks publishing.
func (m *Metrics) BrokerBlocked(blocked bool) {
	m.state.blocked.Store(blocked)
	m.brokerBlocked.Set(boolValue(blocked))
}

// Streaming sets whether a session streams. A session that starts counts as
// alive from that moment, so a stale time from an earlier session does not
// make it look stuck.
func (m *Metrics) Streaming(streaming bool) {
	if streaming {
		m.state.lastAlive.Store(m.cfg.Now().UnixNano())
		m.state.everStreamed.Store(true)
	}
	m.state.streaming.Store(streaming)
	m.streaming.Set(boolValue(streaming))
}

// RowsDeleted counts rows the retention deleted; it implements
// relay.RetentionObserver.
func (m *Metrics) RowsDeleted(n int) { m.retained.Add(float64(n)) }

// BackfillProgress sets the progress of the backfill that runs before the
// relay streams from a new slot.
func (m *Metrics) BackfillProgress(done, total int64) {
	m.state.backfillDone.Store(done)
	m.state.backfillTotal.Store(total)
	m.backfillDone.Set(float64(done))
	m.backfillTotal.Set(float64(total))
}

// Alive records that the stream loop runs.
func (m *Metrics) Alive(at time.Time) { m.state.lastAlive.Store(at.UnixNano()) }

// Draining marks the relay as shutting down, so /readyz fails at once while
// the relay waits for its last confirms.
func (m *Metrics) Draining() { m.state.draining.Store(true) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
