package decode

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walrelay/walrelay/outbox"
)

// ErrMalformed marks a frame that breaks the pgoutput protocol: it is
// truncated, has trailing bytes or an invalid field, or comes out of order
// (an Insert before its Relation, a Commit without a Begin). The
// stream cannot be trusted past such a frame, so the caller should reconnect
// and replay from the last confirmed position.
var ErrMalformed = errors.New("malformed pgoutput message")

// NoColumn, as the name of an optional column in Columns, means the outbox
// table has no such column.
const NoColumn = "-"

// Columns contains the column names of the outbox table. An empty field takes
// the Event-Forge name given in brackets. An optional column may be set to
// NoColumn when the table lacks it.
type Columns struct {
	ID            string // (id) required, uuid or text
	AggregateType string // (aggregate_type) required
	AggregateID   string // (aggregate_id) required
	EventType     string // (event_type) required
	Payload       string // (payload) required, json or jsonb

	Metadata    string // (metadata) optional, json or jsonb
	CreatedAt   string // (created_at) optional; when absent or NULL, the commit time is used
	ScheduledAt string // (scheduled_at) optional
}

// DebeziumColumns returns the column names of a Debezium-style outbox table
// (id, aggregatetype, aggregateid, type, payload), which has no metadata,
// created_at or scheduled_at column.
func DebeziumColumns() Columns {
	return Columns{
		ID:            "id",
		AggregateType: "aggregatetype",
		AggregateID:   "aggregateid",
		EventType:     "type",
		Payload:       "payload",
		Metadata:      NoColumn,
		CreatedAt:     NoColumn,
		ScheduledAt:   NoColumn,
	}
}

// Config selects the outbox table and the logical decoding message prefix.
// A zero field takes the default named in its comment.
type Config struct {
	Schema  string // schema of the outbox table; default "public"
	Table   string // name of the outbox table; default "outbox_messages"
	Columns Columns

	// MessagePrefix is the prefix of the logical decoding messages
	// (pg_logical_emit_message) that carry outbox events; default "walrelay".
	// Messages with any other prefix are skipped.
	MessagePrefix string
}

// Validate returns an error when a required column is set to NoColumn. Other
// fields cannot be invalid, because an empty one takes its default.
func (c Config) Validate() error {
	required := []struct{ field, value string }{
		{"ID", c.Columns.ID},
		{"AggregateType", c.Columns.AggregateType},
		{"AggregateID", c.Columns.AggregateID},
		{"EventType", c.Columns.EventType},
		{"Payload", c.Columns.Payload},
	}
	for _, r := range required {
		if r.value == NoColumn {
			return fmt.Errorf("decode config: column %s is required and cannot be %q; name the table's column or leave it empty for the default", r.field, NoColumn)
		}
	}

	return nil
}

// Kind is the type of a decoded Event.
type Kind uint8

const (
	// KindNone is a message the relay can skip: a Relation, a change to
	// another table, an Update, Delete, Truncate, Type or Origin message, a
	// logical decoding message with another prefix, or an unknown type.
	KindNone Kind = iota
	KindBegin
	KindCommit
	KindMessage
)

// String returns the kind's name, for logs.
func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindBegin:
		return "begin"
	case KindCommit:
		return "commit"
	case KindMessage:
		return "message"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Event is one decoded pgoutput message.
type Event struct {
	Kind Kind

	// Xid is the transaction id of a Begin, and of the Begin that opened the
	// transaction a Commit closes.
	Xid uint32

	// CommitLSN is the final LSN of the transaction for a Begin, and the LSN
	// of the commit record for a Commit.
	CommitLSN pglogrepl.LSN

	// EndLSN is the end of the commit record (TransactionEndLSN); set for a
	// Commit only. It is the position to report as flushed.
	EndLSN pglogrepl.LSN

	// CommitTime is the transaction's commit time in UTC, for Begin and Commit.
	CommitTime time.Time

	// Message is the outbox event of a KindMessage.
	Message outbox.Message

	// LSN is the WAL position of the message, set for KindMessage only. For a
	// row it is the walStart passed to Decode. For a logical decoding message
	// it is the LSN the message carries.
	LSN pglogrepl.LSN

	// Transactional is false only for a non-transactional logical decoding
	// message, which arrives outside Begin and Commit. Its Message.CreatedAt is
	// the zero time, and the relay fills it in.
	Transactional bool
}

