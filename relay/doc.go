// Package relay wires the stages together: it reads the replication stream,
// decodes outbox inserts, publishes them to the broker and reports the flush
// position that the checkpoint ledger allows.
//
// A session owns one replication connection, one broker connection and
// ordinary Postgres connections, and runs one goroutine per loop. The stream
// loop is the only user of the replication connection. It never waits on the
// broker, and it stops reading while MaxInFlight messages are unconfirmed.
// The publish, confirm and checkpoint loops always run; the mark and
// retention loops run when configured.
//
// Any failure ends the session. Run then starts a new one after a backoff,
// from the last flushed position, so the broker sees a duplicated suffix at
// worst, never a gap. Before the first session, setup creates the slot and
// publishes from the table the rows its stream cannot contain (backfill).
package relay
