package bench

import (
	"encoding/json"
	"time"
)

// Report is the result of one run. Rates are in messages per second
// (msgs_per_s), times in milliseconds (ms) and sizes in bytes. A scenario
// that did not run is left out of the JSON.
type Report struct {
	// RunID is in the name of every object the run created: the database
	// walrelay_bench_<id>, its slots, the exchange and the queue.
	RunID     string    `json:"run_id"`
	StartedAt time.Time `json:"started_at"`
	ElapsedMS float64   `json:"elapsed_ms"`
	Machine   Machine   `json:"machine"`
	Settings  Settings  `json:"settings"`

	Ceiling []CeilingStep `json:"ceiling,omitempty"`
	Backlog *Drain        `json:"backlog,omitempty"`
	Live    []LiveStep    `json:"live,omitempty"`
	Latency []LatencyStep `json:"latency,omitempty"`
	Polling []PollingRun  `json:"polling,omitempty"`
	Payload []PayloadStep `json:"payload,omitempty"`
	CPU     *CPUCost      `json:"cpu,omitempty"`
	RSS     *RSSPeak      `json:"rss,omitempty"`
	Inbox   []InboxStep   `json:"inbox,omitempty"`
	Ratios  *Ratios       `json:"ratios,omitempty"`
}

// Ratios compares walrelay with the broker ceiling and with the polling
// relay at 100 ms, where both sides ran. The ceiling is the best of the
// in-flight windows measured.
type Ratios struct {
	CeilingMsgsPerS float64 `json:"ceiling_msgs_per_s,omitempty"`

	BacklogToCeiling *float64 `json:"backlog_msgs_per_s_walrelay_to_ceiling,omitempty"`
	BacklogToPolling *float64 `json:"backlog_msgs_per_s_walrelay_to_polling,omitempty"`

	// LatencyP99ToPolling is keyed by the target rate in msgs/s.
	LatencyP99ToPolling map[string]float64 `json:"latency_p99_ms_walrelay_to_polling,omitempty"`

	RelayCPUToPolling   *float64 `json:"relay_cpu_ms_per_100k_msgs_walrelay_to_polling,omitempty"`
	BackendCPUToPolling *float64 `json:"postgres_backend_cpu_ms_per_100k_msgs_walrelay_to_polling,omitempty"`
}

// Machine describes where the run took place.
type Machine struct {
	CPUs             int               `json:"cpus"`
	CPUModel         string            `json:"cpu_model"`
	MemoryBytes      int64             `json:"memory_bytes"`
	Kernel           string            `json:"kernel"`
	GoVersion        string            `json:"go_version"`
	PostgresVersion  string            `json:"postgres_version"`
	PostgresSettings map[string]string `json:"postgres_settings"`
	RabbitMQVersion  string            `json:"rabbitmq_version"`

	// LoadAverage is the 1-minute load average when the run started: other
	// work on the machine makes every figure worse.
	LoadAverage float64 `json:"load_average_1m_at_start"`
}

// Settings are the run's parameters.
type Settings struct {
	Scenarios      []string `json:"scenarios"`
	Rows           int      `json:"rows"`
	PayloadBytes   int      `json:"payload_bytes"`
	BodyBytes      int      `json:"body_bytes"`
	Connections    int      `json:"connections"`
	MaxInFlight    int      `json:"max_in_flight"`
	LatencyRates   []int    `json:"latency_rates_msgs_per_s"`
	LatencyStepMS  float64  `json:"latency_step_ms"`
	RSSRows        int      `json:"rss_rows"`
	PollIntervalMS []int64  `json:"poll_intervals_ms"`
	PollBatch      int      `json:"poll_batch"`
	Rounds         int      `json:"rounds"`
}

// CeilingStep is the broker's own throughput at one in-flight window.
type CeilingStep struct {
	Window    int     `json:"window"`
	Messages  int     `json:"messages"`
	BodyBytes int     `json:"body_bytes"`
	ElapsedMS float64 `json:"elapsed_ms"`
	MsgsPerS  float64 `json:"msgs_per_s"`

	// RoundsMsgsPerS is every round's rate when the run has several
	// rounds. The step's other figures are those of the median round.
	RoundsMsgsPerS []float64 `json:"rounds_msgs_per_s,omitempty"`
}

// Drain is one relay working off a backlog of committed rows, timed from
// the relay's start to the last message received.
type Drain struct {
	Relay      string  `json:"relay"`
	Messages   int     `json:"messages"`
	RowsPerTx  int     `json:"rows_per_tx"`
	InsertMS   float64 `json:"insert_ms"`
	ElapsedMS  float64 `json:"elapsed_ms"`
	MsgsPerS   float64 `json:"msgs_per_s"`
	Duplicates int     `json:"duplicates"`

	// RoundsMsgsPerS is every round's rate when the run has several
	// rounds. The drain's other figures are those of the median round.
	RoundsMsgsPerS []float64 `json:"rounds_msgs_per_s,omitempty"`

	// TableRowsReadPerMsg (seq_tup_read plus idx_tup_fetch) and
	// TableRowsWrittenPerMsg (n_tup_upd plus n_tup_del) are the growth of
	// the outbox table's counters in pg_stat_user_tables over the drain, per
	// message. They are the rows the relay reads and writes on top of the
	// application's own inserts.
	TableRowsReadPerMsg    float64 `json:"table_rows_read_per_msg"`
	TableRowsWrittenPerMsg float64 `json:"table_rows_written_per_msg"`
}

