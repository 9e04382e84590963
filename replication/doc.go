// Package replication owns walrelay's connections to Postgres for logical
// replication: it checks the server, creates or checks the publication and
// the pgoutput slot, starts streaming and exchanges XLogData, keepalives and
// standby status updates.
//
// A Stream is not safe for concurrent use. One goroutine owns it, reads from
// it and sends its status updates. So reading waits on nothing but the
// server, and status updates go out on time even while the caller has
// stopped reading.
package replication
