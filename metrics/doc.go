// Package metrics turns the relay's events into Prometheus metrics and
// health checks, and serves them over HTTP at /metrics, /healthz and
// /readyz.
//
// A Metrics value implements relay.Observer. Its invariant: every method
// only updates collectors and atomic values and returns (the first SlotLag
// call also registers its gauge), so the relay's loops never wait on a
// scrape or a probe. Each Metrics has its own
// registry, so two of them (in tests, say) share nothing.
//
// Liveness and readiness are derived from the same events: the relay is
// live while its stream loop keeps calling Alive (or while it is not
// streaming and retries on its own), and ready while it streams from the
// slot with a broker connection that is not blocked.
package metrics