// LiveStep is the relay running while several connections insert.
type LiveStep struct {
	RowsPerTx      int     `json:"rows_per_tx"`
	Connections    int     `json:"connections"`
	Messages       int     `json:"messages"`
	InsertMsgsPerS float64 `json:"insert_msgs_per_s"`
	MsgsPerS       float64 `json:"msgs_per_s"`

	// Trail is how far each message trails its commit (commit returned to
	// receipt); TailMS is the last commit to the last receipt.
	TrailP50MS float64 `json:"trail_p50_ms"`
	TrailP99MS float64 `json:"trail_p99_ms"`
	TrailMaxMS float64 `json:"trail_max_ms"`
	TailMS     float64 `json:"tail_ms"`
	Duplicates int     `json:"duplicates"`
}

// LatencyStep is commit-to-receipt latency at one steady rate of
// single-row transactions.
type LatencyStep struct {
	Relay            string  `json:"relay"`
	TargetMsgsPerS   int     `json:"target_msgs_per_s"`
	AchievedMsgsPerS float64 `json:"achieved_msgs_per_s"`
	Messages         int     `json:"messages"`
	P50MS            float64 `json:"p50_ms"`
	P90MS            float64 `json:"p90_ms"`
	P99MS            float64 `json:"p99_ms"`
	MaxMS            float64 `json:"max_ms"`
	Duplicates       int     `json:"duplicates"`

	// CommitToDecodeP50MS and CommitToDecodeP99MS are walrelay's times from
	// the commit timestamp in the WAL to reading the row from the stream:
	// the delay before the relay's own work. The commit timestamp is taken before the WAL
	// flush that the client's COMMIT waits for, so these can exceed the
	// commit-to-receipt figures. Zero for the polling relay.
	CommitToDecodeP50MS float64 `json:"commit_to_decode_p50_ms,omitempty"`
	CommitToDecodeP99MS float64 `json:"commit_to_decode_p99_ms,omitempty"`

	// ReceivedBeforeCommitReturned counts messages that arrived before the
	// inserting client saw its COMMIT return; their latency counts as 0.
	ReceivedBeforeCommitReturned int `json:"received_before_commit_returned"`

	TableRowsReadPerMsg    float64 `json:"table_rows_read_per_msg"`
	TableRowsWrittenPerMsg float64 `json:"table_rows_written_per_msg"`
}

// PollingRun is the polling relay at one poll interval.
type PollingRun struct {
	IntervalMS int64         `json:"interval_ms"`
	Backlog    *Drain        `json:"backlog,omitempty"`
	CPU        *ProcessCPU   `json:"cpu,omitempty"`
	Latency    []LatencyStep `json:"latency,omitempty"`
}

// PayloadStep is walrelay's backlog throughput at one payload size, next to
// the broker ceiling for the same message.
type PayloadStep struct {
	PayloadBytes      int     `json:"payload_bytes"`
	BodyBytes         int     `json:"body_bytes"`
	Messages          int     `json:"messages"`
	MsgsPerS          float64 `json:"msgs_per_s"`
	BodyBytesPerS     float64 `json:"body_bytes_per_s"`
	CeilingWindow     int     `json:"ceiling_window"`
	CeilingMsgsPerS   float64 `json:"ceiling_msgs_per_s"`
	RatioToCeilingMsg float64 `json:"msgs_per_s_ratio_to_ceiling"`
}

// ProcessCPU is the CPU time (user plus system) that one relay, run as a
// separate process, spent on a backlog drain, and that the Postgres
// backends serving it spent.
type ProcessCPU struct {
	Messages           int     `json:"messages"`
	MsgsPerS           float64 `json:"msgs_per_s"`
	RelayCPUMS         float64 `json:"relay_cpu_ms"`
	RelayCPUMSPer100k  float64 `json:"relay_cpu_ms_per_100k_msgs"`
	BackendCPUMS       float64 `json:"postgres_backend_cpu_ms"`
	BackendCPUMSPer100 float64 `json:"postgres_backend_cpu_ms_per_100k_msgs"`

	// BackendsMeasured is false when the Postgres server is not on this
	// machine, so its backends' CPU could not be read.
	BackendsMeasured bool `json:"postgres_backends_measured"`
}

// CPUCost compares the CPU cost per message of walrelay and of the polling
// relay (100 ms interval) on the same backlog.
type CPUCost struct {
	Walrelay *ProcessCPU `json:"walrelay"`
	Polling  *ProcessCPU `json:"polling,omitempty"`
}

// RSSPeak is the relay process's memory during one large transaction.
type RSSPeak struct {
	Rows         int     `json:"rows"`
	InsertMS     float64 `json:"insert_ms"`
	RelayMS      float64 `json:"relay_ms_after_commit"`
	MsgsPerS     float64 `json:"msgs_per_s"`
	IdleRSSBytes int64   `json:"idle_rss_bytes"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	MaxInFlight  int     `json:"max_in_flight"`
	Duplicates   int     `json:"duplicates"`
}

// JSON returns the report as indented JSON.
func (r *Report) JSON() ([]byte, error) {
	return json.MarshalIndent(r, "", "  ")
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// rate is n messages over d, per second; 0 when d is not positive.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
