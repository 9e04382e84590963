package relay

import (
	"encoding/json"
	"time"

	"github.com/walrelay/walrelay/outbox"
)

// Reasons in the x-walrelay-reason header of dead-lettered messages.
const (
	reasonUnroutable = "unroutable"
	reasonInvalid    = "invalid"
)

// deadLetter is a message bound for the dead-letter exchange.
type deadLetter struct {
	reason    string
	errorText string

	// original is the message the broker returned; nil for an invalid row.
	original *outbox.Publishing

	// messageID, raw and lsn describe an invalid row: its id (possibly
	// empty), the row as JSON and its WAL position.
	messageID string
	raw       []byte
	lsn       string
	timestamp time.Time // commit time of the row's transaction
}

// publishing builds the dead-letter message. A returned message keeps its
// body and properties and gains headers naming the reason and where it was
// sent; an invalid row becomes a JSON body {"error", "row"}.
func (d *deadLetter) publishing(exchange string) outbox.Publishing {
	if d.original != nil {
		p := *d.original
		headers := make(map[string]any, len(p.Headers)+4)
		for k, v := range p.Headers {
			headers[k] = v
		}
		headers["x-walrelay-reason"] = d.reason
		headers["x-walrelay-error"] = d.errorText
		headers["x-original-exchange"] = p.Exchange
		headers["x-original-routing-key"] = p.RoutingKey
		delete(headers, "x-delay")

		p.Headers = headers
		p.Exchange = exchange
		p.Delayed = false
		p.Delay = 0
		return p
	}

	raw := d.raw
	if len(raw) == 0 {
		raw = []byte("null")
	}
	body := make([]byte, 0, len(raw)+len(d.errorText)+32)
	body = append(body, `{"error":`...)
	quoted, _ := json.Marshal(d.errorText) // a string always marshals
	body = append(body, quoted...)
	body = append(body, `,"row":`...)
	body = append(body, raw...)
	body = append(body, '}')

	return outbox.Publishing{
		Exchange:    exchange,
		RoutingKey:  reasonInvalid,
		MessageID:   d.messageID,
		Timestamp:   d.timestamp,
		ContentType: outbox.ContentType,
		Headers: map[string]any{
			"x-walrelay-reason": d.reason,
			"x-walrelay-error":  d.errorText,
			"x-walrelay-lsn":    d.lsn,
		},
		Body: body,
	}
}
