package inbox

import (
	"errors"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		delivery amqp.Delivery
		want     Message
	}{
		{
			name: "relay message",
			delivery: amqp.Delivery{
				MessageId: "m-1", Type: "created", RoutingKey: "order.created", Exchange: "events",
				Body: []byte(`{"id":"m-1","aggregateType":"order","aggregateId":"o-1","eventType":"created","payload":{"total":42},"metadata":{"trace":"x"},"createdAt":"2024-05-01T10:00:00.000Z"}`),
			},
			want: Message{ID: "m-1", EventType: "created", Payload: []byte(`{"total":42}`), Metadata: []byte(`{"trace":"x"}`),
				Exchange: "events", RoutingKey: "order.created"},
		},
		{
			name: "body id wins over message_id",
			delivery: amqp.Delivery{MessageId: "amqp-id", Type: "amqp-type",
				Body: []byte(`{"id":"body-id","eventType":"body-type","payload":[1,2]}`)},
			want: Message{ID: "body-id", EventType: "body-type", Payload: []byte(`[1,2]`)},
		},
		{
			name: "no payload key stores the whole body",
			delivery: amqp.Delivery{MessageId: "m-2", Type: "paid",
				Body: []byte(`{"orderId":7,"amount":3}`)},
			want: Message{ID: "m-2", EventType: "paid", Payload: []byte(`{"orderId":7,"amount":3}`)},
		},
		{
			name:     "event type from routing key",
			delivery: amqp.Delivery{MessageId: "m-3", RoutingKey: "order.shipped", Body: []byte(`{"payload":{}}`)},
			want:     Message{ID: "m-3", EventType: "order.shipped", Payload: []byte(`{}`), RoutingKey: "order.shipped"},
		},
		{
			name:     "array body",
			delivery: amqp.Delivery{MessageId: "m-4", Type: "batch", Body: []byte(` [1, 2] `)},
			want:     Message{ID: "m-4", EventType: "batch", Payload: []byte(`[1, 2]`)},
		},
		{
			name:     "numeric id",
			delivery: amqp.Delivery{Type: "t", Body: []byte(`{"id":12345,"payload":null}`)},
			want:     Message{ID: "12345", EventType: "t", Payload: []byte(`null`)},
		},
		{
			name:     "null metadata and null id",
			delivery: amqp.Delivery{MessageId: "m-5", Type: "t", Body: []byte(`{"id":null,"payload":1,"metadata":null}`)},
			want:     Message{ID: "m-5", EventType: "t", Payload: []byte(`1`)},
		},
		{
			name:     "keys are case-sensitive",
			delivery: amqp.Delivery{MessageId: "m-6", Type: "t", Body: []byte(`{"ID":"other","Payload":5}`)},
			want:     Message{ID: "m-6", EventType: "t", Payload: []byte(`{"ID":"other","Payload":5}`)},
		},
		{
			name:     "escaped id",
			delivery: amqp.Delivery{Type: "t", Body: []byte(`{"id":"a\"b\u00e9","payload":{}}`)},
			want:     Message{ID: "a\"bé", EventType: "t", Payload: []byte(`{}`)},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.delivery)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.ID != tt.want.ID {
				t.Errorf("ID = %q, want %q", got.ID, tt.want.ID)
			}
			if got.EventType != tt.want.EventType {
				t.Errorf("EventType = %q, want %q", got.EventType, tt.want.EventType)
			}
			if string(got.Payload) != string(tt.want.Payload) {
				t.Errorf("Payload = %s, want %s", got.Payload, tt.want.Payload)
			}
			if string(got.Metadata) != string(tt.want.Metadata) || (got.Metadata == nil) != (tt.want.Metadata == nil) {
				t.Errorf("Metadata = %q, want %q", got.Metadata, tt.want.Metadata)
			}
			if got.Exchange != tt.want.Exchange || got.RoutingKey != tt.want.RoutingKey {
				t.Errorf("Exchange, RoutingKey = %q, %q, want %q, %q", got.Exchange, got.RoutingKey, tt.want.Exchange, tt.want.RoutingKey)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name     string
		delivery amqp.Delivery
	}{
		{"empty body", amqp.Delivery{MessageId: "m", Type: "t"}},
		{"not JSON", amqp.Delivery{MessageId: "m", Type: "t", Body: []byte("hello")}},
		{"broken object", amqp.Delivery{MessageId: "m", Type: "t", Body: []byte(`{"id":"m",`)}},
		{"no id anywhere", amqp.Delivery{Type: "t", Body: []byte(`{"payload":{}}`)}},
		{"no event type anywhere", amqp.Delivery{MessageId: "m", Body: []byte(`{"payload":{}}`)}},
		{"object id", amqp.Delivery{Type: "t", Body: []byte(`{"id":{"a":1}}`)}},
		{"boolean event type", amqp.Delivery{MessageId: "m", Body: []byte(`{"eventType":true}`)}},
		{"NUL in id", amqp.Delivery{Type: "t", Body: []byte(`{"id":"a\u0000b"}`)}},
		{"invalid UTF-8 message_id", amqp.Delivery{MessageId: "a\xffb", Type: "t", Body: []byte(`{}`)}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.delivery)
			if err == nil {
				t.Fatalf("Parse returned %+v, want an error", m)
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("error %v does not wrap ErrInvalidMessage", err)
			}
		})
	}
}

func TestParseBinding(t *testing.T) {
	tests := []struct {
		in      string
		want    Binding
		wantErr bool
	}{
		{in: "events:order.#", want: Binding{Exchange: "events", Pattern: "order.#"}},
		{in: "events", want: Binding{Exchange: "events", Pattern: "#"}},
		{in: "events:", want: Binding{Exchange: "events", Pattern: "#"}},
		{in: "ex:a:b", want: Binding{Exchange: "ex", Pattern: "a:b"}},
		{in: ":order.#", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseBinding(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseBinding(%q) = %+v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseBinding(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
}
