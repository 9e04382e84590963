// Package inbox is the consumer half of the outbox pattern: it records each
// broker message in Event-Forge's inbox table, deduplicated on
// (message_id, source), so that at-least-once delivery gives exactly-once
// effects.
//
// Two parts share the table handling:
//
//   - Consumer, behind `walrelay inbox`, consumes a queue and records each
//     message with INSERT ... ON CONFLICT (message_id, source) DO NOTHING,
//     many deliveries per statement. It acks a delivery only after the
//     statement that recorded it, or found it recorded, has committed. A
//     crash between commit and ack therefore ends in a redelivery that the
//     unique key absorbs, never in a lost or doubled row.
//   - Processor, for applications, records a message and runs its handler
//     in one transaction, so the handler's writes commit exactly when the
//     row is marked processed. A duplicate never runs the handler again.
//
// Both read the table's columns once at start and write only the columns
// the table has. So both work with the TypeScript library's table (uuid id
// with a default, retry columns) and with the Python library's (varchar(36)
// id without a default, json payload, no retry columns). walrelay supplies
// the id itself.
package inbox
