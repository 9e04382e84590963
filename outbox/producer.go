package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultTable is the outbox table that Insert writes when it is given none.
const DefaultTable = "public.outbox_messages"

// DefaultMessagePrefix is the logical decoding message prefix that Emit uses
// when it is given none. The relay reads only messages with its configured
// prefix.
const DefaultMessagePrefix = "walrelay"

// The column lists of Insert. status, retry_count, max_retries, created_at
// and updated_at are filled because some Event-Forge table shapes declare
// them NOT NULL without a default. Only polling workers read max_retries.
// The timestamptz cast of scheduled_at makes a timestamp (without time zone)
// column receive the wall-clock time of the session's TimeZone, as now()
// does.
const (
	insertColumns = ` (id, aggregate_type, aggregate_id, event_type, payload, metadata,
	status, retry_count, max_retries, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 5, now(), now())`

	insertColumnsScheduled = ` (id, aggregate_type, aggregate_id, event_type, payload, metadata,
	status, retry_count, max_retries, created_at, updated_at, scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, 5, now(), now(), $7::timestamptz)`
)

// Execer runs one SQL statement. pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy
// it. Pass the transaction that writes the business change, so that the
// event commits or rolls back with it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Event is an outbox event as an application writes it.
type Event struct {
	// ID is the message id consumers deduplicate on. Insert and Emit
	// generate a random UUID (version 4) when it is empty.
	ID string

	// AggregateType, AggregateID and EventType are required. The default
	// routing key is "{AggregateType}.{EventType}".
	AggregateType string
	AggregateID   string
	EventType     string

	// Payload is the event body. json.RawMessage and []byte are taken as
	// JSON text and must be valid JSON. Any other value is marshaled with
	// encoding/json. Nil is stored as {}.
	Payload any

	// Metadata steers routing (exchange, routingKey, headers, correlationId,
	// delay). It is converted like Payload; nil is stored as SQL NULL.
	Metadata any

	// ScheduledAt delays publishing until this time. The zero value means
	// publish at once. Only Insert supports it.
	ScheduledAt time.Time
}

// Insert writes ev as a row of table and returns the row's id. table is
// "schema.table" or "table", DefaultTable when empty.
//
// The row fills the columns that every Event-Forge outbox table shape has:
// id, aggregate_type, aggregate_id, event_type, payload, metadata, status
// ('pending'), retry_count (0), max_retries (5), created_at and updated_at
// (now(), the transaction's start time), and scheduled_at when ev has one.
// Without a schedule the column keeps its default. Insert works for id
// columns of type uuid or varchar(36), json or jsonb payload and metadata,
// and timestamp or timestamptz columns, in every pgx query execution mode.
//
// On error nothing is written, but the caller's transaction may be aborted
// (Postgres rejects further statements until it rolls back).
func Insert(ctx context.Context, db Execer, table string, ev Event) (string, error) {
	target, err := tableIdentifier(table)
	if err != nil {
		return "", err
	}

	id, payload, metadata, err := prepareEvent(ev)
	if err != nil {
		return "", fmt.Errorf("insert outbox event into %s: %w", target, err)
	}

	// Arguments are strings (not []byte), so that the simple protocol sends
	// them as untyped literals, and carry no casts, so that Postgres types
	// them from the target columns: uuid or varchar, json or jsonb.
	sql := "INSERT INTO " + target + insertColumns
	args := []any{id, ev.AggregateType, ev.AggregateID, ev.EventType, payload, metadata}
	if !ev.ScheduledAt.IsZero() {
		sql = "INSERT INTO " + target + insertColumnsScheduled
		args = append(args, ev.ScheduledAt)
	}

	if _, err := db.Exec(ctx, sql, args...); err != nil {
		return "", fmt.Errorf("insert outbox event %s (%s.%s) into %s: %w", id, ev.AggregateType, ev.EventType, target, err)
	}
	return id, nil
}

