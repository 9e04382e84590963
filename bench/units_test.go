package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSeq(t *testing.T) {
	tests := []struct {
		body string
		want int64
		ok   bool
	}{
		{`{"payload":{"seq": 1200000042, "total": 1}}`, 1200000042, true},
		{`{"payload":{"seq":7}}`, 7, true},
		{`{"payload":{"seq": "x"}}`, 0, false},
		{`{"payload":{}}`, 0, false},
		{`{"payload":{"seq": 12345678901234567890}}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSeq([]byte(tt.body))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseSeq(%s) = %d, %v; want %d, %v", tt.body, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var values []time.Duration
	for i := 1; i <= 100; i++ {
		values = append(values, time.Duration(i)*time.Millisecond)
	}

	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.50, 50 * time.Millisecond},
		{0.90, 90 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{0, time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(values, tt.q); got != tt.want {
			t.Errorf("percentile(1..100 ms, %v) = %s, want %s", tt.q, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(none) = %s, want 0", got)
	}
}

func TestLatenciesCountEarlyReceipts(t *testing.T) {
	commits := []time.Duration{10, 20, 30}
	receipts := []time.Duration{15, 18, 40}

	got, early := latencies(commits, receipts)
	if early != 1 {
		t.Errorf("early = %d, want 1", early)
	}
	want := []time.Duration{0, 5, 10}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("latencies = %v, want %v", got, want)
		}
	}
}

func TestPayloadRowsBudget(t *testing.T) {
	tests := []struct{ rows, size, want int }{
		{100_000, 300, 100_000},
		{100_000, 4096, 25_000},
		{100_000, 65536, 2000},
		{2000, 65536, 40},
		{10, 65536, 1},
	}
	for _, tt := range tests {
		if got := payloadRows(tt.rows, tt.size); got != tt.want {
			t.Errorf("payloadRows(%d, %d) = %d, want %d", tt.rows, tt.size, got, tt.want)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/walrelay_bench_x?sslmode=disable"},
		{"postgresql://u:p@127.0.0.1/", "postgresql://u:p@127.0.0.1/walrelay_bench_x"},
		{"host=127.0.0.1 dbname=postgres", "host=127.0.0.1 dbname=postgres dbname=walrelay_bench_x"},
	}
	for _, tt := range tests {
		got, err := withDatabase(tt.in, "walrelay_bench_x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	cfg, err := Config{Scenarios: []string{"rss", "ceiling"}, Executable: "walrelay"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Scenarios, ",") != "ceiling,rss" {
		t.Errorf("scenarios = %v, want run order ceiling,rss", cfg.Scenarios)
	}
	if cfg.Rows != DefaultRows || cfg.StepDuration != DefaultStepDuration || cfg.MaxInFlight == 0 {
		t.Errorf("defaults not applied: %+v", cfg)
	}

	bad := []Config{
		{Scenarios: []string{"throughput"}},
		{Rows: -1},
		{StepDuration: time.Millisecond},
		{LatencyRates: []int{0}},
		{Connections: 100},
	}
	for _, c := range bad {
		c.Executable = "walrelay"
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("config %+v accepted, want an error", c)
		}
	}
}

func TestMedianCeilingPerWindow(t *testing.T) {
	step := func(window int, rate, elapsed float64) CeilingStep {
		return CeilingStep{Window: window, MsgsPerS: rate, ElapsedMS: elapsed}
	}
	rounds := [][]CeilingStep{
		{step(100, 300, 1), step(1000, 10, 1)},
		{step(100, 100, 2), step(1000, 30, 2)},
		{step(100, 200, 3), step(1000, 20, 3)},
	}

	got := medianCeiling(rounds)
	if len(got) != 2 {
		t.Fatalf("got %d steps, want 2", len(got))
	}
	if got[0].MsgsPerS != 200 || got[0].ElapsedMS != 3 {
		t.Errorf("window 100: rate %v from round with elapsed %v, want 200 from the third round", got[0].MsgsPerS, got[0].ElapsedMS)
	}
	if got[1].MsgsPerS != 20 || got[1].ElapsedMS != 3 {
		t.Errorf("window 1000: rate %v from round with elapsed %v, want 20 from the third round", got[1].MsgsPerS, got[1].ElapsedMS)
	}
	if want := []float64{300, 100, 200}; !slices.Equal(got[0].RoundsMsgsPerS, want) {
		t.Errorf("window 100 rounds = %v, want %v in run order", got[0].RoundsMsgsPerS, want)
	}
}

func TestMedianEvenTakesUpperMiddle(t *testing.T) {
	item, rates := median([]float64{4, 1, 3, 2}, func(v float64) float64 { return v })
	if item != 3 {
		t.Errorf("median of 4 rounds = %v, want 3 (the upper middle)", item)
	}
	if want := []float64{4, 1, 3, 2}; !slices.Equal(rates, want) {
		t.Errorf("rates = %v, want %v", rates, want)
	}
	if got := medianCeiling(nil); got != nil {
		t.Errorf("medianCeiling(nil) = %v, want nil", got)
	}
}
