package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat. Linux fixes it at
// 100 ticks a second for user space (USER_HZ) on every architecture Go
// supports, whatever the kernel's own HZ.
const userHZ = 100

// child is a relay running as a separate process, so that its CPU time and
// memory are its own.
type child struct {
	name   string
	cmd    *exec.Cmd
	output *tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
}

// startChild starts the walrelay executable with args. The Postgres and
// broker URLs go in the environment (WALRELAY_PG_URL, WALRELAY_AMQP_URL)
// because other users can read a password on the command line. Other
// WALRELAY_ variables of this process are left out, so that they cannot
// change the relay under test.
func (r *runner) startChild(name string, args ...string) (*child, error) {
	cmd := exec.Command(r.cfg.Executable, args...)

	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, r.cfg.childEnv...)
	cmd.Env = append(cmd.Env, envPrefix+"PG_URL="+r.env.dbURL, envPrefix+"AMQP_URL="+r.env.amqpURL)

	c := &child{name: name, cmd: cmd, output: &tailBuffer{max: 4096}, done: make(chan struct{})}
	cmd.Stdout = c.output
	cmd.Stderr = c.output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, r.cfg.Executable, err)
	}

	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// envPrefix is the prefix of walrelay's environment variables.
const envPrefix = "WALRELAY_"

// stop sends SIGTERM and waits up to 60 s for the process to exit, then
// kills it. It returns an error when the process failed or had to be
// killed, with the end of its output.
func (c *child) stop() error {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}

	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 60s of SIGTERM and was killed; its last output: %s", c.name, c.output)
	}

	if c.err != nil {
		return fmt.Errorf("%s failed: %w; its last output: %s", c.name, c.err, c.output)
	}
	return nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// await waits for the receiver's messages while the process runs. On
// failure the error carries the end of the process's output.
func (c *child) await(ctx context.Context, recv *receiver) error {
	if err := recv.wait(ctx, idleTimeout, c.done); err != nil {
		return fmt.Errorf("%w; %s output so far: %s", err, c.name, c.output)
	}
	return nil
}

// procCPU returns the user plus system CPU time of process pid so far.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of process %d: %w", pid, err)
	}

	// The command name in parentheses may contain spaces. The fields after
	// it start with the state (field 3), so utime (14) and stime (15) are
	// the 12th and 13th.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
	}

	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected CPU time %q in /proc/%d/stat: %w", f, pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// threadCPU returns the CPU time of the single-threaded process pid in
// nanoseconds from /proc/PID/schedstat (the scheduler's run time, user plus
// system), which is finer than the 10 ms ticks of /proc/PID/stat. It falls
// back to procCPU where schedstat is missing. schedstat covers one thread
// only, so it does not suit a Go process.
func threadCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return procCPU(pid)
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return procCPU(pid)
	}
	ns, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return procCPU(pid)
	}
	return time.Duration(ns), nil
}

// procPeakRSS returns the peak resident set size of process pid (VmHWM).
func procPeakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the memory use of process %d: %w", pid, err)
	}

	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected VmHWM line %q in /proc/%d/status: %w", line, pid, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// backendCPU sums the CPU time of the Postgres backends serving the relay
// under test: every client backend and walsender of the run's database but
// the benchmark's own connections. ok is false when the backends are not
// processes of this machine (a remote server), so their CPU cannot be read.
func (e *env) backendCPU(ctx context.Context) (total time.Duration, ok bool, err error) {
	rows, err := e.db.Query(ctx, `
		SELECT pid FROM pg_stat_activity
		WHERE datname = $1 AND backend_type IN ('client backend', 'walsender')
		  AND application_name <> $2`, e.database, benchAppName)
	if err != nil {
		return 0, false, fmt.Errorf("list the relay's Postgres backends: %w", err)
	}
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("list the relay's Postgres backends: %w", err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("list the relay's Postgres backends: %w", err)
	}

	for _, pid := range pids {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			return 0, false, nil
		}
		cpu, err := threadCPU(pid)
		if err != nil {
			return 0, false, nil
		}
		total += cpu
	}
	return total, len(pids) > 0, nil
}

// measureCPU reads the CPU time of the relay process c and of its Postgres
// backends, for n messages relayed in elapsed.
func (r *runner) measureCPU(ctx context.Context, c *child, n int, elapsed time.Duration) (*ProcessCPU, error) {
	relayCPU, err := procCPU(c.pid())
	if err != nil {
		return nil, err
	}
	backend, ok, err := r.env.backendCPU(ctx)
	if err != nil {
		return nil, err
	}

	pc := &ProcessCPU{
		Messages:         n,
		MsgsPerS:         rate(n, elapsed),
		RelayCPUMS:       ms(relayCPU),
		BackendsMeasured: ok,
	}
	pc.RelayCPUMSPer100k = pc.RelayCPUMS * 100_000 / float64(n)
	if ok {
		pc.BackendCPUMS = ms(backend)
		pc.BackendCPUMSPer100 = pc.BackendCPUMS * 100_000 / float64(n)
	}
	return pc, nil
}

// waitSlotActive waits until a walsender streams from slot, which a relay
// process does once it is set up. It fails after 60 s or when stopped is
// closed.
func (e *env) waitSlotActive(ctx context.Context, slot string, stopped <-chan struct{}) error {
	deadline := time.Now().Add(idleTimeout)
	for {
		var active bool
		err := e.db.QueryRow(ctx, "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if err != nil {
			return fmt.Errorf("look up replication slot %s: %w", slot, err)
		}
		if active {
			return nil
		}

		select {
		case <-stopped:
			return fmt.Errorf("the relay process exited before it streamed from slot %s", slot)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no relay streamed from slot %s within %s", slot, idleTimeout)
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == 0 {
		return "(none)"
	}
	return strings.TrimSpace(string(t.buf))
}
