//go:build soak

package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/internal/testenv"
)

// deliveryStats records commits and deliveries of the rows n = 0 .. rows-1.
type deliveryStats struct {
	mu sync.Mutex

	committedAt []time.Time // set by the writer after each commit
	counts      []int32     // deliveries per n
	delays      []time.Duration

	messages int
	distinct int
	highest  int // highest n delivered
	last     int // n of the previous delivery

	lastFirst time.Time // time of the latest first-time delivery
	maxGap    time.Duration
	maxGapAt  time.Time

	orderErrors     int
	firstOrderError string

	consumerReconnects atomic.Int64
}

func newDeliveryStats(rows int) *deliveryStats {
	return &deliveryStats{
		committedAt: make([]time.Time, rows),
		counts:      make([]int32, rows),
		delays:      make([]time.Duration, 0, rows),
		highest:     -1,
		last:        -1,
	}
}

// committed records the commit time of rows [from, from+count).
func (s *deliveryStats) committed(from, count int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()

	for n := from; n < from+count; n++ {
		s.committedAt[n] = at
	}
}

// delivered records one delivery of row n at time now and checks the log
// order rule: each delivery is the next row or a rewind to an earlier one.
func (s *deliveryStats) delivered(n int, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.messages++
	if n < 0 || n >= len(s.counts) {
		s.orderError(fmt.Sprintf("delivery %d has n=%d, outside the rows [0, %d)", s.messages, n, len(s.counts)))
		return
	}

	switch {
	case n > s.highest+1:
		s.orderError(fmt.Sprintf("delivery %d has n=%d while the highest so far is n=%d: a gap", s.messages, n, s.highest))
	case n > s.last && n != s.last+1:
		s.orderError(fmt.Sprintf("delivery %d has n=%d after n=%d: out of order", s.messages, n, s.last))
	}
	s.last = n
	s.highest = max(s.highest, n)

	s.counts[n]++
	if s.counts[n] > 1 {
		return
	}

	// A first-time delivery. The gap counts only the time during which
	// the row was already committed, so the writer's own pauses do not
	// count. A commit time of zero means the writer has not recorded it
	// yet, because the delivery beat the writer's bookkeeping.
	s.distinct++
	commit := s.committedAt[n]
	if commit.IsZero() || commit.After(now) {
		commit = now
	}
	s.delays = append(s.delays, now.Sub(commit))

	if !s.lastFirst.IsZero() {
		gap := now.Sub(later(s.lastFirst, commit))
		if gap > s.maxGap {
			s.maxGap, s.maxGapAt = gap, now
		}
	}
	s.lastFirst = now
}

func (s *deliveryStats) orderError(text string) {
	s.orderErrors++
	if s.firstOrderError == "" {
		s.firstOrderError = text
	}
}

func (s *deliveryStats) distinctCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.distinct
}

// soakReport is what the soak prints and asserts on.
type soakReport struct {
	messages        int
	distinct        int
	firstMissing    int // -1 when none is missing
	maxGap          time.Duration
	maxGapAt        time.Time
	maxDelay        time.Duration
	p99Delay        time.Duration
	orderErrors     int
	firstOrderError string
}

func (s *deliveryStats) report() soakReport {
	s.mu.Lock()
	defer s.mu.Unlock()

	r := soakReport{
		messages:        s.messages,
		distinct:        s.distinct,
		firstMissing:    -1,
		maxGap:          s.maxGap,
		maxGapAt:        s.maxGapAt,
		orderErrors:     s.orderErrors,
		firstOrderError: s.firstOrderError,
	}
	for n, c := range s.counts {
		if c == 0 {
			r.firstMissing = n
			break
		}
	}

	if len(s.delays) > 0 {
		delays := slices.Clone(s.delays)
		slices.Sort(delays)
		r.maxDelay = delays[len(delays)-1]
		r.p99Delay = delays[len(delays)*99/100]
	}

	return r
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// consume receives the queue's messages into stats on a connection of its
// own, straight to the broker, and acks each after recording it. When the
// connection fails, for example because another test restarts the broker,
// it reconnects, and the broker delivers the unacked messages again. The
// returned function stops it.
func consume(t *testing.T, queue string, stats *deliveryStats) func() {
	t.Helper()

	// The first connection is made here so that a broken setup fails at once.
	conn, deliveries := openConsumer(queue)
	if conn == nil {
		t.Fatalf("consume %s on %s: cannot open a consumer", queue, testenv.AMQPURL())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			receive(ctx, deliveries, stats)
			conn.Close()
			if ctx.Err() != nil {
				return
			}

			stats.consumerReconnects.Add(1)
			for conn == nil || conn.IsClosed() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				conn, deliveries = openConsumer(queue)
			}
		}
	}()

	return func() {
		cancel()
		<-done
	}
}

// openConsumer opens a connection and starts consuming queue with manual
// acks. It returns a nil connection on failure.
func openConsumer(queue string) (*amqp.Connection, <-chan amqp.Delivery) {
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		return nil, nil
	}

	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(5000, 0, false)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(queue, "", false, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, nil
	}

	return conn, deliveries
}

// receive records and acks deliveries until the channel closes or ctx ends.
func receive(ctx context.Context, deliveries <-chan amqp.Delivery, stats *deliveryStats) {
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}

			n, err := payloadNumber(d.Body)
			if err != nil {
				stats.mu.Lock()
				stats.orderError(err.Error())
				stats.mu.Unlock()
			} else {
				stats.delivered(n, time.Now())
			}
			_ = d.Ack(false) // a lost ack means a redelivery, which counts as a duplicate
		}
	}
}

// payloadNumber returns payload.n of a message body. It looks for the text
// of Postgres's jsonb output first and decodes JSON only when that fails.
func payloadNumber(body []byte) (int, error) {
	prefix := []byte(`"payload":{"n": `)
	if i := bytes.Index(body, prefix); i >= 0 {
		rest := body[i+len(prefix):]
		if end := bytes.IndexByte(rest, '}'); end > 0 {
			if n, err := strconv.Atoi(string(rest[:end])); err == nil {
				return n, nil
			}
		}
	}

	var msg struct {
		Payload struct {
			N *int `json:"n"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Payload.N == nil {
		return 0, fmt.Errorf("message has no payload.n: %v: %.200s", err, body)
	}
	return *msg.Payload.N, nil
}
