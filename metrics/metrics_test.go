package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/relay"
)

// clock is a settable time source for the health checks.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestMetrics() (*Metrics, *clock) {
	c := &clock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	return New(Config{StallTimeout: 30 * time.Second, Version: "test", Now: c.Now}), c
}

// gather returns the metric families of m by name.
func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()

	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(families))
	for _, f := range families {
		byName[f.GetName()] = f
	}
	return byName
}

// value returns the value of the metric name with the given label pairs
// (name, value, name, value...), failing when it is absent.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()

	f, ok := families[name]
	if !ok {
		t.Fatalf("metric %s is missing", name)
	}
	for _, metric := range f.GetMetric() {
		if !hasLabels(metric, labels) {
			continue
		}
		switch {
		case metric.Counter != nil:
			return metric.Counter.GetValue()
		case metric.Gauge != nil:
			return metric.Gauge.GetValue()
		case metric.Histogram != nil:
			return float64(metric.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s has no series with labels %v", name, labels)
	return 0
}

func hasLabels(metric *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, pair := range metric.GetLabel() {
			if pair.GetName() == labels[i] && pair.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func TestObserverEventsMoveMetrics(t *testing.T) {
	m, _ := newTestMetrics()

	for range 3 {
		m.Published()
	}
	m.Decoded(5 * time.Millisecond)
	m.Confirmed(2*time.Millisecond, 40*time.Millisecond)
	m.Confirmed(3*time.Millisecond, -time.Second) // server clock ahead
	m.Nacked()
	m.Returned()
	m.Returned()
	m.Invalid()
	m.DeadLettered()
	m.InFlight(7)
	m.Flushed(pglogrepl.LSN(0x1_0000_0028))
	m.Reconnected(relay.SideBroker)
	m.Reconnected(relay.SideBroker)
	m.BrokerBlocked(true)
	m.Streaming(true)

	f := gather(t, m)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"walrelay_messages_published_total", nil, 3},
		{"walrelay_messages_confirmed_total", nil, 2},
		{"walrelay_messages_nacked_total", nil, 1},
		{"walrelay_messages_returned_total", nil, 2},
		{"walrelay_messages_invalid_total", nil, 1},
		{"walrelay_messages_dead_lettered_total", nil, 1},
		{"walrelay_messages_in_flight", nil, 7},
		{"walrelay_flush_lsn", nil, 0x1_0000_0028},
		{"walrelay_reconnects_total", []string{"side", "broker"}, 2},
		{"walrelay_reconnects_total", []string{"side", "postgres"}, 0},
		{"walrelay_broker_blocked", nil, 1},
		{"walrelay_streaming", nil, 1},
		{"walrelay_publish_confirm_latency_seconds", nil, 2},
		{"walrelay_commit_confirm_latency_seconds", nil, 2},
		{"walrelay_commit_decode_latency_seconds", nil, 1},
		{"walrelay_build_info", []string{"version", "test"}, 1},
	}
	for _, c := range checks {
		if got := value(t, f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	commit := f["walrelay_commit_confirm_latency_seconds"].GetMetric()[0].GetHistogram()
	if got, want := commit.GetSampleSum(), 0.040; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("commit latency sum = %v s, want %v s (the negative latency counts as 0)", got, want)
	}
}

func TestSlotLagAbsentUntilQueried(t *testing.T) {
	m, _ := newTestMetrics()

	if _, ok := gather(t, m)["walrelay_slot_lag_bytes"]; ok {
		t.Fatal("walrelay_slot_lag_bytes is present before the first slot query")
	}

	m.SlotLag(4096)
	m.SlotLag(8192)
	if got := value(t, gather(t, m), "walrelay_slot_lag_bytes"); got != 8192 {
		t.Errorf("walrelay_slot_lag_bytes = %v, want 8192", got)
	}
}

func TestRuntimeCollectorsRegistered(t *testing.T) {
	m, _ := newTestMetrics()
	f := gather(t, m)

	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := f[name]; !ok {
			t.Errorf("metric %s is missing", name)
		}
	}
}

func TestReadyFollowsRelayState(t *testing.T) {
	m, _ := newTestMetrics()

	steps := []struct {
		name       string
		event      func()
		wantReady  bool
		wantReason string
	}{
		{"before streaming", func() {}, false, "not streaming yet"},
		{"streaming", func() { m.Streaming(true) }, true, "streaming from the slot"},
		{"broker blocked", func() { m.BrokerBlocked(true) }, false, "blocks publishing"},
		{"broker unblocked", func() { m.BrokerBlocked(false) }, true, "streaming from the slot"},
		{"session failed", func() { m.Streaming(false) }, false, "reconnecting"},
		{"session recovered", func() { m.Streaming(true) }, true, "streaming from the slot"},
		{"broker blocked again", func() { m.BrokerBlocked(true) }, false, "blocks publishing"},
		{"unblocked again", func() { m.BrokerBlocked(false) }, true, "streaming from the slot"},
		{"draining", m.Draining, false, "shutting down"},
	}
	for _, s := range steps {
		s.event()
		ok, reason := m.Ready()
		if ok != s.wantReady {
			t.Errorf("%s: ready = %v (%q), want %v", s.name, ok, reason, s.wantReady)
		}
		if !strings.Contains(reason, s.wantReason) {
			t.Errorf("%s: reason %q does not contain %q", s.name, reason, s.wantReason)
		}
	}
}

func TestLiveFailsWhenStreamLoopStalls(t *testing.T) {
	m, c := newTestMetrics()

	if ok, reason := m.Live(); !ok {
		t.Fatalf("live = false before streaming: %s", reason)
	}

	m.Streaming(true)
	c.Advance(29 * time.Second)
	if ok, reason := m.Live(); !ok {
		t.Fatalf("live = false 29 s after the session started (limit 30 s): %s", reason)
	}

	m.Alive(c.Now())
	c.Advance(31 * time.Second)
	ok, reason := m.Live()
	if ok {
		t.Fatal("live = true after 31 s without Alive, want false")
	}
	if !strings.Contains(reason, "stuck") || !strings.Contains(reason, "31s") {
		t.Errorf("reason %q does not say the loop is stuck for 31s", reason)
	}
	if ready, _ := m.Ready(); ready {
		t.Error("ready = true while the stream loop is stuck")
	}

	m.Alive(c.Now())
	if ok, reason := m.Live(); !ok {
		t.Errorf("live = false right after Alive: %s", reason)
	}

	// A relay that is not streaming retries on its own: it is live.
	m.Streaming(false)
	c.Advance(time.Hour)
	if ok, reason := m.Live(); !ok {
		t.Errorf("live = false while not streaming: %s", reason)
	}
}

func TestHandlerEndpoints(t *testing.T) {
	m, _ := newTestMetrics()
	srv := httptest.NewServer(m.Handler(zerolog.Nop()))
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		return resp.StatusCode, string(body)
	}

	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not streaming yet") {
		t.Errorf("/readyz before streaming = %d %q, want 503 with a reason", code, body)
	}

	m.Streaming(true)
	m.Published()
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while streaming = %d %q, want 200", code, body)
	}

	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"walrelay_messages_published_total 1\n", "walrelay_streaming 1\n", "go_goroutines "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if code, _ := get("/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing = %d, want 404", code)
	}
}

