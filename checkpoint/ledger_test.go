package checkpoint

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// step is one ledger operation in a table test; want is the flush LSN
// expected after it.
type step struct {
	op        string // begin, add, commit, confirm, idle
	lsn       pglogrepl.LSN
	seq       uint64
	want      pglogrepl.LSN
	wantError bool
}

func TestLedgerFlushRule(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
	}{
		{
			name: "single message confirmed",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "commit", lsn: 0x120, want: 0x10},
				{op: "confirm", seq: 1, want: 0x120},
			},
		},
		{
			name: "commit start lsn never reported",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "confirm", seq: 1, want: 0x10},
				{op: "commit", lsn: 0x130, want: 0x130},
			},
		},
		{
			name: "out of order confirms across transactions",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "add", seq: 2, want: 0x10},
				{op: "commit", lsn: 0x110, want: 0x10},
				{op: "begin", lsn: 0x200, want: 0x10},
				{op: "add", seq: 3, want: 0x10},
				{op: "commit", lsn: 0x210, want: 0x10},
				{op: "confirm", seq: 3, want: 0x10},
				{op: "confirm", seq: 2, want: 0x10},
				{op: "confirm", seq: 1, want: 0x210},
			},
		},
		{
			name: "partial confirm of multi-row transaction holds",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "add", seq: 2, want: 0x10},
				{op: "add", seq: 3, want: 0x10},
				{op: "commit", lsn: 0x110, want: 0x10},
				{op: "confirm", seq: 1, want: 0x10},
				{op: "confirm", seq: 2, want: 0x10},
				{op: "confirm", seq: 3, want: 0x110},
			},
		},
		{
			name: "empty transaction alone flushes at commit",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "commit", lsn: 0x108, want: 0x108},
			},
		},
		{
			name: "empty transactions behind pending one wait for it",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "commit", lsn: 0x110, want: 0x10},
				{op: "begin", lsn: 0x200, want: 0x10},
				{op: "commit", lsn: 0x210, want: 0x10},
				{op: "begin", lsn: 0x300, want: 0x10},
				{op: "commit", lsn: 0x310, want: 0x10},
				{op: "confirm", seq: 1, want: 0x310},
			},
		},
		{
			name: "idle advance when nothing in flight",
			steps: []step{
				{op: "idle", lsn: 0x500, want: 0x500},
				{op: "idle", lsn: 0x400, want: 0x500},
			},
		},
		{
			name: "idle ignored while a message is unconfirmed",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "commit", lsn: 0x110, want: 0x10},
				{op: "idle", lsn: 0x900, want: 0x10},
				{op: "confirm", seq: 1, want: 0x110},
				{op: "idle", lsn: 0x900, want: 0x900},
			},
		},
		{
			name: "idle ignored while a transaction is open",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "idle", lsn: 0x900, want: 0x10},
			},
		},
		{
			name: "duplicate and unknown confirms are ignored",
			steps: []step{
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "add", seq: 1, want: 0x10},
				{op: "add", seq: 2, want: 0x10},
				{op: "commit", lsn: 0x110, want: 0x10},
				{op: "confirm", seq: 7, want: 0x10},
				{op: "confirm", seq: 1, want: 0x10},
				{op: "confirm", seq: 1, want: 0x10},
				{op: "confirm", seq: 2, want: 0x110},
			},
		},
		{
			name: "protocol errors",
			steps: []step{
				{op: "add", wantError: true, want: 0x10},
				{op: "commit", lsn: 0x110, wantError: true, want: 0x10},
				{op: "begin", lsn: 0x100, want: 0x10},
				{op: "begin", lsn: 0x200, wantError: true, want: 0x10},
			},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger(Position{LSN: 0x10})
			for i, s := range tc.steps {
				var err error
				switch s.op {
				case "begin":
					err = l.Begin(s.lsn, time.Unix(int64(s.lsn), 0))
				case "add":
					var seq uint64
					seq, err = l.Add()
					if err == nil && seq != s.seq {
						t.Fatalf("step %d: add returned seq %d, want %d", i, seq, s.seq)
					}
				case "commit":
					_, err = l.Commit(s.lsn)
				case "confirm":
					l.Confirm(s.seq)
				case "idle":
					l.Idle(s.lsn)
				}
				if (err != nil) != s.wantError {
					t.Fatalf("step %d (%s): error = %v, want error %v", i, s.op, err, s.wantError)
				}
				if got := l.Flushed().LSN; got != s.want {
					t.Fatalf("step %d (%s): flushed = %s, want %s", i, s.op, got, s.want)
				}
			}
		})
	}
}

