package outbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// DefaultExchange is the exchange used when neither EncodeConfig.Exchange nor
// metadata.exchange names one.
const DefaultExchange = "events"

// ContentType is the content type of every encoded message body.
const ContentType = "application/json"

// EncodeConfig holds the relay-wide settings of the wire encoding.
type EncodeConfig struct {
	// Exchange is the exchange for messages whose metadata names none.
	// Default: DefaultExchange.
	Exchange string

	// DelayedExchange is an exchange of type x-delayed-message (the RabbitMQ
	// plugin rabbitmq_delayed_message_exchange). Empty means none is
	// configured, so delayed messages go out at once on their own exchange.
	DelayedExchange string
}

// Encode builds the broker message for m. now is the time that a future
// ScheduledAt is measured from.
//
// Encode returns an error only when m.Metadata is not valid JSON. Metadata
// that is valid JSON but not an object is passed through in the body and
// overrides nothing. m.Payload must be valid JSON text (a json or jsonb
// column guarantees it); Encode does not check it.
func Encode(m *Message, cfg EncodeConfig, now time.Time) (Publishing, error) {
	var p Publishing
	err := encode(&p, m, cfg, now, nil)
	return p, err
}

// Encoder encodes like Encode but reuses one Publishing, with its header
// map and body buffer, from call to call. It also reuses the routing key
// and header values that repeat from one message to the next. This saves
// half of the per-message allocations for a caller that sends each message
// before it encodes the next. An Encoder is not safe for concurrent use.
type Encoder struct {
	cfg   EncodeConfig
	pub   Publishing
	cache encodeCache
}

// NewEncoder returns an Encoder with the relay-wide settings cfg.
func NewEncoder(cfg EncodeConfig) *Encoder {
	return &Encoder{cfg: cfg}
}

// Encode builds the broker message for m as the function Encode does. The
// result, its Headers and its Body stay valid only until the next call:
// copy what must outlive it, or use the function Encode instead.
func (e *Encoder) Encode(m *Message, now time.Time) (*Publishing, error) {
	if err := encode(&e.pub, m, e.cfg, now, &e.cache); err != nil {
		return nil, err
	}
	return &e.pub, nil
}

// encodeCache is the last routing key and the last header values boxed as
// interface values, which a run of messages of one aggregate type and event
// type shares. Boxing a string allocates.
type encodeCache struct {
	aggregateType, eventType string
	routingKey               string
	aggregateTypeValue       any
	eventTypeValue           any
}

// routing returns the default routing key, aggregateType.eventType, and
// the two values boxed for the header table.
func (c *encodeCache) routing(aggregateType, eventType string) (key string, aggregateTypeValue, eventTypeValue any) {
	if c == nil {
		return aggregateType + "." + eventType, aggregateType, eventType
	}
	if c.routingKey == "" || c.aggregateType != aggregateType || c.eventType != eventType {
		c.aggregateType, c.eventType = aggregateType, eventType
		c.routingKey = aggregateType + "." + eventType
		c.aggregateTypeValue, c.eventTypeValue = aggregateType, eventType
	}
	return c.routingKey, c.aggregateTypeValue, c.eventTypeValue
}

// encode fills p from m, reusing p's header map and body buffer. cache
// may be nil.
func encode(p *Publishing, m *Message, cfg EncodeConfig, now time.Time, cache *encodeCache) error {
	var meta metadataFields
	if !isNullJSON(m.Metadata) {
		if !m.MetadataChecked && !json.Valid(m.Metadata) {
			return fmt.Errorf("encode message %q: invalid JSON in metadata (%d bytes): fix the metadata of this row or logical decoding message", m.ID, len(m.Metadata))
		}
		meta.parse(m.Metadata)
	}

	headers, body := p.Headers, p.Body[:0]
	*p = Publishing{
		Exchange:    cfg.Exchange,
		MessageID:   m.ID,
		Type:        m.EventType,
		ContentType: ContentType,
		Timestamp:   m.CreatedAt,
	}
	if p.Exchange == "" {
		p.Exchange = DefaultExchange
	}

	// Routing: metadata overrides the configured exchange and the default key.
	defaultKey, aggregateTypeValue, eventTypeValue := cache.routing(m.AggregateType, m.EventType)
	if s, ok := jsonString(meta.exchange); ok {
		p.Exchange = s
	}
	if s, ok := jsonString(meta.routingKey); ok {
		p.RoutingKey = s
	} else {
		p.RoutingKey = defaultKey
	}
	p.CorrelationID = correlationID(meta.correlationID)

	// Headers: metadata.headers first, so that the three fixed headers win
	// over entries of the same name (Event-Forge's publishers do the same).
	if headers == nil {
		headers = make(map[string]any, 4+meta.headerCount())
	} else {
		clear(headers)
	}
	p.Headers = headers
	appendHeaders(p.Headers, meta.headers)
	p.Headers["x-aggregate-type"] = aggregateTypeValue
	p.Headers["x-aggregate-id"] = m.AggregateID
	p.Headers["x-event-type"] = eventTypeValue

	// Delay: metadata.delay wins over a future scheduled_at.
	delayMS := delayMillis(meta.delay)
	if delayMS == 0 {
		delayMS = scheduledDelayMillis(m, now)
	}
	if delayMS > 0 {
		p.Delay = time.Duration(delayMS) * time.Millisecond
		if cfg.DelayedExchange != "" {
			p.Exchange = cfg.DelayedExchange
			p.Delayed = true
			p.Headers["x-delay"] = delayMS
		}
	}

	if body == nil {
		body = make([]byte, 0, bodySize(m))
	}
	p.Body = AppendBody(body, m)
	return nil
}

