//go:build soak

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walrelay/walrelay/internal/testenv"
)

// The faults the soak injects. Broker alarms and server restarts are left
// out because they disturb everything else that uses the local servers.
const (
	faultWalsender   = "walsender terminated"
	faultPostgresCut = "Postgres connection cut"
	faultBrokerCut   = "broker connection cut"
	faultBrokerStall = "broker connection stalled"
	faultKill        = "process killed (SIGKILL) and restarted"
)

var faultKinds = []string{faultWalsender, faultPostgresCut, faultBrokerCut, faultBrokerStall, faultKill}

// injector injects one random fault at a time into the relay process.
type injector struct {
	t     *testing.T
	rng   *rand.Rand
	pgURL string
	slot  string
	pg    *testenv.Proxy // in front of Postgres, for the relay only
	amqp  *testenv.Proxy // in front of RabbitMQ, for the relay only
	logs  *logFile
	args  []string

	relay   *relayProcess
	started time.Time
	counts  map[string]int
}

// inject picks a fault, causes it, undoes it where it has an end, and
// logs what it did.
func (in *injector) inject() {
	t := in.t
	t.Helper()

	kind := faultKinds[in.rng.IntN(len(faultKinds))]
	at := time.Since(in.started).Round(time.Second)
	detail := ""

	switch kind {
	case faultWalsender:
		detail = in.terminateWalsender()

	case faultPostgresCut:
		in.pg.Cut()
		d := sleepBetween(in.rng, 200*time.Millisecond, 3*time.Second)
		in.pg.Restore()
		detail = fmt.Sprintf("for %s", d.Round(time.Millisecond))

	case faultBrokerCut:
		in.amqp.Cut()
		d := sleepBetween(in.rng, 200*time.Millisecond, 3*time.Second)
		in.amqp.Restore()
		detail = fmt.Sprintf("for %s", d.Round(time.Millisecond))

	case faultBrokerStall:
		in.amqp.Stall()
		d := sleepBetween(in.rng, time.Second, 8*time.Second)
		in.amqp.Unstall()
		detail = fmt.Sprintf("for %s", d.Round(time.Millisecond))

	case faultKill:
		in.relay.kill(t)
		d := sleepBetween(in.rng, 0, 2*time.Second)
		in.relay = startRelay(t, in.logs, in.args)
		detail = fmt.Sprintf("after %s", d.Round(time.Millisecond))
	}

	if in.counts == nil {
		in.counts = make(map[string]int)
	}
	in.counts[kind]++
	t.Logf("%6s  %s %s", at, kind, detail)
}

// terminateWalsender ends the walsender that holds the slot, if any.
func (in *injector) terminateWalsender() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Another test may be restarting the server, so a failure here skips
	// the fault instead of failing the soak.
	conn, err := pgx.Connect(ctx, in.pgURL)
	if err != nil {
		return fmt.Sprintf("(skipped: cannot connect to Postgres: %v)", err)
	}
	defer conn.Close(ctx)

	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, in.slot).Scan(&pid)
	if err != nil {
		return fmt.Sprintf("(skipped: cannot query slot %s: %v)", in.slot, err)
	}
	if pid == nil {
		return "(skipped: the slot was not active, the relay was reconnecting)"
	}

	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid); err != nil {
		return fmt.Sprintf("(failed to terminate walsender %d: %v)", *pid, err)
	}
	return fmt.Sprintf("pid %d", *pid)
}

// checkAlive fails the test when the relay process ended on its own, which
// it does only on an error that it considers permanent.
func (in *injector) checkAlive() {
	in.t.Helper()

	if err, exited := in.relay.exited(); exited {
		in.t.Fatalf("walrelay exited on its own (%v); log tail:\n%s", err, in.logs.tail(40))
	}
}

// summary returns the count of each fault injected.
func (in *injector) summary() string {
	total := 0
	var parts []string
	for kind, n := range in.counts {
		total += n
		parts = append(parts, fmt.Sprintf("%d %s", n, kind))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d in all: %s", total, strings.Join(parts, ", "))
}

// sleepBetween sleeps for a random time in [low, high) and returns it.
func sleepBetween(rng *rand.Rand, low, high time.Duration) time.Duration {
	d := low + time.Duration(rng.Int64N(int64(high-low)))
	time.Sleep(d)
	return d
}