func TestLedgerCommitTimeFollowsFlush(t *testing.T) {
	l := NewLedger(Position{LSN: 0x10})
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	mustBegin(t, l, 0x100, first)
	seq := mustAdd(t, l)
	mustCommit(t, l, 0x110)
	l.Confirm(seq)

	got := l.Flushed()
	if got.LSN != 0x110 || !got.CommitTime.Equal(first) {
		t.Fatalf("flushed = %+v, want 0/110 at %v", got, first)
	}
}

func TestLedgerInFlightCount(t *testing.T) {
	l := NewLedger(Position{LSN: 0x10})

	mustBegin(t, l, 0x100, time.Time{})
	for range 5 {
		mustAdd(t, l)
	}
	if got := l.InFlight(); got != 5 {
		t.Fatalf("in flight = %d, want 5", got)
	}

	l.Confirm(2)
	l.Confirm(1)
	if got := l.InFlight(); got != 3 {
		t.Fatalf("in flight after two confirms = %d, want 3", got)
	}
}

func TestLedgerResume(t *testing.T) {
	l := NewLedger(Position{LSN: 0x10})

	mustBegin(t, l, 0x100, time.Time{})
	mustAdd(t, l)
	mustCommit(t, l, 0x110)
	l.Confirm(1)

	mustBegin(t, l, 0x200, time.Time{})
	for range 4 {
		mustAdd(t, l)
	}
	l.Confirm(2)
	l.Confirm(3)
	l.Confirm(5) // out of order: not part of the confirmed prefix

	r := l.Resume()
	if r.Flushed.LSN != 0x110 {
		t.Fatalf("resume flushed = %s, want 0/110", r.Flushed.LSN)
	}
	if r.HeadCommitLSN != 0x200 {
		t.Fatalf("resume head = %s, want 0/200", r.HeadCommitLSN)
	}
	if r.HeadConfirmed != 2 {
		t.Fatalf("resume head confirmed = %d, want 2", r.HeadConfirmed)
	}
}

func TestLedgerBoundedByInFlight(t *testing.T) {
	l := NewLedger(Position{LSN: 0x10})

	// One pending message followed by many empty transactions, as when other
	// tables are busy while the broker is slow.
	mustBegin(t, l, 0x100, time.Time{})
	seq := mustAdd(t, l)
	mustCommit(t, l, 0x110)
	for i := range 10000 {
		lsn := pglogrepl.LSN(0x1000 + i*0x10)
		mustBegin(t, l, lsn, time.Time{})
		mustCommit(t, l, lsn+8)
	}

	if got := len(l.txns); got != 1 {
		t.Fatalf("ledger holds %d transactions, want 1", got)
	}

	l.Confirm(seq)
	if got, want := l.Flushed().LSN, pglogrepl.LSN(0x1000+9999*0x10+8); got != want {
		t.Fatalf("flushed = %s, want %s", got, want)
	}
}

func mustBegin(t *testing.T, l *Ledger, lsn pglogrepl.LSN, at time.Time) {
	t.Helper()
	if err := l.Begin(lsn, at); err != nil {
		t.Fatal(err)
	}
}

func mustAdd(t *testing.T, l *Ledger) uint64 {
	t.Helper()
	seq, err := l.Add()
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func mustCommit(t *testing.T, l *Ledger, lsn pglogrepl.LSN) {
	t.Helper()
	if _, err := l.Commit(lsn); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLedgerMessage measures one message through the ledger: a
// transaction of 100 messages is begun, filled, committed and confirmed in
// order, as the relay does under a steady load.
func BenchmarkLedgerMessage(b *testing.B) {
	l := NewLedger(Position{LSN: 0x10})
	lsn := pglogrepl.LSN(0x100)
	b.ReportAllocs()

	for i := 0; i < b.N; i += 100 {
		_ = l.Begin(lsn, time.Time{})
		first, _ := l.Add()
		for range 99 {
			_, _ = l.Add()
		}
		_, _ = l.Commit(lsn + 0x10)
		for seq := first; seq < first+100; seq++ {
			l.Confirm(seq)
		}
		lsn += 0x100
	}
}
