package sink

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// newTestPublisher returns a Publisher without a connection, for driving
// run with hand-made amqp091 notifications.
func newTestPublisher(buffer int) *Publisher {
	return &Publisher{
		log:           zerolog.Nop(),
		tracker:       newTracker(),
		confirmations: make(chan Confirmation, buffer),
		done:          make(chan struct{}),
		closing:       make(chan struct{}),
	}
}

func newTestNotifications(buffer int) notifications {
	return notifications{
		confirms:  make(chan amqp.Confirmation, buffer),
		returns:   make(chan amqp.Return, buffer),
		connClose: make(chan *amqp.Error, 1),
		chanClose: make(chan *amqp.Error, 1),
		blocked:   make(chan amqp.Blocking, 1),
	}
}

// runToEnd runs p.run over n, whose confirms channel the caller has closed,
// and returns every Confirmation.
func runToEnd(t *testing.T, p *Publisher, n notifications) []Confirmation {
	t.Helper()
	p.wg.Add(1)
	go p.run(n)

	var got []Confirmation
	timeout := time.After(5 * time.Second)
	for {
		select {
		case c, ok := <-p.confirmations:
			if !ok {
				p.wg.Wait()
				return got
			}
			got = append(got, c)
		case <-timeout:
			t.Fatalf("run did not close Confirmations")
		}
	}
}

func TestRunMatchesReturnWaitingBesideItsAck(t *testing.T) {
	// When a return and its ack are both waiting, select picks either one
	// first; the return must still be matched. Repeat to cover both picks.
	for i := 0; i < 200; i++ {
		p := newTestPublisher(10)
		n := newTestNotifications(10)

		p.tracker.push(inFlight{tag: 1, seq: 11, messageID: "m1", exchange: "ex", routingKey: "nowhere"})
		p.tracker.push(inFlight{tag: 2, seq: 12, messageID: "m2", exchange: "ex", routingKey: "routed"})
		n.returns <- amqp.Return{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "ex", RoutingKey: "nowhere", MessageId: "m1"}
		n.confirms <- amqp.Confirmation{DeliveryTag: 1, Ack: true}
		n.confirms <- amqp.Confirmation{DeliveryTag: 2, Ack: true}
		close(n.confirms)

		got := runToEnd(t, p, n)
		if len(got) != 2 {
			t.Fatalf("run %d: got %d confirmations, want 2", i, len(got))
		}
		if got[0].Seq != 11 || got[0].Outcome != Returned || got[0].ReplyCode != 312 || got[0].ReplyText != "NO_ROUTE" {
			t.Fatalf("run %d: first confirmation = %+v, want seq 11 returned 312 NO_ROUTE", i, got[0])
		}
		if got[1].Seq != 12 || got[1].Outcome != Acked {
			t.Fatalf("run %d: second confirmation = %+v, want seq 12 acked", i, got[1])
		}
	}
}

func TestRunReportsNackAndUsesUpReturn(t *testing.T) {
	p := newTestPublisher(10)
	n := newTestNotifications(10)

	p.tracker.push(inFlight{tag: 1, seq: 1, messageID: "same", exchange: "ex", routingKey: "k"})
	p.tracker.push(inFlight{tag: 2, seq: 2, messageID: "same", exchange: "ex", routingKey: "k"})
	n.returns <- amqp.Return{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "ex", RoutingKey: "k", MessageId: "same"}
	n.confirms <- amqp.Confirmation{DeliveryTag: 1, Ack: false}
	n.confirms <- amqp.Confirmation{DeliveryTag: 2, Ack: true}
	close(n.confirms)

	got := runToEnd(t, p, n)
	if len(got) != 2 {
		t.Fatalf("got %d confirmations, want 2", len(got))
	}
	if got[0].Outcome != Nacked {
		t.Errorf("seq 1: Outcome = %v, want nacked", got[0].Outcome)
	}
	if got[1].Outcome != Acked {
		t.Errorf("seq 2: Outcome = %v, want acked (the return belonged to seq 1)", got[1].Outcome)
	}
}

func TestRunStopsOnOutOfStepTag(t *testing.T) {
	p := newTestPublisher(10)
	n := newTestNotifications(10)

	p.tracker.push(inFlight{tag: 1, seq: 1, messageID: "m1"})
	p.tracker.push(inFlight{tag: 2, seq: 2, messageID: "m2"})
	n.confirms <- amqp.Confirmation{DeliveryTag: 2, Ack: true}
	close(n.confirms)

	got := runToEnd(t, p, n)
	if len(got) != 0 {
		t.Errorf("got confirmations %+v after an out-of-step delivery tag, want none", got)
	}
	err := p.Err()
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Err() = %v, want an error wrapping ErrClosed", err)
	}
	if err == nil || !strings.Contains(err.Error(), "delivery tag 1 (sequence 1) was expected next") {
		t.Errorf("Err() = %v, want it to name the expected delivery tag", err)
	}
}

