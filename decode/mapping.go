package decode

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/walrelay/walrelay/outbox"
)

// mapRow builds the message of one outbox row. values index into frame. All
// text is copied, with one allocation for the four strings and one for
// payload and metadata together.
func (d *Decoder) mapRow(rel *relation, frame []byte, values []tupleValue) (outbox.Message, error) {
	c := &d.columns
	ix := &rel.index

	id, idKind := valueAt(frame, values, ix.id)
	rowError := func(column string, err error) error {
		e := &RowError{Column: column, Err: err}
		if idKind == 't' || idKind == 'b' {
			e.RowID = string(id)
		}
		return e
	}

	if rel.missing != "" {
		return outbox.Message{}, rowError(rel.missing, fmt.Errorf(
			"table %s.%s has no such column; name the table's column in the decode config", rel.namespace, rel.name))
	}

	// Required columns.
	if err := requireText(idKind); err != nil {
		return outbox.Message{}, rowError(c.ID, err)
	}
	aggregateType, kind := valueAt(frame, values, ix.aggregateType)
	if err := requireText(kind); err != nil {
		return outbox.Message{}, rowError(c.AggregateType, err)
	}
	aggregateID, kind := valueAt(frame, values, ix.aggregateID)
	if err := requireText(kind); err != nil {
		return outbox.Message{}, rowError(c.AggregateID, err)
	}
	eventType, kind := valueAt(frame, values, ix.eventType)
	if err := requireText(kind); err != nil {
		return outbox.Message{}, rowError(c.EventType, err)
	}
	payload, kind := valueAt(frame, values, ix.payload)
	if err := requireText(kind); err != nil {
		return outbox.Message{}, rowError(c.Payload, err)
	}
	if !rel.payloadIsJSON {
		if err := validateJSON(payload); err != nil {
			return outbox.Message{}, rowError(c.Payload, err)
		}
	}

	// Optional columns. A missing or NULL one keeps its default.
	metadata, kind := valueAt(frame, values, ix.metadata)
	if err := optionalText(kind); err != nil {
		return outbox.Message{}, rowError(c.Metadata, err)
	}
	if kind != 0 && kind != 'n' {
		if err := validateJSONUnless(rel.metadataIsJSON, metadata); err != nil {
			return outbox.Message{}, rowError(c.Metadata, err)
		}
	} else {
		metadata = nil
	}

	createdAt := d.commitTime
	text, kind := valueAt(frame, values, ix.createdAt)
	if err := optionalText(kind); err != nil {
		return outbox.Message{}, rowError(c.CreatedAt, err)
	}
	if kind == 't' || kind == 'b' {
		t, err := parseTimestamp(text)
		if err != nil {
			return outbox.Message{}, rowError(c.CreatedAt, err)
		}
		createdAt = t
	}

	var scheduledAt time.Time
	text, kind = valueAt(frame, values, ix.scheduledAt)
	if err := optionalText(kind); err != nil {
		return outbox.Message{}, rowError(c.ScheduledAt, err)
	}
	if kind == 't' || kind == 'b' {
		t, err := parseTimestamp(text)
		if err != nil {
			return outbox.Message{}, rowError(c.ScheduledAt, err)
		}
		scheduledAt = t
	}

	// Copy out of the frame, which the caller reuses.
	var sb strings.Builder
	sb.Grow(len(id) + len(aggregateType) + len(aggregateID) + len(eventType))
	sb.Write(id)
	sb.Write(aggregateType)
	sb.Write(aggregateID)
	sb.Write(eventType)
	s := sb.String()

	// The metadata is checked above or by the server (json, jsonb).
	msg := outbox.Message{CreatedAt: createdAt, ScheduledAt: scheduledAt, MetadataChecked: true}
	msg.ID, s = s[:len(id)], s[len(id):]
	msg.AggregateType, s = s[:len(aggregateType)], s[len(aggregateType):]
	msg.AggregateID, s = s[:len(aggregateID)], s[len(aggregateID):]
	msg.EventType = s

	// Payload and metadata share one array. The three-index slice caps the
	// payload so that appending to it cannot overwrite the metadata.
	buf := make([]byte, len(payload)+len(metadata))
	copy(buf, payload)
	msg.Payload = buf[:len(payload):len(payload)]
	if metadata != nil {
		copy(buf[len(payload):], metadata)
		msg.Metadata = buf[len(payload):]
	}

	return msg, nil
}

