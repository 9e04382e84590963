package outbox

import (
	"encoding/json"
	"time"
)

// Message is one outbox event as read from a table row or a logical
// decoding message.
type Message struct {
	ID            string
	AggregateType string
	AggregateID   string
	EventType     string

	// Payload and Metadata hold the stored JSON text byte for byte. A nil
	// value stands for SQL NULL and is encoded as JSON null.
	Payload  json.RawMessage
	Metadata json.RawMessage

	// MetadataChecked reports that Metadata is known to be valid JSON, so
	// Encode does not check it again. The decoder sets it on every message
	// it returns: the server checks json and jsonb values, and the decoder
	// checks text ones.
	MetadataChecked bool

	// CreatedAt is the row's created_at, or the commit time when the table
	// has no such column or the message came from pg_logical_emit_message.
	CreatedAt time.Time

	// ScheduledAt is the row's scheduled_at; the zero value means none.
	ScheduledAt time.Time
}

// Publishing is a Message encoded for the broker, independent of the AMQP
// client so that this package imports no broker code.
type Publishing struct {
	Exchange      string
	RoutingKey    string
	MessageID     string
	CorrelationID string
	Type          string
	ContentType   string
	Timestamp     time.Time
	Headers       map[string]any
	Body          []byte

	// Delay is the delivery delay the message asked for (metadata.delay or a
	// future scheduled_at). When it is positive and a delayed-message
	// exchange is configured, Exchange is that exchange and Headers carries
	// x-delay; otherwise the message goes out at once.
	Delay time.Duration

	// Delayed reports whether Exchange is the delayed-message exchange.
	Delayed bool
}
