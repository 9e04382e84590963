// Package bench measures walrelay against the broker's own limit and against
// a classic polling relay, on the local PostgreSQL and RabbitMQ, and reports
// the figures as a markdown table or as JSON.
//
// The invariant: every object a run creates (its database, replication
// slots, exchange and queue) carries the run's id in its name and is removed
// when the run ends, whether it succeeds, fails or is cancelled. Only a
// process killed with SIGKILL leaves them behind; their names then start
// with walrelay_bench_.
//
// Every rate is counted up to the last message that the benchmark's own
// consumer receives. Every latency is taken on one clock, in one process:
// the inserting goroutine records the time right after COMMIT returns, and
// the consuming goroutine records the time a delivery arrives.
package bench
