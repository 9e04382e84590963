// Package relay wires the stages together: it reads the replication stream,
// decodes outbox inserts, publishes them to the broker and reports the flush
// position that the checkpoint ledger allows.
//
// A session owns one replication connection, one broker connection and one
// ordinary Postgres connection, and runs four goroutines: the stream loop
// (the only user of the replication connection; it never waits on the
// broker, and stops reading while MaxInFlight messages are unconfirmed), the
// publish loop, the confirm loop and the checkpoint loop. Any failure ends
// the session; Run then starts a new one after a backoff, from the last
// flushed position, so the broker sees a duplicated suffix at worst, never a
// gap.
package relay
