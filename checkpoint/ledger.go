package checkpoint

import (
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Position is a flushed WAL position and the commit time of the newest
// transaction at or before it; CommitTime is zero when only keepalives have
// moved the position since the start.
type Position struct {
	LSN        pglogrepl.LSN
	CommitTime time.Time
}

// Resume describes what a new replication session may skip because the
// previous session already had it confirmed.
type Resume struct {
	// Flushed is the position up to which every message is confirmed.
	Flushed Position

	// HeadCommitLSN and HeadConfirmed describe the oldest unfinished
	// transaction: the server sends it again from its start, and its first
	// HeadConfirmed messages were already confirmed. HeadCommitLSN is zero
	// when there is no such transaction.
	HeadCommitLSN pglogrepl.LSN
	HeadConfirmed int
}

// txn is one transaction in the ledger. Messages carry consecutive sequence
// numbers, so a transaction only records the range it spans.
type txn struct {
	commitLSN  pglogrepl.LSN
	endLSN     pglogrepl.LSN
	commitTime time.Time
	firstSeq   uint64 // sequence number of its first message
	nextSeq    uint64 // one past its last message; equals firstSeq when empty
	committed  bool
}

// Ledger tracks in-flight transactions and confirmed messages, and computes
// the flush position. Its methods are safe for concurrent use: the stream
// goroutine adds transactions and messages while the confirm goroutine
// confirms them.
type Ledger struct {
	mu sync.Mutex

	txns []txn // oldest first; only the last one may be open
	open bool

	nextSeq        uint64              // sequence number of the next message
	nextUnconfirm  uint64              // lowest sequence number not yet confirmed
	earlyConfirmed map[uint64]struct{} // confirmed numbers above nextUnconfirm

	flushed Position
}

// NewLedger returns a ledger whose flush position starts at start, the
// position the replication session started from.
func NewLedger(start Position) *Ledger {
	return &Ledger{
		nextSeq:        1,
		nextUnconfirm:  1,
		earlyConfirmed: make(map[uint64]struct{}),
		flushed:        start,
	}
}

// Begin opens a transaction whose commit record is at commitLSN. It returns
// an error when a transaction is already open, which means the stream lost a
// Commit message.
func (l *Ledger) Begin(commitLSN pglogrepl.LSN, commitTime time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()

	if l.open {
		last := l.txns[len(l.txns)-1]
		return fmt.Errorf("begin of transaction %s while transaction %s is still open", commitLSN, last.commitLSN)
	}

	l.txns = append(l.txns, txn{
		commitLSN:  commitLSN,
		commitTime: commitTime,
		firstSeq:   l.nextSeq,
		nextSeq:    l.nextSeq,
	})
	l.open = true

	return nil
}

// Add records one message of the open transaction and returns its sequence
// number. It returns an error when no transaction is open.
func (l *Ledger) Add() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if !l.open {
		return 0, fmt.Errorf("message outside a transaction")
	}

	seq := l.nextSeq
	l.nextSeq++
	l.txns[len(l.txns)-1].nextSeq = l.nextSeq

	return seq, nil
}

// Commit closes the open transaction at endLSN, the end of its commit
// record. It reports whether the flush position advanced, which happens when
// the transaction had no unconfirmed messages and nothing older is pending.
func (l *Ledger) Commit(endLSN pglogrepl.LSN) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if !l.open {
		return false, fmt.Errorf("commit at %s without an open transaction", endLSN)
	}

	last := len(l.txns) - 1
	tx := &l.txns[last]
	tx.endLSN = endLSN
	tx.committed = true
	l.open = false

	// An empty transaction behind pending ones folds into its predecessor:
	// it becomes flushable exactly when the predecessor does, and the ledger
	// stays bounded by the number of messages in flight however many empty
	// transactions other tables produce.
	if tx.firstSeq == tx.nextSeq && last > 0 {
		prev := &l.txns[last-1]
		prev.endLSN = tx.endLSN
		prev.commitTime = tx.commitTime
		l.txns = l.txns[:last]
	}

	return l.advance(), nil
}

// Confirm marks the message with sequence number seq as confirmed by the
// broker, in any order. It reports whether the flush position advanced.
func (l *Ledger) Confirm(seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()

	if seq < l.nextUnconfirm || seq >= l.nextSeq {
		return false
	}

	if seq != l.nextUnconfirm {
		l.earlyConfirmed[seq] = struct{}{}
		return false
	}

	l.nextUnconfirm++
	for {
		if _, ok := l.earlyConfirmed[l.nextUnconfirm]; !ok {
			break
		}
		delete(l.earlyConfirmed, l.nextUnconfirm)
		l.nextUnconfirm++
	}

	return l.advance()
}

// Idle moves the flush position to serverWALEnd, the position of a server
// keepalive, when no transaction is open and no message is unconfirmed. It
// reports whether the position advanced.
func (l *Ledger) Idle(serverWALEnd pglogrepl.LSN) bool {
	l.mu.Lock()
	defer l.mu.Unlock()

	if l.open || len(l.txns) > 0 || l.nextUnconfirm != l.nextSeq {
		return false
	}
	if serverWALEnd <= l.flushed.LSN {
		return false
	}

	l.flushed.LSN = serverWALEnd

	return true
}

// advance drops the leading transactions whose messages are all confirmed
// and moves the flush position to the end of the last one dropped.
func (l *Ledger) advance() bool {
	dropped := 0
	for dropped < len(l.txns) {
		tx := l.txns[dropped]
		if !tx.committed || tx.nextSeq > l.nextUnconfirm {
			break
		}
		if tx.endLSN > l.flushed.LSN {
			l.flushed = Position{LSN: tx.endLSN, CommitTime: tx.commitTime}
		}
		dropped++
	}

	if dropped == 0 {
		return false
	}

	// Shift in place so the backing array is reused instead of growing.
	n := copy(l.txns, l.txns[dropped:])
	l.txns = l.txns[:n]

	return true
}

// Flushed returns the position that may be reported to Postgres.
func (l *Ledger) Flushed() Position {
	l.mu.Lock()
	defer l.mu.Unlock()

	return l.flushed
}

// InFlight returns the number of messages added but not yet confirmed.
func (l *Ledger) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()

	return int(l.nextSeq - l.nextUnconfirm)
}

// Resume returns what a following session may skip: the flushed position
// and how many leading messages of the oldest unfinished transaction are
// confirmed.
func (l *Ledger) Resume() Resume {
	l.mu.Lock()
	defer l.mu.Unlock()

	r := Resume{Flushed: l.flushed}
	if len(l.txns) == 0 {
		return r
	}

	head := l.txns[0]
	r.HeadCommitLSN = head.commitLSN
	confirmed := l.nextUnconfirm - head.firstSeq
	if l.nextUnconfirm < head.firstSeq {
		confirmed = 0
	}
	if total := head.nextSeq - head.firstSeq; confirmed > total {
		confirmed = total
	}
	r.HeadConfirmed = int(confirmed)

	return r
}
