package relay

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Side names one of the relay's two servers in Observer calls.
type Side string

// The relay's servers.
const (
	SidePostgres Side = "postgres"
	SideBroker   Side = "broker"
)

// Observer receives the relay's events, for metrics and health checks.
// Methods are called from the relay's loops and must return quickly without
// blocking.
type Observer interface {
	// Decoded records the time from a transaction's commit in Postgres to
	// the relay reading one of its rows from the replication stream. Rows
	// that a later session reads again, backfilled rows and
	// non-transactional logical decoding messages are not counted.
	Decoded(sinceCommit time.Duration)
	// Published counts a message handed to the broker.
	Published()
	// Confirmed counts a message the broker confirmed, with the time from
	// publish and from the transaction's commit to the confirm.
	Confirmed(sincePublish, sinceCommit time.Duration)
	// Nacked counts a message the broker rejected.
	Nacked()
	// Returned counts an unroutable message the broker returned.
	Returned()
	// Invalid counts a row that cannot become a message.
	Invalid()
	// DeadLettered counts a message sent to the dead-letter exchange.
	DeadLettered()
	// InFlight sets the number of published but unconfirmed messages.
	InFlight(n int)
	// Flushed sets the position last reported to Postgres as flushed.
	Flushed(lsn pglogrepl.LSN)
	// SlotLag sets the slot's lag behind the server's WAL position, in bytes.
	SlotLag(bytes int64)
	// Reconnected counts a new connection to side after a failure.
	Reconnected(side Side)
	// BrokerBlocked sets whether the broker applies flow control.
	BrokerBlocked(blocked bool)
	// Streaming sets whether a session streams from the slot with a broker
	// connection.
	Streaming(streaming bool)
	// Alive records that the stream loop is running. The loop calls it at
	// least every 100 ms while the relay streams.
	Alive(at time.Time)
}

// nopObserver discards every event.
type nopObserver struct{}

func (nopObserver) Decoded(time.Duration)        {}
func (nopObserver) Published()                   {}
func (nopObserver) Confirmed(_, _ time.Duration) {}
func (nopObserver) Nacked()                      {}
func (nopObserver) Returned()                    {}
func (nopObserver) Invalid()                     {}
func (nopObserver) DeadLettered()                {}
func (nopObserver) InFlight(int)                 {}
func (nopObserver) Flushed(pglogrepl.LSN)        {}
func (nopObserver) SlotLag(int64)                {}
func (nopObserver) Reconnected(Side)             {}
func (nopObserver) BrokerBlocked(bool)           {}
func (nopObserver) Streaming(bool)               {}
func (nopObserver) Alive(time.Time)              {}