// RowError reports an outbox row or logical decoding message that is well
// framed but cannot become an outbox.Message: a required column is missing or
// NULL, the JSON is invalid, or a timestamp cannot be parsed.
type RowError struct {
	RowID  string // the row's id; empty when the id itself is missing or unreadable
	Column string // the offending column, a field of a logical decoding message, or "content" when the message is not a JSON object
	Err    error

	// Raw is the input as JSON, for a dead-letter message: an object of
	// column names to text values (null for NULL) for a row, or a JSON string
	// of a logical decoding message's content.
	Raw []byte

	// LSN is the WAL position of the row or message. Standalone is true for
	// a non-transactional logical decoding message, which arrives outside
	// Begin and Commit.
	LSN        pglogrepl.LSN
	Standalone bool

	// Logical is true when the input is a logical decoding message rather
	// than a table row, so there is no row to fix.
	Logical bool
}

// Error names the row id and the column, for example
// `outbox row id "…": column "payload": invalid JSON: …`.
func (e *RowError) Error() string {
	return fmt.Sprintf("outbox row id %q: column %q: %v", e.RowID, e.Column, e.Err)
}

// Unwrap returns the underlying error.
func (e *RowError) Unwrap() error { return e.Err }

// Decoder decodes the messages of one replication connection. It keeps the
// relation cache and the open transaction, so it is not safe for concurrent
// use.
type Decoder struct {
	schema  string
	table   string
	prefix  string
	columns Columns // defaults applied; "" stands for a disabled optional column

	relations map[uint32]*relation

	// values is scratch space for the columns of the tuple being decoded,
	// reused so that an Insert allocates no slice.
	values []tupleValue

	inTransaction bool
	xid           uint32
	commitTime    time.Time
}

// New returns a Decoder for cfg with defaults applied to its empty fields. It
// does not validate cfg; call Config.Validate at start-up. A required column
// set to NoColumn makes every outbox row a RowError.
func New(cfg Config) *Decoder {
	d := &Decoder{
		schema:    orDefault(cfg.Schema, "public"),
		table:     orDefault(cfg.Table, "outbox_messages"),
		prefix:    orDefault(cfg.MessagePrefix, "walrelay"),
		relations: make(map[uint32]*relation),
	}

	d.columns = cfg.Columns.WithDefaults()

	return d
}

// WithDefaults returns c with the Event-Forge name in every empty field,
// and "" for an optional column set to NoColumn.
func (c Columns) WithDefaults() Columns {
	return Columns{
		ID:            orDefault(c.ID, "id"),
		AggregateType: orDefault(c.AggregateType, "aggregate_type"),
		AggregateID:   orDefault(c.AggregateID, "aggregate_id"),
		EventType:     orDefault(c.EventType, "event_type"),
		Payload:       orDefault(c.Payload, "payload"),
		Metadata:      optionalColumn(c.Metadata, "metadata"),
		CreatedAt:     optionalColumn(c.CreatedAt, "created_at"),
		ScheduledAt:   optionalColumn(c.ScheduledAt, "scheduled_at"),
	}
}

func orDefault(value, def string) string {
	if value == "" {
		return def
	}
	return value
}

func optionalColumn(value, def string) string {
	if value == NoColumn {
		return ""
	}
	return orDefault(value, def)
}

// Reset clears the relation cache and any open transaction. Call it at the start
// of every replication connection.
func (d *Decoder) Reset() {
	clear(d.relations)
	d.inTransaction = false
	d.xid = 0
	d.commitTime = time.Time{}
}

// Decode decodes one pgoutput message. walStart is the WAL start of the
// XLogData frame that carried data, and becomes the LSN of an outbox row.
// The returned Event does not reference data.
//
// On error the Event is the zero value and the decoder's state is unchanged.
// The error wraps ErrMalformed when the frame breaks the protocol, or is a
// *RowError when an outbox row or message cannot be mapped.
func (d *Decoder) Decode(walStart pglogrepl.LSN, data []byte) (Event, error) {
	if len(data) == 0 {
		return Event{}, fmt.Errorf("%w: empty message at LSN %s", ErrMalformed, walStart)
	}

	r := reader{buf: data, off: 1}
	switch data[0] {
	case 'B':
		return d.decodeBegin(&r)
	case 'C':
		return d.decodeCommit(&r)
	case 'R':
		return Event{}, d.decodeRelation(&r)
	case 'I':
		return d.decodeInsert(&r, walStart)
	case 'M':
		return d.decodeMessage(&r)
	default:
		// Update, Delete, Truncate, Type, Origin and types this decoder
		// does not know carry no outbox data.
		return Event{}, nil
	}
}
