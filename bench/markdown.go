package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ratios compares walrelay with the ceiling and the polling relay (100 ms)
// wherever both figures were measured; it returns nil when none was.
func ratios(rep *Report) *Ratios {
	out := &Ratios{CeilingMsgsPerS: bestCeiling(rep.Ceiling)}
	found := false
	poll := pollingAt(rep, 0)

	if rep.Backlog != nil && out.CeilingMsgsPerS > 0 {
		out.BacklogToCeiling = ratio(rep.Backlog.MsgsPerS, out.CeilingMsgsPerS)
		found = true
	}
	if rep.Backlog != nil && poll != nil && poll.Backlog != nil {
		out.BacklogToPolling = ratio(rep.Backlog.MsgsPerS, poll.Backlog.MsgsPerS)
		found = true
	}
	if poll != nil {
		for _, w := range rep.Latency {
			for _, p := range poll.Latency {
				if p.TargetMsgsPerS == w.TargetMsgsPerS && p.P99MS > 0 {
					if out.LatencyP99ToPolling == nil {
						out.LatencyP99ToPolling = map[string]float64{}
					}
					out.LatencyP99ToPolling[strconv.Itoa(w.TargetMsgsPerS)] = w.P99MS / p.P99MS
					found = true
				}
			}
		}
	}
	if rep.CPU != nil && rep.CPU.Walrelay != nil && rep.CPU.Polling != nil {
		out.RelayCPUToPolling = ratio(rep.CPU.Walrelay.RelayCPUMSPer100k, rep.CPU.Polling.RelayCPUMSPer100k)
		if rep.CPU.Walrelay.BackendsMeasured && rep.CPU.Polling.BackendsMeasured {
			out.BackendCPUToPolling = ratio(rep.CPU.Walrelay.BackendCPUMSPer100, rep.CPU.Polling.BackendCPUMSPer100)
		}
		found = true
	}

	if !found && out.CeilingMsgsPerS == 0 {
		return nil
	}
	return out
}

func ratio(a, b float64) *float64 {
	if b == 0 {
		return nil
	}
	v := a / b
	return &v
}

// pollingAt returns the i-th polling run (0: 100 ms, 1: 1 s), or nil.
func pollingAt(rep *Report, i int) *PollingRun {
	if i < len(rep.Polling) {
		return &rep.Polling[i]
	}
	return nil
}

// row is one line of the markdown table; an empty cell was not measured.
type row struct {
	scenario, figure                     string
	walrelay, ceiling, poll100, poll1000 string
	toCeiling, toPolling                 string
}

// WriteMarkdown writes the machine, the settings and one table with every
// figure of the report.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	m, s := rep.Machine, rep.Settings

	fmt.Fprintf(&b, "walrelay benchmark, %s, took %s\n\n", rep.StartedAt.Format("2006-01-02 15:04 MST"),
		time.Duration(rep.ElapsedMS*float64(time.Millisecond)).Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %.1f GiB memory, Linux %s, %s, load average %.2f at the start\n",
		m.CPUs, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion, m.LoadAverage)
	fmt.Fprintf(&b, "- %s\n", m.PostgresVersion)
	fmt.Fprintf(&b, "- Postgres settings: %s\n", settingsLine(m.PostgresSettings))
	fmt.Fprintf(&b, "- %s\n", m.RabbitMQVersion)
	fmt.Fprintf(&b, "- Workload: %d rows per step, %d-byte payloads (%d-byte message bodies), %d inserting connections, "+
		"walrelay max in-flight %d, latency steps of %s, polling relay LIMIT %d\n\n",
		s.Rows, s.PayloadBytes, s.BodyBytes, s.Connections, s.MaxInFlight,
		time.Duration(s.LatencyStepMS*float64(time.Millisecond)), s.PollBatch)

	b.WriteString("| scenario | figure | walrelay | broker ceiling | polling 100 ms | polling 1 s | walrelay / ceiling | walrelay / polling 100 ms |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.scenario, r.figure, r.walrelay, r.ceiling, r.poll100, r.poll1000, r.toCeiling, r.toPolling)
	}

	_, err := io.WriteString(w, b.String())
	return err
}

