package sink

import (
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Outcome is the result the broker reported for one published message.
type Outcome uint8

const (
	// Acked: the broker took responsibility for the message (it is on every
	// queue it was routed to, persisted where the queue is durable).
	Acked Outcome = iota + 1

	// Nacked: the broker refused the message, for example because a queue
	// with x-overflow reject-publish is full. Publishing it again may work
	// later.
	Nacked

	// Returned: no queue was bound for the message's routing key, so the
	// broker returned it (basic.return, reply code 312 NO_ROUTE) and then
	// acked it. The message reached no consumer.
	Returned
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Nacked:
		return "nacked"
	case Returned:
		return "returned"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Confirmation is the outcome of one Publish call.
type Confirmation struct {
	// Seq is the sequence number the caller passed to Publish.
	Seq     uint64
	Outcome Outcome

	MessageID  string
	Exchange   string
	RoutingKey string

	// ReplyCode and ReplyText are the basic.return reason when Outcome is
	// Returned (312 NO_ROUTE for an unroutable message).
	ReplyCode uint16
	ReplyText string
}

// inFlight is one published message that the broker has not confirmed yet.
type inFlight struct {
	tag        uint64 // the channel's delivery tag
	seq        uint64 // the caller's sequence number
	messageID  string
	exchange   string
	routingKey string
}

// returnKey identifies a returned message. basic.return carries no delivery
// tag, so a return is matched to the next confirmed message with the same
// id, exchange and routing key.
type returnKey struct {
	messageID, exchange, routingKey string
}

type returnReason struct {
	code uint16
	text string
}

// tracker maps delivery tags to the caller's sequence numbers. Publish
// appends under mu, and the confirmation goroutine removes from the front.
type tracker struct {
	mu      sync.Mutex
	pending queue[inFlight]

	// returns is used by the confirmation goroutine only. Each entry
	// counts returns not yet matched to a confirmation.
	returns map[returnKey][]returnReason
}

func newTracker() *tracker {
	return &tracker{returns: make(map[returnKey][]returnReason)}
}

func (t *tracker) push(m inFlight) {
	t.mu.Lock()
	t.pending.pushBack(m)
	t.mu.Unlock()
}

// dropBack removes the message with delivery tag tag, which must be the last
// one pushed, after its publish failed.
func (t *tracker) dropBack(tag uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.pending.back(); ok && last.tag == tag {
		t.pending.popBack()
	}
}

func (t *tracker) addReturn(r amqp.Return) {
	key := returnKey{messageID: r.MessageId, exchange: r.Exchange, routingKey: r.RoutingKey}
	t.returns[key] = append(t.returns[key], returnReason{code: r.ReplyCode, text: r.ReplyText})
}

// takeReturn removes and returns the oldest unmatched return for key.
func (t *tracker) takeReturn(key returnKey) (returnReason, bool) {
	if len(t.returns) == 0 {
		return returnReason{}, false // the usual case, which skips hashing the key
	}
	reasons := t.returns[key]
	if len(reasons) == 0 {
		return returnReason{}, false
	}
	r := reasons[0]
	if len(reasons) == 1 {
		delete(t.returns, key)
	} else {
		t.returns[key] = reasons[1:]
	}
	return r, true
}

// resolve turns the broker's confirmation c into the caller's Confirmation.
// amqp091 delivers confirmations in delivery-tag order, one per tag, so c
// must be for the oldest message in flight. Any other tag means the mapping
// from tags to sequence numbers is lost, and resolve returns an error.
//
// Returns must be recorded before resolve is called: RabbitMQ sends the
// basic.return of an unroutable message before its basic.ack, and amqp091
// passes both on from one goroutine in that order.
func (t *tracker) resolve(c amqp.Confirmation) (Confirmation, error) {
	t.mu.Lock()
	m, ok := t.pending.popFront()
	t.mu.Unlock()
	if !ok {
		return Confirmation{}, fmt.Errorf("broker confirmed delivery tag %d, but no published message is waiting for a confirmation", c.DeliveryTag)
	}
	if m.tag != c.DeliveryTag {
		return Confirmation{}, fmt.Errorf("broker confirmed delivery tag %d, but delivery tag %d (sequence %d) was expected next", c.DeliveryTag, m.tag, m.seq)
	}

	conf := Confirmation{
		Seq:        m.seq,
		Outcome:    Acked,
		MessageID:  m.messageID,
		Exchange:   m.exchange,
		RoutingKey: m.routingKey,
	}

	// A nack wins over a return, but the return is used up either way so
	// that it cannot attach to a later message with the same key.
	reason, returned := t.takeReturn(returnKey{messageID: m.messageID, exchange: m.exchange, routingKey: m.routingKey})
	switch {
	case !c.Ack:
		conf.Outcome = Nacked
	case returned:
		conf.Outcome = Returned
		conf.ReplyCode = reason.code
		conf.ReplyText = reason.text
	}
	return conf, nil
}

// notifications holds the amqp091 listener channels that run reads.
type notifications struct {
	confirms  chan amqp.Confirmation
	returns   chan amqp.Return
	connClose chan *amqp.Error
	chanClose chan *amqp.Error
	blocked   chan amqp.Blocking
}

// run turns broker confirmations into Confirmations until the channel's
// confirmation listener closes, which amqp091 does when the channel or the
// connection closes. While Confirmations is full, outcomes wait in an
// internal queue, so run keeps reading amqp091's listeners. This matters
// because amqp091 (v1.17.0) drops a notification that a listener has not
// taken within 5 seconds.
func (p *Publisher) run(n notifications) {
	defer p.wg.Done()
	defer close(p.confirmations)

	var out queue[Confirmation]
	broken := false

	for n.confirms != nil {
		var send chan<- Confirmation
		var next Confirmation
		if out.len() > 0 {
			send = p.confirmations
			next, _ = out.front()
		}

		select {
		case c, ok := <-n.confirms:
			if !ok {
				n.confirms = nil
				break
			}
			if broken {
				break
			}
			p.drainReturns(&n)
			conf, err := p.tracker.resolve(c)
			if err != nil {
				// Outcomes after this point cannot be matched to sequence
				// numbers, so none is reported and the connection closes.
				broken = true
				p.fail(fmt.Errorf("%w: %w", ErrClosed, err))
				p.closeConnectionAsync()
				break
			}
			out.pushBack(conf)

		case r, ok := <-n.returns:
			if !ok {
				n.returns = nil
				break
			}
			p.tracker.addReturn(r)

		case e, ok := <-n.connClose:
			if !ok {
				n.connClose = nil
			}
			p.fail(newCloseError("connection", e))

		case e, ok := <-n.chanClose:
			if !ok {
				n.chanClose = nil
			}
			p.fail(newCloseError("channel", e))

		case b, ok := <-n.blocked:
			if !ok {
				n.blocked = nil
				break
			}
			p.setBlocked(b)

		case send <- next:
			out.popFront()
		}
	}

	// The channel is gone. Keep a close reason that is still buffered. The
	// connection's reason is the more precise one when both closed.
	select {
	case e := <-n.connClose:
		p.fail(newCloseError("connection", e))
	default:
	}
	select {
	case e := <-n.chanClose:
		p.fail(newCloseError("channel", e))
	default:
	}
	p.fail(fmt.Errorf("broker channel closed: %w", ErrClosed))
	p.gate.set(false)

	// A channel error leaves the connection open, but nothing more can be
	// published on it.
	p.closeConnection()

	for out.len() > 0 {
		next, _ := out.front()
		select {
		case p.confirmations <- next:
			out.popFront()
		case <-p.closing:
			return
		}
	}
}

// drainReturns records every return that is already waiting, without
// blocking.
func (p *Publisher) drainReturns(n *notifications) {
	for n.returns != nil {
		select {
		case r, ok := <-n.returns:
			if !ok {
				n.returns = nil
				return
			}
			p.tracker.addReturn(r)
		default:
			return
		}
	}
}

// queue is a FIFO on a slice that reuses its array once drained.
type queue[T any] struct {
	items []T
	head  int
}

func (q *queue[T]) len() int { return len(q.items) - q.head }

func (q *queue[T]) pushBack(v T) { q.items = append(q.items, v) }

func (q *queue[T]) front() (T, bool) {
	var zero T
	if q.len() == 0 {
		return zero, false
	}
	return q.items[q.head], true
}

func (q *queue[T]) back() (T, bool) {
	var zero T
	if q.len() == 0 {
		return zero, false
	}
	return q.items[len(q.items)-1], true
}

func (q *queue[T]) popFront() (T, bool) {
	var zero T
	if q.len() == 0 {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++

	switch {
	case q.head == len(q.items):
		q.items = q.items[:0]
		q.head = 0
	case q.head >= 1024 && q.head*2 >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	return v, true
}

func (q *queue[T]) popBack() {
	if q.len() == 0 {
		return
	}
	var zero T
	q.items[len(q.items)-1] = zero
	q.items = q.items[:len(q.items)-1]
	if q.len() == 0 {
		q.items = q.items[:0]
		q.head = 0
	}
}
