package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/walrelay/walrelay/internal/testenv"
)

func TestRunServesMetricsAndHealth(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	exchange, queue := testenv.Queue(t)
	slot := testenv.Name("slot")
	migrate(t, pgURL)

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := "http://" + addr
	cmd := startWalrelay(t, "run", "--pg-url", pgURL, "--amqp-url", testenv.AMQPURL(), "--exchange", exchange,
		"--slot", slot, "--status-interval", "200ms", "--http-addr", addr)
	cmd.waitForLog(t, `"relay started"`, 60*time.Second)

	waitForHTTP(t, base+"/readyz", http.StatusOK, 10*time.Second)
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz while streaming = %d %q, want 200 \"ok\\n\"", code, body)
	}

	probe := runWalrelay(t, 30*time.Second, []string{"WALRELAY_HTTP_ADDR=" + addr}, "healthcheck", "--ready")
	if probe.exitCode != 0 || probe.stdout != "streaming from the slot\n" {
		t.Errorf("healthcheck --ready: exit %d, output %q; stderr: %s", probe.exitCode, probe.stdout, probe.stderr)
	}

	consumer := testenv.Consume(t, queue)
	const rows = 50
	testenv.Exec(t, pgURL, `
		INSERT INTO outbox_messages (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'o-' || n, 'created', jsonb_build_object('n', n) FROM generate_series(1, $1::int) n`, rows)
	consumer.Collect(t, rows, 30*time.Second)

	// Confirms, the flush position and the slot lag query land shortly
	// after the deliveries.
	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(15 * time.Second)
	for {
		families = scrape(t, base+"/metrics")
		_, lagPresent := families["walrelay_slot_lag_bytes"]
		if metricValue(families, "walrelay_messages_confirmed_total") == rows &&
			metricValue(families, "walrelay_flush_lsn") > 0 && lagPresent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics did not reach %d confirms, a flush LSN and a slot lag within 15s; last scrape: confirmed %v, flush %v, lag present %v",
				rows, metricValue(families, "walrelay_messages_confirmed_total"), metricValue(families, "walrelay_flush_lsn"), lagPresent)
		}
		time.Sleep(100 * time.Millisecond)
	}

	want := map[string]float64{
		"walrelay_messages_published_total":        rows,
		"walrelay_messages_confirmed_total":        rows,
		"walrelay_messages_nacked_total":           0,
		"walrelay_messages_returned_total":         0,
		"walrelay_messages_invalid_total":          0,
		"walrelay_messages_in_flight":              0,
		"walrelay_publish_confirm_latency_seconds": rows, // sample count
		"walrelay_commit_confirm_latency_seconds":  rows,
		"walrelay_commit_decode_latency_seconds":   rows,
		"walrelay_streaming":                       1,
		"walrelay_broker_blocked":                  0,
	}
	for name, w := range want {
		if got := metricValue(families, name); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	if got := metricValue(families, "walrelay_slot_lag_bytes"); got < 0 {
		t.Errorf("walrelay_slot_lag_bytes = %v, want >= 0", got)
	}
	if got := labeledValue(families, "walrelay_reconnects_total", "side", "postgres"); got != 0 {
		t.Errorf(`walrelay_reconnects_total{side="postgres"} = %v, want 0`, got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "walrelay_build_info"} {
		if _, ok := families[name]; !ok {
			t.Errorf("metric %s is missing", name)
		}
	}

	// The flush LSN gauge is the position the relay last reported, and the
	// server's confirmed position trails it. Idle advances move both
	// while other databases write WAL, so the gauge is read after the slot.
	running := statusJSON(t, pgURL, slot)
	flushed := pglogrepl.LSN(metricValue(scrape(t, base+"/metrics"), "walrelay_flush_lsn"))
	if !running.Slot.Active || running.Slot.ActivePID == 0 {
		t.Errorf("status while running: slot active %v, pid %d; want active with a pid", running.Slot.Active, running.Slot.ActivePID)
	}
	if confirmed := parseLSN(t, running.Slot.ConfirmedFlushLSN); confirmed > flushed {
		t.Errorf("slot confirmed %s is past the reported flush position %s", confirmed, flushed)
	}

	// The checkpoint loop stores the flush position once per status
	// interval (200 ms here).
	covered := pglogrepl.LSN(metricValue(families, "walrelay_flush_lsn"))
	deadline = time.Now().Add(10 * time.Second)
	for {
		cp := statusJSON(t, pgURL, slot).Checkpoint
		if cp.Found && parseLSN(t, cp.FlushedLSN) >= covered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored checkpoint %+v did not reach the flush position %s within 10s", cp, covered)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A slot in use cannot be torn down.
	res := runWalrelay(t, 30*time.Second, nil, "teardown", "--yes", "--pg-url", pgURL, "--slot", slot)
	checkOneErrorLine(t, res, "in use by walsender pid", "stop the walrelay")

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; stderr:\n%s", code, cmd.stderr.String())
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Errorf("%s still answers after walrelay exited", base)
	}

	// After the stop the slot is free and the checkpoint holds the final
	// position.
	stopped := statusJSON(t, pgURL, slot)
	if stopped.Slot.Active {
		t.Errorf("status after stop: slot still active (pid %d)", stopped.Slot.ActivePID)
	}
	if !stopped.Checkpoint.Found {
		t.Fatal("status after stop: no stored checkpoint")
	}
	// NOTE: the final save at stop can be skipped when the stop cancels a
	// query of the checkpoint loop, so only the periodic saves are
	// asserted here.
	if cp := parseLSN(t, stopped.Checkpoint.FlushedLSN); cp < covered {
		t.Errorf("stored checkpoint %s went back before %s after the stop", cp, covered)
	}
}

func TestReadyzFailsWithoutBroker(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)
	migrate(t, pgURL)

	// A password in the URL must never reach the logs; the local server
	// trusts 127.0.0.1, so it is accepted and ignored.
	const secret = "pg-secret-for-the-log-test"
	pgURL = strings.Replace(pgURL, "postgres@", "postgres:"+secret+"@", 1)

	// Nothing listens on closedPort, so every attempt fails to reach the
	// broker while Postgres works.
	closedPort := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := "http://" + addr
	cmd := startWalrelay(t, "run", "--pg-url", pgURL, "--amqp-url", fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", closedPort),
		"--slot", testenv.Name("slot"), "--http-addr", addr)
	cmd.waitForLog(t, `connection refused`, 60*time.Second)

	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200: the process retries on its own", code, body)
	}
	code, body := httpGet(t, base+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d %q, want 503", code, body)
	}
	if !strings.Contains(body, "not streaming yet") {
		t.Errorf("/readyz body %q does not give the reason", body)
	}

	if probe := runWalrelay(t, 30*time.Second, nil, "healthcheck", "--http-addr", addr); probe.exitCode != 0 {
		t.Errorf("healthcheck: exit %d, want 0; stderr: %s", probe.exitCode, probe.stderr)
	}
	notReady := runWalrelay(t, 30*time.Second, nil, "healthcheck", "--ready", "--http-addr", addr)
	checkOneErrorLine(t, notReady, "/readyz returned 503", "not streaming yet")

	families := scrape(t, base+"/metrics")
	if got := metricValue(families, "walrelay_streaming"); got != 0 {
		t.Errorf("walrelay_streaming = %v, want 0", got)
	}
	if got := metricValue(families, "walrelay_messages_published_total"); got != 0 {
		t.Errorf("walrelay_messages_published_total = %v, want 0", got)
	}

	if code := cmd.stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; stderr:\n%s", code, cmd.stderr.String())
	}
	if logs := cmd.stderr.String(); strings.Contains(logs, secret) {
		t.Errorf("logs contain the Postgres password:\n%s", logs)
	}
}

func TestRunHTTPAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	res := runWalrelay(t, 30*time.Second, nil, "run", "--http-addr", l.Addr().String())
	checkOneErrorLine(t, res, l.Addr().String(), "--http-addr")
}

// migrate creates the Event-Forge and walrelay tables in the database.
func migrate(t *testing.T, pgURL string) {
	t.Helper()

	if res := runWalrelay(t, 60*time.Second, nil, "migrate", "--pg-url", pgURL); res.exitCode != 0 {
		t.Fatalf("migrate exited %d: %s", res.exitCode, res.stderr)
	}
}

// httpGet returns the status code and body of a GET request to url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()

	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the body of %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// waitForHTTP polls url until it returns code.
func waitForHTTP(t *testing.T, url string, code int, timeout time.Duration) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		got, body := httpGet(t, url)
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q after %s, want %d", url, got, body, timeout, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape fetches and parses the Prometheus text format at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()

	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", url, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return families
}

// metricValue returns the value of the first series of a counter or gauge,
// the sample count of a histogram, or -1 when the metric is missing.
func metricValue(families map[string]*dto.MetricFamily, name string) float64 {
	return labeledValue(families, name)
}

// labeledValue is metricValue for the series with the label pairs
// (name, value, ...).
func labeledValue(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := families[name]
	if !ok {
		return -1
	}

series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, pair := range m.GetLabel() {
				found = found || (pair.GetName() == labels[i] && pair.GetValue() == labels[i+1])
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// statusJSON runs `walrelay status --json` and decodes its output.
func statusJSON(t *testing.T, pgURL, slot string, extra ...string) statusReport {
	t.Helper()

	args := append([]string{"status", "--json", "--pg-url", pgURL, "--slot", slot}, extra...)
	res := runWalrelay(t, 30*time.Second, nil, args...)
	if res.exitCode != 0 {
		t.Fatalf("status exited %d: %s", res.exitCode, res.stderr)
	}

	var report statusReport
	if err := json.Unmarshal([]byte(res.stdout), &report); err != nil {
		t.Fatalf("status --json printed invalid JSON: %v\n%s", err, res.stdout)
	}
	return report
}

func parseLSN(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()

	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("parse LSN %q: %v", s, err)
	}
	return lsn
}

func TestProbeURL(t *testing.T) {
	cases := []struct{ addr, want string }{
		{"127.0.0.1:9188", "http://127.0.0.1:9188/healthz"},
		{":9188", "http://127.0.0.1:9188/healthz"},
		{"0.0.0.0:9188", "http://127.0.0.1:9188/healthz"},
		{"[::]:9188", "http://[::1]:9188/healthz"},
		{"relay.internal:9188", "http://relay.internal:9188/healthz"},
	}
	for _, c := range cases {
		got, err := probeURL(c.addr, "/healthz")
		if err != nil || got != c.want {
			t.Errorf("probeURL(%q) = %q, %v; want %q", c.addr, got, err, c.want)
		}
	}
	if _, err := probeURL("", "/healthz"); err == nil {
		t.Error("probeURL(\"\") succeeded, want an error: the server is disabled")
	}
}