func settingsLine(settings map[string]string) string {
	var parts []string
	for _, name := range postgresSettings {
		if v, ok := settings[name]; ok {
			parts = append(parts, name+"="+v)
		}
	}
	return strings.Join(parts, ", ")
}

// rows lays out every figure of the report.
func (rep *Report) rows() []row {
	var rows []row
	best := bestCeiling(rep.Ceiling)
	p100, p1000 := pollingAt(rep, 0), pollingAt(rep, 1)

	for _, c := range rep.Ceiling {
		name := fmt.Sprintf("broker ceiling, window %d", c.Window)
		rows = append(rows, row{scenario: name, figure: ratesFigure(c.RoundsMsgsPerS), ceiling: rateCell(c.MsgsPerS)})
		if len(c.RoundsMsgsPerS) > 0 {
			rows = append(rows, row{scenario: name, figure: "msgs/s of each round", ceiling: roundsCell(c.RoundsMsgsPerS)})
		}
	}

	rows = append(rows, rep.backlogRows(best, p100, p1000)...)
	rows = append(rows, rep.liveRows()...)
	rows = append(rows, rep.latencyRows(p100, p1000)...)

	for _, p := range rep.Payload {
		name := fmt.Sprintf("payload %s (body %s), %d msgs", sizeName(p.PayloadBytes), sizeName(p.BodyBytes), p.Messages)
		rows = append(rows,
			row{scenario: name, figure: "msgs/s", walrelay: rateCell(p.MsgsPerS),
				ceiling: rateCell(p.CeilingMsgsPerS), toCeiling: ratioCell(p.MsgsPerS, p.CeilingMsgsPerS)},
			row{scenario: name, figure: "body MB/s", walrelay: fmt.Sprintf("%.1f", p.BodyBytesPerS/1e6),
				ceiling: fmt.Sprintf("%.1f", p.CeilingMsgsPerS*float64(p.BodyBytes)/1e6)},
		)
	}

	rows = append(rows, rep.cpuRows(p1000)...)

	if x := rep.RSS; x != nil {
		name := fmt.Sprintf("one transaction of %d rows", x.Rows)
		rows = append(rows,
			row{scenario: name, figure: "peak RSS of the relay process, MiB", walrelay: mib(x.PeakRSSBytes)},
			row{scenario: name, figure: "RSS before the transaction, MiB", walrelay: mib(x.IdleRSSBytes)},
			row{scenario: name, figure: "msgs/s after the commit", walrelay: rateCell(x.MsgsPerS)},
		)
	}

	for _, x := range rep.Inbox {
		name := fmt.Sprintf("inbox: %d new messages recorded", x.Messages)
		if x.Duplicates {
			name = fmt.Sprintf("inbox: %d duplicate messages acked", x.Messages)
		}
		rows = append(rows, row{scenario: name, figure: "msgs/s", walrelay: rateCell(x.MsgsPerS)})
	}
	return rows
}

func (rep *Report) backlogRows(best float64, p100, p1000 *PollingRun) []row {
	var w *Drain = rep.Backlog
	var a, b *Drain
	if p100 != nil {
		a = p100.Backlog
	}
	if p1000 != nil {
		b = p1000.Backlog
	}
	if w == nil && a == nil && b == nil {
		return nil
	}

	name := fmt.Sprintf("backlog of %d rows in %d-row transactions", firstNonZero(w, a, b).Messages, backlogRowsPerTx)
	var rounds []float64
	if w != nil {
		rounds = w.RoundsMsgsPerS
	}
	msgs := row{scenario: name, figure: ratesFigure(rounds),
		walrelay: drainCell(w, func(d *Drain) string { return rateCell(d.MsgsPerS) }),
		poll100:  drainCell(a, func(d *Drain) string { return rateCell(d.MsgsPerS) }),
		poll1000: drainCell(b, func(d *Drain) string { return rateCell(d.MsgsPerS) })}
	if best > 0 {
		msgs.ceiling = rateCell(best)
	}
	if w != nil {
		msgs.toCeiling = ratioCell(w.MsgsPerS, best)
		if a != nil {
			msgs.toPolling = ratioCell(w.MsgsPerS, a.MsgsPerS)
		}
	}

	read := func(d *Drain) string { return fmt.Sprintf("%.2f", d.TableRowsReadPerMsg) }
	written := func(d *Drain) string { return fmt.Sprintf("%.2f", d.TableRowsWrittenPerMsg) }
	out := []row{msgs}
	if len(rounds) > 0 {
		out = append(out, row{scenario: name, figure: "msgs/s of each round", walrelay: roundsCell(rounds)})
	}
	return append(out, []row{
		{scenario: name, figure: "outbox rows read per msg", walrelay: drainCell(w, read), poll100: drainCell(a, read), poll1000: drainCell(b, read)},
		{scenario: name, figure: "outbox rows written per msg (beyond the insert)", walrelay: drainCell(w, written), poll100: drainCell(a, written), poll1000: drainCell(b, written)},
	}...)
}