// Emit writes ev as a transactional logical decoding message
// (pg_logical_emit_message) with the given prefix, DefaultMessagePrefix when
// empty, and returns the event's id. No table row is written: the relay
// publishes the event when the transaction commits, in WAL order with the
// transaction's other events. A rolled-back transaction emits nothing.
//
// The message content is the JSON object {"id","aggregateType",
// "aggregateId","eventType","payload","metadata"}. Emit rejects an event
// with ScheduledAt, because the content has no field for it; set
// metadata.delay or use Insert instead.
func Emit(ctx context.Context, db Execer, prefix string, ev Event) (string, error) {
	if prefix == "" {
		prefix = DefaultMessagePrefix
	}
	if !ev.ScheduledAt.IsZero() {
		return "", fmt.Errorf("emit outbox event %s.%s: ScheduledAt is not supported by logical decoding messages: set metadata.delay (milliseconds) or use Insert", ev.AggregateType, ev.EventType)
	}

	id, payload, metadata, err := prepareEvent(ev)
	if err != nil {
		return "", fmt.Errorf("emit outbox event: %w", err)
	}

	size := 128 + len(id) + len(ev.AggregateType) + len(ev.AggregateID) + len(ev.EventType) + len(payload)
	if metadata != nil {
		size += len(*metadata)
	}
	content := make([]byte, 0, size)
	content = append(content, `{"id":`...)
	content = appendJSONString(content, id)
	content = append(content, `,"aggregateType":`...)
	content = appendJSONString(content, ev.AggregateType)
	content = append(content, `,"aggregateId":`...)
	content = appendJSONString(content, ev.AggregateID)
	content = append(content, `,"eventType":`...)
	content = appendJSONString(content, ev.EventType)
	content = append(content, `,"payload":`...)
	content = append(content, payload...)
	content = append(content, `,"metadata":`...)
	if metadata == nil {
		content = append(content, "null"...)
	} else {
		content = append(content, *metadata...)
	}
	content = append(content, '}')

	// The text cast picks the (boolean, text, text) variant of the function.
	const sql = "SELECT pg_logical_emit_message(true, $1::text, $2::text)"
	if _, err := db.Exec(ctx, sql, prefix, string(content)); err != nil {
		return "", fmt.Errorf("emit outbox event %s (%s.%s) with prefix %q: %w", id, ev.AggregateType, ev.EventType, prefix, err)
	}
	return id, nil
}

// prepareEvent validates ev and returns its id, payload JSON and metadata
// JSON (nil for SQL NULL).
func prepareEvent(ev Event) (id, payload string, metadata *string, err error) {
	var missing []string
	if ev.AggregateType == "" {
		missing = append(missing, "AggregateType")
	}
	if ev.AggregateID == "" {
		missing = append(missing, "AggregateID")
	}
	if ev.EventType == "" {
		missing = append(missing, "EventType")
	}
	if len(missing) > 0 {
		return "", "", nil, fmt.Errorf("event is missing required fields %s", strings.Join(missing, ", "))
	}

	id = ev.ID
	if id == "" {
		id = newUUID()
	}

	payloadJSON, err := jsonText(ev.Payload)
	if err != nil {
		return "", "", nil, fmt.Errorf("event %s (%s.%s): Payload: %w", id, ev.AggregateType, ev.EventType, err)
	}
	if payloadJSON == nil {
		payloadJSON = []byte("{}")
	}

	metadataJSON, err := jsonText(ev.Metadata)
	if err != nil {
		return "", "", nil, fmt.Errorf("event %s (%s.%s): Metadata: %w", id, ev.AggregateType, ev.EventType, err)
	}
	if metadataJSON != nil {
		s := string(metadataJSON)
		metadata = &s
	}

	return id, string(payloadJSON), metadata, nil
}

// jsonText converts v to JSON text. It returns nil for a nil v, a nil
// json.RawMessage and a nil []byte.
func jsonText(v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return validJSON(v)
	case []byte:
		return validJSON(v)
	}

	// An Encoder without HTML escaping keeps <, > and & as they are.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("marshal %T to JSON: %w", v, err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func validJSON(b []byte) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("invalid JSON text (%d bytes): pass valid JSON, or a Go value to marshal", len(b))
	}
	return b, nil
}

// tableIdentifier splits "schema.table" or "table" and quotes each part.
func tableIdentifier(table string) (string, error) {
	if table == "" {
		table = DefaultTable
	}
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return "", fmt.Errorf("invalid outbox table name %q: expected \"table\" or \"schema.table\"", table)
	}
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("invalid outbox table name %q: expected \"table\" or \"schema.table\"", table)
		}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

// newUUID returns a random (version 4) UUID in its canonical text form.
func newUUID() string {
	return uuid.NewString()
}