// valueAt returns the bytes and kind of tuple column i. The kind is 0 when i
// is -1, which means the table has no such column.
func valueAt(frame []byte, values []tupleValue, i int) ([]byte, byte) {
	if i < 0 {
		return nil, 0
	}
	v := values[i]
	return frame[v.start:v.end], v.kind
}

var (
	errNull      = errors.New("value is NULL but the column is required")
	errUnchanged = errors.New("value was not sent (unchanged TOAST value), so the row cannot be read in full")
)

func requireText(kind byte) error {
	switch kind {
	case 'n':
		return errNull
	case 'u':
		return errUnchanged
	}
	return nil
}

func optionalText(kind byte) error {
	if kind == 'u' {
		return errUnchanged
	}
	return nil
}

// validateJSONUnless validates b unless the column's type already
// guarantees valid JSON.
func validateJSONUnless(typed bool, b []byte) error {
	if typed {
		return nil
	}
	return validateJSON(b)
}

// validateJSON returns nil for valid JSON, and otherwise an error with the
// byte offset where the syntax breaks. The value itself is not quoted, because it may
// contain personal data.
func validateJSON(b []byte) error {
	if json.Valid(b) {
		return nil
	}

	var syntax *json.SyntaxError
	if err := json.Unmarshal(b, new(json.RawMessage)); errors.As(err, &syntax) {
		return fmt.Errorf("invalid JSON at byte %d of %d: %w", syntax.Offset, len(b), err)
	}
	return fmt.Errorf("invalid JSON (%d bytes)", len(b))
}

// messageContent is the JSON body of a logical decoding message. Every field
// is kept raw, so that payload and metadata keep their bytes and the other
// fields can be checked for type.
type messageContent struct {
	ID            json.RawMessage `json:"id"`
	AggregateType json.RawMessage `json:"aggregateType"`
	AggregateID   json.RawMessage `json:"aggregateId"`
	EventType     json.RawMessage `json:"eventType"`
	Payload       json.RawMessage `json:"payload"`
	Metadata      json.RawMessage `json:"metadata"`
}

// mapMessage builds the message of a logical decoding message at lsn. When
// the content has no id, the id is derived from lsn. CreatedAt is left zero
// for the caller.
func mapMessage(content []byte, lsn pglogrepl.LSN) (outbox.Message, error) {
	var c messageContent
	if err := json.Unmarshal(content, &c); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			err = fmt.Errorf("logical decoding message at LSN %s: invalid JSON at byte %d of %d: %w", lsn, syntax.Offset, len(content), err)
		} else {
			err = fmt.Errorf("logical decoding message at LSN %s: expected a JSON object with aggregateType, aggregateId, eventType and payload: %w", lsn, err)
		}
		return outbox.Message{}, &RowError{Column: "content", Err: err}
	}

	var msg outbox.Message
	rowError := func(column string, err error) error {
		return &RowError{RowID: msg.ID, Column: column, Err: fmt.Errorf("logical decoding message at LSN %s: %w", lsn, err)}
	}

	id, err := jsonString(c.ID)
	if err != nil {
		return outbox.Message{}, rowError("id", err)
	}
	if id == "" {
		id = messageID(lsn)
	}
	msg.ID = id

	if msg.AggregateType, err = requiredString(c.AggregateType); err != nil {
		return outbox.Message{}, rowError("aggregateType", err)
	}

	// An aggregate id may be a JSON number, whose text is kept as is.
	if isJSONNumber(c.AggregateID) {
		msg.AggregateID = string(c.AggregateID)
	} else if msg.AggregateID, err = requiredString(c.AggregateID); err != nil {
		return outbox.Message{}, rowError("aggregateId", err)
	}

	if msg.EventType, err = requiredString(c.EventType); err != nil {
		return outbox.Message{}, rowError("eventType", err)
	}

	// JSON null is a valid payload here, as jsonb 'null' is in a row.
	if c.Payload == nil {
		return outbox.Message{}, rowError("payload", errors.New("field is missing but required; send null for an empty payload"))
	}
	msg.Payload = c.Payload
	msg.Metadata = c.Metadata
	msg.MetadataChecked = true // json.Unmarshal checked the whole content

	return msg, nil
}

var errMissingField = errors.New("field is missing or null but required")

// isAbsent reports whether a raw field was missing from the object or null.
func isAbsent(raw json.RawMessage) bool {
	return raw == nil || string(raw) == "null"
}

func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}

func requiredString(raw json.RawMessage) (string, error) {
	if isAbsent(raw) {
		return "", errMissingField
	}
	return jsonString(raw)
}

