// Package decode turns pgoutput messages (protocol version 1, the payload of
// an XLogData frame) into the events the relay acts on: Begin, Commit, and one
// outbox.Message per outbox row insert or per logical decoding message with
// the configured prefix.
//
// Invariants:
//
//   - Every read checks the remaining length first. A truncated frame, a
//     frame with trailing bytes or a frame out of protocol order returns an
//     error that wraps ErrMalformed and leaves the decoder's state unchanged.
//     Decode must not panic on any input; the truncation tests and FuzzDecode
//     check this.
//   - A row or logical decoding message that is well framed but cannot become
//     an outbox.Message returns a *RowError that names the row id and the
//     column. The stream itself is still intact after a RowError.
//   - Message types that carry no outbox data (Update, Delete, Truncate,
//     Type, Origin) and unknown type bytes return KindNone, never an error.
//     Because of that, the replication connection must not turn on streaming
//     of in-progress transactions (protocol version 2 or later): their stream
//     messages would be skipped, not decoded.
//   - Columns are mapped by name. The relation cache is keyed by relation OID
//     and each Relation message replaces its entry, so a column added or
//     reordered mid-stream takes effect from the next Insert.
//   - Decoded values never alias the input buffer, which the caller may reuse
//     as soon as Decode returns.
//
// A Decoder belongs to one replication connection and one goroutine. Call
// Reset when a new connection starts, because the server announces every
// relation again on each connection.
//
// The protocol is described in the PostgreSQL documentation, chapter "Logical
// Replication Message Formats".
package decode