func (rep *Report) liveRows() []row {
	var rows []row
	for _, l := range rep.Live {
		name := fmt.Sprintf("live, %d row(s) per transaction, %d connections", l.RowsPerTx, l.Connections)
		rows = append(rows,
			row{scenario: name, figure: "msgs/s (relayed)", walrelay: rateCell(l.MsgsPerS)},
			row{scenario: name, figure: "msgs/s (inserted)", walrelay: rateCell(l.InsertMsgsPerS)},
			row{scenario: name, figure: "trail behind commit p50 / p99 / max, ms",
				walrelay: fmt.Sprintf("%s / %s / %s", msCell(l.TrailP50MS), msCell(l.TrailP99MS), msCell(l.TrailMaxMS))},
			row{scenario: name, figure: "last commit to last receipt, ms", walrelay: msCell(l.TailMS)},
		)
	}
	return rows
}

func (rep *Report) latencyRows(p100, p1000 *PollingRun) []row {
	rates := map[int]bool{}
	var order []int
	add := func(steps []LatencyStep) {
		for _, s := range steps {
			if !rates[s.TargetMsgsPerS] {
				rates[s.TargetMsgsPerS] = true
				order = append(order, s.TargetMsgsPerS)
			}
		}
	}
	add(rep.Latency)
	if p100 != nil {
		add(p100.Latency)
	}
	if p1000 != nil {
		add(p1000.Latency)
	}

	figures := []struct {
		name     string
		value    func(LatencyStep) float64
		cell     func(float64) string
		ratio    bool
		walrelay bool // a figure of walrelay only
	}{
		{"commit-to-receipt p50, ms", func(s LatencyStep) float64 { return s.P50MS }, msCell, true, false},
		{"commit-to-receipt p90, ms", func(s LatencyStep) float64 { return s.P90MS }, msCell, true, false},
		{"commit-to-receipt p99, ms", func(s LatencyStep) float64 { return s.P99MS }, msCell, true, false},
		{"commit-to-receipt max, ms", func(s LatencyStep) float64 { return s.MaxMS }, msCell, true, false},
		{"WAL commit timestamp to walrelay decode p50, ms", func(s LatencyStep) float64 { return s.CommitToDecodeP50MS }, msCell, false, true},
		{"WAL commit timestamp to walrelay decode p99, ms", func(s LatencyStep) float64 { return s.CommitToDecodeP99MS }, msCell, false, true},
		{"msgs/s achieved", func(s LatencyStep) float64 { return s.AchievedMsgsPerS }, rateCell, false, false},
		{"outbox rows read per msg", func(s LatencyStep) float64 { return s.TableRowsReadPerMsg }, fixed2, false, false},
		{"outbox rows written per msg (beyond the insert)", func(s LatencyStep) float64 { return s.TableRowsWrittenPerMsg }, fixed2, false, false},
	}

	var rows []row
	for _, target := range order {
		w, okW := stepAt(rep.Latency, target)
		var a, b LatencyStep
		var okA, okB bool
		if p100 != nil {
			a, okA = stepAt(p100.Latency, target)
		}
		if p1000 != nil {
			b, okB = stepAt(p1000.Latency, target)
		}

		name := fmt.Sprintf("latency at %d msgs/s, single-row transactions", target)
		for _, f := range figures {
			r := row{scenario: name, figure: f.name}
			if okW {
				r.walrelay = f.cell(f.value(w))
			}
			if okA && !f.walrelay {
				r.poll100 = f.cell(f.value(a))
			}
			if okB && !f.walrelay {
				r.poll1000 = f.cell(f.value(b))
			}
			if f.ratio && okW && okA {
				r.toPolling = ratioCell(f.value(w), f.value(a))
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func (rep *Report) cpuRows(p1000 *PollingRun) []row {
	c := rep.CPU
	if c == nil || c.Walrelay == nil {
		return nil
	}
	var slow *ProcessCPU
	if p1000 != nil {
		slow = p1000.CPU
	}

	name := fmt.Sprintf("CPU on a backlog of %d rows, relay as its own process", c.Walrelay.Messages)
	relayCPU := func(p *ProcessCPU) string { return fmt.Sprintf("%.2f", p.RelayCPUMSPer100k/1000) }
	backendCPU := func(p *ProcessCPU) string {
		if !p.BackendsMeasured {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", p.BackendCPUMSPer100/1000)
	}
	msgs := func(p *ProcessCPU) string { return rateCell(p.MsgsPerS) }

	relayRow := row{scenario: name, figure: "relay CPU s (user+sys) per 100k msgs",
		walrelay: relayCPU(c.Walrelay), poll100: cpuCell(c.Polling, relayCPU), poll1000: cpuCell(slow, relayCPU)}
	backendRow := row{scenario: name, figure: "Postgres backend CPU s per 100k msgs",
		walrelay: backendCPU(c.Walrelay), poll100: cpuCell(c.Polling, backendCPU), poll1000: cpuCell(slow, backendCPU)}
	if c.Polling != nil {
		relayRow.toPolling = ratioCell(c.Walrelay.RelayCPUMSPer100k, c.Polling.RelayCPUMSPer100k)
		if c.Walrelay.BackendsMeasured && c.Polling.BackendsMeasured {
			backendRow.toPolling = ratioCell(c.Walrelay.BackendCPUMSPer100, c.Polling.BackendCPUMSPer100)
		}
	}
	return []row{
		relayRow,
		backendRow,
		{scenario: name, figure: "msgs/s", walrelay: msgs(c.Walrelay), poll100: cpuCell(c.Polling, msgs), poll1000: cpuCell(slow, msgs)},
	}
}

func stepAt(steps []LatencyStep, target int) (LatencyStep, bool) {
	for _, s := range steps {
		if s.TargetMsgsPerS == target {
			return s, true
		}
	}
	return LatencyStep{}, false
}

func firstNonZero(ds ...*Drain) *Drain {
	for _, d := range ds {
		if d != nil {
			return d
		}
	}
	return &Drain{}
}

func drainCell(d *Drain, f func(*Drain) string) string {
	if d == nil {
		return ""
	}
	return f(d)
}

func cpuCell(p *ProcessCPU, f func(*ProcessCPU) string) string {
	if p == nil {
		return ""
	}
	return f(p)
}

func rateCell(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }

// ratesFigure names a rate figure, which is a median when the run had
// several rounds.
func ratesFigure(rounds []float64) string {
	switch {
	case len(rounds) == 0:
		return "msgs/s"
	case len(rounds) == 1:
		return "msgs/s, 1 round"
	case len(rounds)%2 == 0:
		// Only a stopped run has an even number of rounds.
		return fmt.Sprintf("msgs/s, upper middle of %d rounds (run stopped)", len(rounds))
	}
	return fmt.Sprintf("msgs/s, median of %d rounds", len(rounds))
}

// roundsCell lists every round's rate in run order.
func roundsCell(rounds []float64) string {
	cells := make([]string, len(rounds))
	for i, v := range rounds {
		cells[i] = rateCell(v)
	}
	return strings.Join(cells, " / ")
}

func fixed2(v float64) string { return fmt.Sprintf("%.2f", v) }

func msCell(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 1000:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func ratioCell(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", a/b)
}

func mib(bytes int64) string { return fmt.Sprintf("%.1f", float64(bytes)/(1<<20)) }

func sizeName(bytes int) string {
	if bytes >= 1024 && bytes%1024 == 0 {
		return fmt.Sprintf("%d KiB", bytes/1024)
	}
	return fmt.Sprintf("%d B", bytes)
}