func TestListenAddressInUse(t *testing.T) {
	m, _ := newTestMetrics()

	first, err := Listen("127.0.0.1:0", m, zerolog.Nop())
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := first.Addr().String()

	if _, err := Listen(addr, m, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("second listen on %s: error %v, want one naming the address", addr, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

func TestReadyDuringBackfill(t *testing.T) {
	m, _ := newTestMetrics()

	m.BackfillProgress(250, 1000)
	ok, reason := m.Ready()
	if ok || !strings.Contains(reason, "250 of 1000 confirmed") {
		t.Errorf("ready during a backfill = %v %q, want false with the progress", ok, reason)
	}
	f := gather(t, m)
	if got := value(t, f, "walrelay_backfill_rows"); got != 1000 {
		t.Errorf("walrelay_backfill_rows = %v, want 1000", got)
	}
	if got := value(t, f, "walrelay_backfill_rows_confirmed"); got != 250 {
		t.Errorf("walrelay_backfill_rows_confirmed = %v, want 250", got)
	}

	m.BackfillProgress(1000, 1000)
	if _, reason := m.Ready(); !strings.Contains(reason, "connecting") {
		t.Errorf("reason after the backfill = %q, want the connecting state", reason)
	}

	m.Streaming(true)
	if ok, reason := m.Ready(); !ok {
		t.Errorf("ready = false after streaming started: %s", reason)
	}
}