// jsonString decodes a raw JSON string. A missing or null field yields "".
func jsonString(raw json.RawMessage) (string, error) {
	if isAbsent(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("expected a JSON string, got %s", jsonKind(raw[0]))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("invalid JSON string: %w", err)
	}
	return s, nil
}

func jsonKind(first byte) string {
	switch {
	case first == '{':
		return "an object"
	case first == '[':
		return "an array"
	case first == 't' || first == 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

// messageID derives the id of a logical decoding message that has none from
// its LSN, so that a replay of the message gets the same id. The result is
// formatted as a version 5 (SHA-1, name-based) UUID whose name is
// "walrelay:" followed by the LSN in the form 16/B374D848, hashed without a
// namespace UUID. Changing this breaks deduplication of replayed messages.
func messageID(lsn pglogrepl.LSN) string {
	sum := sha1.Sum([]byte("walrelay:" + lsn.String()))
	sum[6] = sum[6]&0x0f | 0x50 // version 5
	sum[8] = sum[8]&0x3f | 0x80 // RFC 9562 variant

	return uuid.UUID(sum[:16]).String()
}

// parseTimestamp parses PostgreSQL's ISO output of a timestamp or timestamptz
// as sent with DateStyle=ISO: "2026-12-04 20:13:58.123456+00". Fractional
// seconds have 0 to 6 digits. The offset (+HH, +HH:MM or +HH:MM:SS) is
// optional, and a value without one is taken as UTC. The result is in UTC.
// infinity, BC dates and any other text return an error.
func parseTimestamp(b []byte) (time.Time, error) {
	p := timestampParser{b: b, ok: true}

	year := p.number(4, 6)
	p.expect('-')
	month := p.number(2, 2)
	p.expect('-')
	day := p.number(2, 2)
	if p.ok && p.i < len(b) && b[p.i] == 'T' {
		p.i++
	} else {
		p.expect(' ')
	}
	hour := p.number(2, 2)
	p.expect(':')
	minute := p.number(2, 2)
	p.expect(':')
	second := p.number(2, 2)

	nanos := 0
	if p.ok && p.i < len(b) && b[p.i] == '.' {
		p.i++
		start := p.i
		nanos = p.number(1, 6)
		for range 9 - (p.i - start) {
			nanos *= 10
		}
	}

	offset, offsetHour, offsetMinute, offsetSecond := 0, 0, 0, 0
	if p.ok && p.i < len(b) && (b[p.i] == '+' || b[p.i] == '-') {
		negative := b[p.i] == '-'
		p.i++
		offsetHour = p.number(2, 2)
		if p.ok && p.i < len(b) && b[p.i] == ':' {
			p.i++
			offsetMinute = p.number(2, 2)
			if p.ok && p.i < len(b) && b[p.i] == ':' {
				p.i++
				offsetSecond = p.number(2, 2)
			}
		}
		offset = offsetHour*3600 + offsetMinute*60 + offsetSecond
		if negative {
			offset = -offset
		}
	}

	switch {
	case p.ok && p.i != len(b) && bytes.HasSuffix(b, []byte(" BC")):
		return time.Time{}, fmt.Errorf("invalid timestamp %q: dates before the Common Era are not supported", clip(b))
	case !p.ok || p.i != len(b):
		return time.Time{}, fmt.Errorf("invalid timestamp %q: expected YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]", clip(b))
	}

	// PostgreSQL accepts time zone offsets up to 15:59:59 (MAX_TZDISP_HOUR in
	// src/include/datatype/timestamp.h).
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || second > 59 ||
		offsetHour > 15 || offsetMinute > 59 || offsetSecond > 59 {
		return time.Time{}, fmt.Errorf("invalid timestamp %q: a field is out of range", clip(b))
	}

	t := time.Date(year, time.Month(month), day, hour, minute, second, nanos, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), nil
}

type timestampParser struct {
	b  []byte
	i  int
	ok bool
}

// number reads min to max decimal digits. A failed read clears p.ok, and
// every read after it returns 0.
func (p *timestampParser) number(min, max int) int {
	if !p.ok {
		return 0
	}
	n, digits := 0, 0
	for p.i < len(p.b) && digits < max && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		n = n*10 + int(p.b[p.i]-'0')
		p.i++
		digits++
	}
	if digits < min {
		p.ok = false
	}
	return n
}

func (p *timestampParser) expect(c byte) {
	if !p.ok || p.i >= len(p.b) || p.b[p.i] != c {
		p.ok = false
		return
	}
	p.i++
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}

// clip shortens a value for an error message.
func clip(b []byte) string {
	const limit = 64
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}
