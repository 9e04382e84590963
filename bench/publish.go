package bench

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walrelay/walrelay/outbox"
)

// confirmPublisher is a plain publisher on one channel in confirm mode that
// keeps at most window messages unconfirmed. It sends messages as walrelay
// does: persistent, mandatory, with the encoded message's properties.
// One goroutine uses it.
type confirmPublisher struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	window   int
	pending  int
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
	closed   chan *amqp.Error
}

// dialPublisher connects to the broker and opens a confirm-mode channel.
func dialPublisher(amqpURL string, window int) (*confirmPublisher, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return nil, fmt.Errorf("connect to RabbitMQ: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("open RabbitMQ channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("put channel in confirm mode: %w", err)
	}

	// The confirm buffer has room for a whole window plus one, and no more
	// than a window is ever unconfirmed, so amqp091's reader goroutine does
	// not block on it.
	return &confirmPublisher{
		conn:     conn,
		ch:       ch,
		window:   window,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, window+1)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, window+1)),
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// publish sends p, first waiting for a confirm when the window is full. A
// nack, a returned message or a closed channel is an error.
func (p *confirmPublisher) publish(ctx context.Context, m *outbox.Publishing) error {
	if p.pending >= p.window {
		if err := p.awaitOne(ctx); err != nil {
			return err
		}
	}

	msg := amqp.Publishing{
		Headers:       amqp.Table(m.Headers),
		ContentType:   m.ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: m.CorrelationID,
		MessageId:     m.MessageID,
		Timestamp:     m.Timestamp,
		Type:          m.Type,
		Body:          m.Body,
	}
	if err := p.ch.PublishWithContext(ctx, m.Exchange, m.RoutingKey, true, false, msg); err != nil {
		return fmt.Errorf("publish message %q to exchange %q: %w", m.MessageID, m.Exchange, err)
	}
	p.pending++
	return nil
}

// flush waits until every published message is confirmed.
func (p *confirmPublisher) flush(ctx context.Context) error {
	for p.pending > 0 {
		if err := p.awaitOne(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *confirmPublisher) awaitOne(ctx context.Context) error {
	select {
	case c := <-p.confirms:
		p.pending--
		if !c.Ack {
			return fmt.Errorf("broker rejected (nacked) delivery tag %d", c.DeliveryTag)
		}
	case r := <-p.returns:
		return fmt.Errorf("broker returned message %q as unroutable: %d %s", r.MessageId, r.ReplyCode, r.ReplyText)
	case amqpErr := <-p.closed:
		if amqpErr == nil {
			return fmt.Errorf("RabbitMQ channel closed with %d messages unconfirmed: %w", p.pending, amqp.ErrClosed)
		}
		return fmt.Errorf("RabbitMQ channel closed with %d messages unconfirmed: %w", p.pending, amqpErr)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (p *confirmPublisher) close() {
	_ = p.conn.Close()
}
