// Package sink publishes encoded outbox messages to RabbitMQ with publisher
// confirms and reports the broker's outcome of each one.
//
// The invariant: every Confirmation carries the caller's sequence number of
// the message the broker confirmed, and Confirmations arrive in the order
// of the Publish calls. A message is reported Acked only when the broker
// acked it and returned nothing for it. A message the broker did not
// confirm before the connection or channel closed gets no Confirmation at
// all, so the caller must treat it as unconfirmed and
// publish it again. If the mapping from delivery tags to sequence numbers
// is ever in doubt, the publisher closes instead of guessing.
//
// A Publisher owns one connection and one channel in confirm mode. One
// goroutine reads amqp091's listener channels (confirmations, returns,
// close and flow-control notifications) and does not wait for the caller
// to read Confirmations, so amqp091's reader goroutine is not held up by a
// slow caller. Unroutable
// messages are published with the mandatory flag: RabbitMQ sends their
// basic.return before their basic.ack, and amqp091 passes both on from its
// reader goroutine in that order, so a return is always recorded before the
// ack it belongs to is resolved.
//
// The publisher does not reconnect. After Done is closed, read
// Confirmations until it is closed, then Close and Dial a new Publisher.
package sink