// AppendBody appends the JSON body of m to dst and returns the extended
// slice. The keys come in the order id, aggregateType, aggregateId,
// eventType, payload, metadata, createdAt. Payload and metadata are copied
// byte for byte, and a nil or empty one is written as null. createdAt is UTC
// with milliseconds, as JavaScript's Date.toISOString writes it.
func AppendBody(dst []byte, m *Message) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, m.ID)
	dst = append(dst, `,"aggregateType":`...)
	dst = appendJSONString(dst, m.AggregateType)
	dst = append(dst, `,"aggregateId":`...)
	dst = appendJSONString(dst, m.AggregateID)
	dst = append(dst, `,"eventType":`...)
	dst = appendJSONString(dst, m.EventType)
	dst = append(dst, `,"payload":`...)
	dst = appendRawJSON(dst, m.Payload)
	dst = append(dst, `,"metadata":`...)
	dst = appendRawJSON(dst, m.Metadata)
	dst = append(dst, `,"createdAt":"`...)
	dst = m.CreatedAt.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, `"}`...)
	return dst
}

// bodySize is the body length for JSON strings that need no escaping.
func bodySize(m *Message) int {
	const fixed = len(`{"id":"","aggregateType":"","aggregateId":"","eventType":"","payload":,"metadata":,"createdAt":"2006-01-02T15:04:05.000Z"}`) + 8
	return fixed + len(m.ID) + len(m.AggregateType) + len(m.AggregateID) + len(m.EventType) + len(m.Payload) + len(m.Metadata)
}

func appendRawJSON(dst []byte, raw json.RawMessage) []byte {
	if len(bytes.TrimSpace(raw)) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, raw...)
}

// isNullJSON reports whether raw stands for no value: nil, empty, or the JSON
// literal null.
func isNullJSON(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a quoted JSON string. It escapes what JSON
// requires (quote, backslash, control characters) and keeps other UTF-8 as
// it is. Like JSON.stringify, it does not escape <, >, & or U+2028/U+2029.
// Invalid UTF-8 becomes \ufffd, as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}

		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// metadataFields holds the raw values of the metadata members that steer
// routing. A nil field means the member is absent.
type metadataFields struct {
	exchange      []byte
	routingKey    []byte
	headers       []byte
	correlationID []byte
	delay         []byte
}

// parse records the members of data, which must be valid JSON. Keys match
// case-sensitively and the last duplicate wins, as in JSON.parse. A value
// that is not an object leaves every field nil.
func (f *metadataFields) parse(data []byte) {
	it, ok := newObjectIter(data)
	if !ok {
		return
	}
	for {
		key, value, ok := it.next()
		if !ok {
			return
		}
		switch string(keyText(key)) {
		case "exchange":
			f.exchange = value
		case "routingKey":
			f.routingKey = value
		case "headers":
			f.headers = value
		case "correlationId":
			f.correlationID = value
		case "delay":
			f.delay = value
		}
	}
}

// headerCount returns the number of members of metadata.headers, counted
// only to size the header map.
func (f *metadataFields) headerCount() int {
	it, ok := newObjectIter(f.headers)
	if !ok {
		return 0
	}
	n := 0
	for {
		if _, _, ok := it.next(); !ok {
			return n
		}
		n++
	}
}

// appendHeaders copies the members of the JSON object raw into h: strings
// stay strings, numbers become int64 when integral and float64 otherwise,
// booleans stay booleans, objects and arrays become their JSON text, and
// null members are skipped.
func appendHeaders(h map[string]any, raw []byte) {
	it, ok := newObjectIter(raw)
	if !ok {
		return
	}
	for {
		key, value, ok := it.next()
		if !ok {
			return
		}
		name := string(keyText(key))

		switch value[0] {
		case '"':
			s, _ := jsonString(value)
			h[name] = s
		case 't':
			h[name] = true
		case 'f':
			h[name] = false
		case 'n':
			// JSON null: no header.
		case '{', '[':
			h[name] = string(value)
		default:
			if v, ok := jsonNumber(value); ok {
				h[name] = v
			}
		}
	}
}

// jsonNumber converts a JSON number to int64 when it is integral and fits,
// and to float64 otherwise.
func jsonNumber(raw []byte) (any, bool) {
	if i, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !isRangeError(err) {
		return nil, false
	}
	if f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 {
		return int64(f), true
	}
	return f, true
}

func isRangeError(err error) bool {
	numErr, ok := err.(*strconv.NumError)
	return ok && numErr.Err == strconv.ErrRange
}

// correlationID returns metadata.correlationId when it is a string, or the
// text of a number, and "" otherwise.
func correlationID(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if s, ok := jsonString(raw); ok {
		return s
	}
	if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
		return string(raw)
	}
	return ""
}

