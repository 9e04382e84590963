package inbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Message is one broker message as the inbox table records it.
type Message struct {
	// ID is the message id: the body's "id", else the AMQP message_id. It is
	// stored in the message_id column.
	ID string

	// EventType is the body's "eventType", else the AMQP type, else the
	// routing key.
	EventType string

	// Payload is the body's "payload" as raw JSON, else the whole body.
	Payload json.RawMessage

	// Metadata is the body's "metadata" as raw JSON, or nil when the body
	// has none or it is null.
	Metadata json.RawMessage

	// Exchange and RoutingKey are where the broker delivered the message
	// from. They are not stored.
	Exchange   string
	RoutingKey string
}

// ErrInvalidMessage marks a delivery that cannot become an inbox row. The
// consumer rejects such a delivery without requeue, so the queue's
// dead-letter exchange receives it.
var ErrInvalidMessage = errors.New("invalid message")

// Parse builds the Message of d. The body must be JSON. A JSON object body
// is read as Event-Forge writes it ({"id","eventType","payload",...}), with
// exact, case-sensitive keys. Any other JSON body becomes the payload whole.
// The error wraps ErrInvalidMessage and names the missing or invalid field.
func Parse(d amqp.Delivery) (Message, error) {
	m := Message{Exchange: d.Exchange, RoutingKey: d.RoutingKey}

	body := bytes.TrimSpace(d.Body)
	if len(body) == 0 {
		return m, fmt.Errorf("%w: the body is empty, want a JSON object", ErrInvalidMessage)
	}

	var fields map[string]json.RawMessage
	if body[0] == '{' {
		if err := json.Unmarshal(body, &fields); err != nil {
			return m, fmt.Errorf("%w: the body is not valid JSON: %v", ErrInvalidMessage, err)
		}
	} else if !json.Valid(body) {
		return m, fmt.Errorf("%w: the body is not valid JSON", ErrInvalidMessage)
	}

	id, err := stringField(fields, "id")
	if err != nil {
		return m, err
	}
	m.ID = firstNonEmpty(id, d.MessageId)

	eventType, err := stringField(fields, "eventType")
	if err != nil {
		return m, err
	}
	m.EventType = firstNonEmpty(eventType, d.Type, d.RoutingKey)

	m.Payload = body
	if raw, ok := fields["payload"]; ok {
		m.Payload = raw
	}
	if raw, ok := fields["metadata"]; ok && !bytes.Equal(raw, []byte("null")) {
		m.Metadata = raw
	}

	if err := checkText("message id", m.ID, "a body \"id\" or an AMQP message_id"); err != nil {
		return m, err
	}
	if err := checkText("event type", m.EventType, "a body \"eventType\", an AMQP type or a routing key"); err != nil {
		return m, err
	}

	return m, nil
}

// stringField returns the JSON string member key of fields, or "" when it
// is absent or null. A number is taken as its text, since some producers
// use numeric ids.
func stringField(fields map[string]json.RawMessage, key string) (string, error) {
	raw, ok := fields[key]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}

	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: body %q is not a valid JSON string: %v", ErrInvalidMessage, key, err)
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), nil
	default:
		return "", fmt.Errorf("%w: body %q is %s, want a string", ErrInvalidMessage, key, abbreviate(raw))
	}
}

// checkText rejects an empty value and text that Postgres cannot store in
// a varchar column: invalid UTF-8 or a NUL byte.
func checkText(name, value, sources string) error {
	if value == "" {
		return fmt.Errorf("%w: no %s: send %s", ErrInvalidMessage, name, sources)
	}
	if !utf8.ValidString(value) || strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: %s %q is not valid UTF-8 text without NUL bytes", ErrInvalidMessage, name, value)
	}
	return nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// abbreviate shortens raw JSON for an error message.
func abbreviate(raw []byte) string {
	const limit = 40
	if len(raw) > limit {
		return string(raw[:limit]) + "..."
	}
	return string(raw)
}
