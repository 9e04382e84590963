package inbox

// Side names one of the consumer's two servers.
type Side string

// The consumer's servers.
const (
	SidePostgres Side = "postgres"
	SideBroker   Side = "broker"
)

// Observer receives the consumer's events, for metrics and health checks.
// Methods are called from the consumer's loop and must return quickly
// without blocking.
type Observer interface {
	// Received counts deliveries taken from the queue, of which redelivered
	// carry the broker's redelivered flag.
	Received(deliveries, redelivered int)
	// Recorded counts messages inserted into the inbox table and acked.
	Recorded(n int)
	// Duplicates counts deliveries whose message the table contained
	// already. They are acked without a new row.
	Duplicates(n int)
	// Rejected counts deliveries rejected without requeue because they
	// cannot become an inbox row.
	Rejected(n int)
	// Reconnected counts a new session after side failed.
	Reconnected(side Side)
	// Connected sets whether the consumer holds a working connection to both
	// Postgres and the broker and is consuming.
	Connected(connected bool)
}

// nopObserver discards every event.
type nopObserver struct{}

func (nopObserver) Received(int, int) {}
func (nopObserver) Recorded(int)      {}
func (nopObserver) Duplicates(int)    {}
func (nopObserver) Rejected(int)      {}
func (nopObserver) Reconnected(Side)  {}
func (nopObserver) Connected(bool)    {}

// Stats are the consumer's counters since New.
type Stats struct {
	Received    uint64 // deliveries taken from the queue
	Redelivered uint64 // of Received, those with the broker's redelivered flag
	Recorded    uint64 // new inbox rows
	Duplicates  uint64 // deliveries acked without a new row
	Rejected    uint64 // deliveries rejected without requeue
	Reconnects  uint64 // sessions started after a failure
}
