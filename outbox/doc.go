// Package outbox holds the message model, its Event-Forge wire encoding and
// the producer helpers that applications call inside their own transaction.
//
// The wire contract: the routing key is metadata.routingKey when present,
// else "{aggregate_type}.{event_type}"; the exchange is metadata.exchange
// when present, else the configured one; the body is the JSON object
// {"id","aggregateType","aggregateId","eventType","payload","metadata",
// "createdAt"} with payload and metadata passed through as stored.
//
// Encode and AppendBody depend only on their arguments, so a message
// replayed after a failure is encoded as before (only a delay computed from
// scheduled_at shrinks as time passes). The producer helpers Insert and Emit
// write through the caller's transaction and nothing else, so an event is
// relayed exactly when the transaction that wrote it commits.
package outbox