func TestRunKeepsCloseReason(t *testing.T) {
	p := newTestPublisher(10)
	n := newTestNotifications(10)

	p.tracker.push(inFlight{tag: 1, seq: 1, messageID: "m1"})
	p.tracker.push(inFlight{tag: 2, seq: 2, messageID: "m2"})
	n.confirms <- amqp.Confirmation{DeliveryTag: 1, Ack: true}
	n.connClose <- &amqp.Error{Code: 320, Reason: "CONNECTION_FORCED - broker forced connection closure", Server: true, Recover: true}
	close(n.confirms)

	got := runToEnd(t, p, n)
	if len(got) != 1 || got[0].Seq != 1 {
		t.Errorf("confirmations = %+v, want only seq 1 (seq 2 was never confirmed)", got)
	}
	var closeErr *CloseError
	if !errors.As(p.Err(), &closeErr) || closeErr.Code != 320 || closeErr.Scope != "connection" || !closeErr.Recover {
		t.Errorf("Err() = %v, want the connection's 320 close", p.Err())
	}
	select {
	case <-p.Done():
	default:
		t.Errorf("Done not closed")
	}
}

func TestRunDoesNotWaitForSlowReader(t *testing.T) {
	// Confirmations has room for one, but run must keep reading amqp091's
	// listener so that its reader goroutine never gives up on a delivery.
	p := newTestPublisher(1)
	n := newTestNotifications(100)
	for tag := uint64(1); tag <= 100; tag++ {
		p.tracker.push(inFlight{tag: tag, seq: tag})
		n.confirms <- amqp.Confirmation{DeliveryTag: tag, Ack: true}
	}

	p.wg.Add(1)
	go p.run(n)

	deadline := time.Now().Add(5 * time.Second)
	for len(n.confirms) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("run left %d amqp091 confirmations unread while Confirmations was full", len(n.confirms))
		}
		time.Sleep(time.Millisecond)
	}

	close(n.confirms)
	for seq := uint64(1); seq <= 100; seq++ {
		c := <-p.confirmations
		if c.Seq != seq {
			t.Fatalf("confirmation Seq = %d, want %d", c.Seq, seq)
		}
	}
	p.wg.Wait()
}

func TestTrackerDropBackAfterFailedPublish(t *testing.T) {
	tr := newTracker()
	tr.push(inFlight{tag: 1, seq: 1})
	tr.push(inFlight{tag: 2, seq: 2})
	tr.dropBack(2)
	tr.dropBack(7) // not the last tag: ignored
	tr.push(inFlight{tag: 2, seq: 3})

	// The failed publish gave up tag 2, so the next publish reuses it.
	for _, want := range []struct{ tag, seq uint64 }{{1, 1}, {2, 3}} {
		c, err := tr.resolve(amqp.Confirmation{DeliveryTag: want.tag, Ack: true})
		if err != nil {
			t.Fatalf("resolve tag %d: %v", want.tag, err)
		}
		if c.Seq != want.seq {
			t.Errorf("tag %d: Seq = %d, want %d", want.tag, c.Seq, want.seq)
		}
	}
	if _, err := tr.resolve(amqp.Confirmation{DeliveryTag: 3, Ack: true}); err == nil {
		t.Errorf("resolve with nothing in flight: got no error")
	}
}

func TestQueueCompacts(t *testing.T) {
	var q queue[int]
	for i := 0; i < 5000; i++ {
		q.pushBack(i)
	}
	for i := 0; i < 4000; i++ {
		v, ok := q.popFront()
		if !ok || v != i {
			t.Fatalf("popFront = %d, %v; want %d", v, ok, i)
		}
	}
	if q.len() != 1000 {
		t.Fatalf("len = %d, want 1000", q.len())
	}
	if q.head > 1024 {
		t.Errorf("head = %d: the drained prefix was not reclaimed", q.head)
	}
	if v, _ := q.front(); v != 4000 {
		t.Errorf("front = %d, want 4000", v)
	}
	if v, _ := q.back(); v != 4999 {
		t.Errorf("back = %d, want 4999", v)
	}
	q.popBack()
	if v, _ := q.back(); v != 4998 {
		t.Errorf("back after popBack = %d, want 4998", v)
	}
}

func TestCloseErrorText(t *testing.T) {
	err := newCloseError("channel", &amqp.Error{Code: 404, Reason: "NOT_FOUND - no exchange 'x' in vhost '/'", Server: true})
	want := "broker channel closed with 404 NOT_FOUND - no exchange 'x' in vhost '/'"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("CloseError does not wrap ErrClosed")
	}
}