// maxDelayMillis keeps a delay within what time.Duration can hold.
const maxDelayMillis = math.MaxInt64 / int64(time.Millisecond)

// delayMillis reads metadata.delay, a JSON number or numeric string of
// milliseconds. A fraction rounds up. It returns 0 for an absent, invalid
// or non-positive delay.
func delayMillis(raw []byte) int64 {
	if len(raw) == 0 {
		return 0
	}
	text := raw
	if raw[0] == '"' {
		s, ok := jsonString(raw)
		if !ok {
			return 0
		}
		text = bytes.TrimSpace([]byte(s))
	}

	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil && !isRangeError(err) {
		return 0
	}
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	if f >= float64(maxDelayMillis) {
		return maxDelayMillis
	}
	return int64(math.Ceil(f))
}

// scheduledDelayMillis returns the milliseconds from now until m.ScheduledAt,
// rounded up, or 0 when the schedule is not in the future.
//
// A ScheduledAt that is not after CreatedAt also counts as no schedule.
// Tables whose scheduled_at defaults to now() get the same value in
// created_at, and comparing such a row with the relay's clock would delay it
// by however far the relay's clock lags the database's.
func scheduledDelayMillis(m *Message, now time.Time) int64 {
	if m.ScheduledAt.IsZero() || !m.ScheduledAt.After(now) {
		return 0
	}
	if !m.CreatedAt.IsZero() && !m.ScheduledAt.After(m.CreatedAt) {
		return 0
	}
	d := m.ScheduledAt.Sub(now)
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// jsonString decodes raw when it is a JSON string.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// keyText returns the text of the raw JSON string key. Keys without escapes
// are returned without a copy.
func keyText(key []byte) []byte {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	s, _ := jsonString(key)
	return []byte(s)
}

// objectIter walks the members of a JSON object that json.Valid accepted.
// Each value is returned as its raw text, nested values whole.
type objectIter struct {
	data []byte
	pos  int
}

// newObjectIter returns an iterator over data when data is a JSON object.
func newObjectIter(data []byte) (objectIter, bool) {
	it := objectIter{data: data}
	it.skipSpace()
	if it.pos >= len(data) || data[it.pos] != '{' {
		return objectIter{}, false
	}
	it.pos++
	return it, true
}

// next returns the next key (quoted, as in the input) and value, or false
// after the last member.
func (it *objectIter) next() (key, value []byte, ok bool) {
	it.skipSpace()
	if it.pos < len(it.data) && it.data[it.pos] == ',' {
		it.pos++
		it.skipSpace()
	}
	if it.pos >= len(it.data) || it.data[it.pos] != '"' {
		return nil, nil, false
	}

	start := it.pos
	it.pos = skipValue(it.data, it.pos)
	key = it.data[start:it.pos]

	it.skipSpace()
	if it.pos >= len(it.data) || it.data[it.pos] != ':' {
		return nil, nil, false
	}
	it.pos++
	it.skipSpace()

	start = it.pos
	it.pos = skipValue(it.data, it.pos)
	if it.pos <= start {
		return nil, nil, false
	}
	return key, it.data[start:it.pos], true
}

func (it *objectIter) skipSpace() {
	for it.pos < len(it.data) {
		switch it.data[it.pos] {
		case ' ', '\t', '\n', '\r':
			it.pos++
		default:
			return
		}
	}
}

// skipValue returns the index just past the JSON value that starts at i.
// It relies on the input being valid JSON and stops at the end of data
// rather than reading past it.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}

	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the JSON string that starts at i.
func skipString(data []byte, i int) int {
	i++
	for i < len(data) {
		switch data[i] {
		case '\\':
			i += 2
			continue
		case '"':
			return i + 1
		}
		i++
	}
	return len(data)
}
