package outbox

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	testCreated = time.Date(2026, 12, 4, 20, 13, 58, 123456789, time.UTC)
	testNow     = time.Date(2026, 12, 4, 20, 14, 0, 0, time.UTC)
)

func testMessage() *Message {
	return &Message{
		ID:            "0b9c1f2e-7d4a-4c55-9a43-2f7a1c9e8b10",
		AggregateType: "order",
		AggregateID:   "42",
		EventType:     "created",
		Payload:       json.RawMessage(`{"total":10}`),
		CreatedAt:     testCreated,
	}
}

func TestEncodeContract(t *testing.T) {
	fixedHeaders := map[string]any{
		"x-aggregate-type": "order",
		"x-aggregate-id":   "42",
		"x-event-type":     "created",
	}
	withHeaders := func(extra map[string]any) map[string]any {
		h := map[string]any{}
		for k, v := range extra {
			h[k] = v
		}
		for k, v := range fixedHeaders {
			h[k] = v
		}
		return h
	}

	tests := []struct {
		name        string
		metadata    string // "" means nil
		scheduledAt time.Time
		createdAt   time.Time // zero: a minute before testNow when scheduledAt is set
		cfg         EncodeConfig

		exchange      string
		routingKey    string
		correlationID string
		headers       map[string]any
		delay         time.Duration
		delayed       bool
	}{
		{
			name:       "nil metadata uses defaults",
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "configured exchange",
			cfg:        EncodeConfig{Exchange: "orders"},
			exchange:   "orders",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "null metadata gives no overrides",
			metadata:   `null`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "metadata exchange and routing key",
			metadata:   `{"exchange":"billing","routingKey":"invoice.due"}`,
			cfg:        EncodeConfig{Exchange: "orders"},
			exchange:   "billing",
			routingKey: "invoice.due",
			headers:    fixedHeaders,
		},
		{
			name:       "empty routing key string is kept",
			metadata:   `{"exchange":"fan","routingKey":""}`,
			exchange:   "fan",
			routingKey: "",
			headers:    fixedHeaders,
		},
		{
			name:       "non-string exchange and routing key are ignored",
			metadata:   `{"exchange":7,"routingKey":null}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "keys match case-sensitively",
			metadata:   `{"RoutingKey":"upper","routingkey":"lower"}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "escaped key and value",
			metadata:   `{"routing\u004bey":"a\"b\u00fc"}`,
			exchange:   "events",
			routingKey: `a"bü`,
			headers:    fixedHeaders,
		},
		{
			name:       "last duplicate key wins",
			metadata:   `{"routingKey":"first","routingKey":"second"}`,
			exchange:   "events",
			routingKey: "second",
			headers:    fixedHeaders,
		},
		{
			name:          "string correlation id",
			metadata:      `{"correlationId":"corr-1"}`,
			exchange:      "events",
			routingKey:    "order.created",
			correlationID: "corr-1",
			headers:       fixedHeaders,
		},
		{
			name:          "number correlation id keeps its text",
			metadata:      `{"correlationId":12345}`,
			exchange:      "events",
			routingKey:    "order.created",
			correlationID: "12345",
			headers:       fixedHeaders,
		},
		{
			name:       "object correlation id is ignored",
			metadata:   `{"correlationId":{"a":1}}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "metadata headers of every type",
			metadata:   `{"headers":{"s":"v","i":7,"neg":-3,"big":1e3,"f":1.5,"t":true,"no":false,"n":null,"o":{"k": [1, 2]},"a":[1,"x"]}}`,
			exchange:   "events",
			routingKey: "order.created",
			headers: withHeaders(map[string]any{
				"s":   "v",
				"i":   int64(7),
				"neg": int64(-3),
				"big": int64(1000),
				"f":   1.5,
				"t":   true,
				"no":  false,
				"o":   `{"k": [1, 2]}`,
				"a":   `[1,"x"]`,
			}),
		},
		{
			name:       "fixed headers win over metadata headers",
			metadata:   `{"headers":{"x-event-type":"spoofed","tenant":"t1"}}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    withHeaders(map[string]any{"tenant": "t1"}),
		},
		{
			name:       "headers that are not an object are ignored",
			metadata:   `{"headers":["a","b"]}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "array metadata gives no overrides",
			metadata:   `[{"routingKey":"x"}]`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "string metadata gives no overrides",
			metadata:   `"routingKey"`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "delay without delayed exchange",
			metadata:   `{"delay":1500}`,
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
			delay:      1500 * time.Millisecond,
		},
		{
			name:       "delay with delayed exchange",
			metadata:   `{"delay":1500,"routingKey":"later"}`,
			cfg:        EncodeConfig{DelayedExchange: "events.delayed"},
			exchange:   "events.delayed",
			routingKey: "later",
			headers:    withHeaders(map[string]any{"x-delay": int64(1500)}),
			delay:      1500 * time.Millisecond,
			delayed:    true,
		},
		{
			name:       "delayed exchange wins over metadata exchange",
			metadata:   `{"delay":10,"exchange":"billing"}`,
			cfg:        EncodeConfig{DelayedExchange: "events.delayed"},
			exchange:   "events.delayed",
			routingKey: "order.created",
			headers:    withHeaders(map[string]any{"x-delay": int64(10)}),
			delay:      10 * time.Millisecond,
			delayed:    true,
		},
		{
			name:       "numeric string delay",
			metadata:   `{"delay":"250"}`,
			cfg:        EncodeConfig{DelayedExchange: "d"},
			exchange:   "d",
			routingKey: "order.created",
			headers:    withHeaders(map[string]any{"x-delay": int64(250)}),
			delay:      250 * time.Millisecond,
			delayed:    true,
		},
		{
			name:       "fractional delay rounds up",
			metadata:   `{"delay":0.2}`,
			cfg:        EncodeConfig{DelayedExchange: "d"},
			exchange:   "d",
			routingKey: "order.created",
			headers:    withHeaders(map[string]any{"x-delay": int64(1)}),
			delay:      time.Millisecond,
			delayed:    true,
		},
		{
			name:       "zero delay is ignored",
			metadata:   `{"delay":0}`,
			cfg:        EncodeConfig{DelayedExchange: "d"},
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "negative delay is ignored",
			metadata:   `{"delay":-5}`,
			cfg:        EncodeConfig{DelayedExchange: "d"},
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:       "non-numeric delay string is ignored",
			metadata:   `{"delay":"soon"}`,
			cfg:        EncodeConfig{DelayedExchange: "d"},
			exchange:   "events",
			routingKey: "order.created",
			headers:    fixedHeaders,
		},
		{
			name:        "future scheduled_at rounds up to milliseconds",
			scheduledAt: testNow.Add(2*time.Second + 300*time.Microsecond),
			cfg:         EncodeConfig{DelayedExchange: "d"},
			exchange:    "d",
			routingKey:  "order.created",
			headers:     withHeaders(map[string]any{"x-delay": int64(2001)}),
			delay:       2001 * time.Millisecond,
			delayed:     true,
		},
		{
			name:        "future scheduled_at without delayed exchange",
			scheduledAt: testNow.Add(time.Second),
			exchange:    "events",
			routingKey:  "order.created",
			headers:     fixedHeaders,
			delay:       time.Second,
		},
		{
			name:        "past scheduled_at means no delay",
			scheduledAt: testNow.Add(-time.Second),
			cfg:         EncodeConfig{DelayedExchange: "d"},
			exchange:    "events",
			routingKey:  "order.created",
			headers:     fixedHeaders,
		},
		{
			name:        "scheduled_at equal to created_at means no delay",
			scheduledAt: testNow.Add(time.Second),
			createdAt:   testNow.Add(time.Second),
			cfg:         EncodeConfig{DelayedExchange: "d"},
			exchange:    "events",
			routingKey:  "order.created",
			headers:     fixedHeaders,
		},
		{
			name:        "metadata delay wins over scheduled_at",
			metadata:    `{"delay":100}`,
			scheduledAt: testNow.Add(time.Hour),
			cfg:         EncodeConfig{DelayedExchange: "d"},
			exchange:    "d",
			routingKey:  "order.created",
			headers:     withHeaders(map[string]any{"x-delay": int64(100)}),
			delay:       100 * time.Millisecond,
			delayed:     true,
		},
		{
			name:        "ignored metadata delay falls back to scheduled_at",
			metadata:    `{"delay":0}`,
			scheduledAt: testNow.Add(time.Second),
			cfg:         EncodeConfig{DelayedExchange: "d"},
			exchange:    "d",
			routingKey:  "order.created",
			headers:     withHeaders(map[string]any{"x-delay": int64(1000)}),
			delay:       time.Second,
			delayed:     true,
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage()
			if tc.metadata != "" {
				m.Metadata = json.RawMessage(tc.metadata)
			}
			if !tc.scheduledAt.IsZero() {
				m.ScheduledAt = tc.scheduledAt
				m.CreatedAt = testNow.Add(-time.Minute)
				if !tc.createdAt.IsZero() {
					m.CreatedAt = tc.createdAt
				}
			}

			p, err := Encode(m, tc.cfg, testNow)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}

			if p.Exchange != tc.exchange {
				t.Errorf("Exchange = %q, want %q", p.Exchange, tc.exchange)
			}
			if p.RoutingKey != tc.routingKey {
				t.Errorf("RoutingKey = %q, want %q", p.RoutingKey, tc.routingKey)
			}
			if p.CorrelationID != tc.correlationID {
				t.Errorf("CorrelationID = %q, want %q", p.CorrelationID, tc.correlationID)
			}
			if !reflect.DeepEqual(p.Headers, tc.headers) {
				t.Errorf("Headers = %#v, want %#v", p.Headers, tc.headers)
			}
			if p.Delay != tc.delay {
				t.Errorf("Delay = %v, want %v", p.Delay, tc.delay)
			}
			if p.Delayed != tc.delayed {
				t.Errorf("Delayed = %v, want %v", p.Delayed, tc.delayed)
			}

			// Properties that do not depend on metadata.
			if p.MessageID != m.ID {
				t.Errorf("MessageID = %q, want %q", p.MessageID, m.ID)
			}
			if p.Type != "created" {
				t.Errorf("Type = %q, want created", p.Type)
			}
			if p.ContentType != "application/json" {
				t.Errorf("ContentType = %q, want application/json", p.ContentType)
			}
			if !p.Timestamp.Equal(m.CreatedAt) {
				t.Errorf("Timestamp = %v, want %v", p.Timestamp, m.CreatedAt)
			}
			if !json.Valid(p.Body) {
				t.Errorf("Body is not valid JSON: %s", p.Body)
			}
		})
	}
}

func TestEncodeInvalidMetadata(t *testing.T) {
	for _, metadata := range []string{`{"delay":`, `{bad}`, `{"a":1}}`, "\xff"} {
		m := testMessage()
		m.Metadata = json.RawMessage(metadata)
		_, err := Encode(m, EncodeConfig{}, testNow)
		if err == nil {
			t.Errorf("Encode with metadata %q: got no error", metadata)
			continue
		}
		if !strings.Contains(err.Error(), m.ID) || !strings.Contains(err.Error(), "metadata") {
			t.Errorf("error %q does not name the message id and metadata", err)
		}
	}
}

func TestAppendBodyExact(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{
			name: "jsonb style payload kept byte for byte",
			msg: Message{
				ID: "id-1", AggregateType: "order", AggregateID: "42", EventType: "created",
				Payload:   json.RawMessage(`{"a": 1, "b": "ü"}`),
				Metadata:  json.RawMessage(`{"routingKey": "x"}`),
				CreatedAt: time.Date(2026, 12, 4, 20, 13, 58, 123999999, time.UTC),
			},
			want: `{"id":"id-1","aggregateType":"order","aggregateId":"42","eventType":"created","payload":{"a": 1, "b": "ü"},"metadata":{"routingKey": "x"},"createdAt":"2026-12-04T20:13:58.123Z"}`,
		},
		{
			name: "json style odd whitespace and escapes kept",
			msg: Message{
				ID: "id-2", AggregateType: "order", AggregateID: "42", EventType: "created",
				Payload:   json.RawMessage("{ \"z\" :\n\t[1,2 ,3],\"a\":\"\\u00fc<&>\" }"),
				CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)),
			},
			want: "{\"id\":\"id-2\",\"aggregateType\":\"order\",\"aggregateId\":\"42\",\"eventType\":\"created\",\"payload\":{ \"z\" :\n\t[1,2 ,3],\"a\":\"\\u00fc<&>\" },\"metadata\":null,\"createdAt\":\"2026-01-02T02:04:05.000Z\"}",
		},
		{
			name: "nil payload and metadata are null",
			msg: Message{
				ID: "id-3", AggregateType: "a", AggregateID: "b", EventType: "c",
				CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			},
			want: `{"id":"id-3","aggregateType":"a","aggregateId":"b","eventType":"c","payload":null,"metadata":null,"createdAt":"2026-01-01T00:00:00.000Z"}`,
		},
		{
			name: "strings escaped by hand",
			msg: Message{
				ID: "q\"b\\s/", AggregateType: "tab\tnl\ncr\r", AggregateID: "\x00\x1f\b\f", EventType: "<ü&€>\u2028",
				Payload:   json.RawMessage(`1`),
				CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			},
			want: `{"id":"q\"b\\s/","aggregateType":"tab\tnl\ncr\r","aggregateId":"\u0000\u001f\b\f","eventType":"<ü&€>` + "\u2028" + `","payload":1,"metadata":null,"createdAt":"2026-01-01T00:00:00.000Z"}`,
		},
		{
			name: "invalid UTF-8 becomes U+FFFD escape",
			msg: Message{
				ID: "a\xffb\xe2\x82", AggregateType: "a", AggregateID: "b", EventType: "c",
				Payload:   json.RawMessage(`{}`),
				CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			},
			want: `{"id":"a\ufffdb\ufffd\ufffd","aggregateType":"a","aggregateId":"b","eventType":"c","payload":{},"metadata":null,"createdAt":"2026-01-01T00:00:00.000Z"}`,
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendBody(nil, &tc.msg))
			if got != tc.want {
				t.Errorf("body\n got %s\nwant %s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("body is not valid JSON")
			}

			p, err := Encode(&tc.msg, EncodeConfig{}, testNow)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(p.Body) != tc.want {
				t.Errorf("Encode body\n got %s\nwant %s", p.Body, tc.want)
			}
		})
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		"", "plain", "quote\" backslash\\ slash/", "\x00\x01\x07\x1f\x7f",
		"ü€😀", "a\xffb", "\xe2\x82", "\xed\xa0\x80", "line\nbreak\ttab\rret\bbs\fff",
	}
	for _, s := range inputs {
		got := appendJSONString(nil, s)

		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("appendJSONString(%q) = %s: not a JSON string: %v", s, got, err)
			continue
		}
		want, _ := json.Marshal(s) // encoding/json replaces invalid UTF-8 the same way
		var wantBack string
		if err := json.Unmarshal(want, &wantBack); err != nil {
			t.Fatalf("unmarshal encoding/json output: %v", err)
		}
		if back != wantBack {
			t.Errorf("appendJSONString(%q) decodes to %q, encoding/json to %q", s, back, wantBack)
		}
	}
}

func TestBodyParsesAsEventForgeFields(t *testing.T) {
	m := testMessage()
	m.Payload = json.RawMessage(`{"total": 10, "items": [{"sku": "A-1"}]}`)
	m.Metadata = json.RawMessage(`{"correlationId": "c-9", "headers": {"tenant": "t1"}}`)

	p, err := Encode(m, EncodeConfig{}, testNow)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}

	var body struct {
		ID            string          `json:"id"`
		AggregateType string          `json:"aggregateType"`
		AggregateID   string          `json:"aggregateId"`
		EventType     string          `json:"eventType"`
		Payload       json.RawMessage `json:"payload"`
		Metadata      json.RawMessage `json:"metadata"`
		CreatedAt     time.Time       `json:"createdAt"`
	}
	if err := json.Unmarshal(p.Body, &body); err != nil {
		t.Fatalf("unmarshal body %s: %v", p.Body, err)
	}

	if body.ID != m.ID {
		t.Errorf("id = %q, want %q", body.ID, m.ID)
	}
	if body.AggregateType != m.AggregateType {
		t.Errorf("aggregateType = %q, want %q", body.AggregateType, m.AggregateType)
	}
	if body.AggregateID != m.AggregateID {
		t.Errorf("aggregateId = %q, want %q", body.AggregateID, m.AggregateID)
	}
	if body.EventType != m.EventType {
		t.Errorf("eventType = %q, want %q", body.EventType, m.EventType)
	}
	if string(body.Payload) != string(m.Payload) {
		t.Errorf("payload = %s, want %s", body.Payload, m.Payload)
	}
	if string(body.Metadata) != string(m.Metadata) {
		t.Errorf("metadata = %s, want %s", body.Metadata, m.Metadata)
	}
	if want := m.CreatedAt.Truncate(time.Millisecond); !body.CreatedAt.Equal(want) {
		t.Errorf("createdAt = %v, want %v", body.CreatedAt, want)
	}

	var keys []string
	dec := json.NewDecoder(strings.NewReader(string(p.Body)))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("read body: %v", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("read key: %v", err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("read value: %v", err)
		}
	}
	wantKeys := []string{"id", "aggregateType", "aggregateId", "eventType", "payload", "metadata", "createdAt"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("keys = %v, want %v", keys, wantKeys)
	}
}

// benchPayload is a realistic order event of about 300 bytes.
var benchPayload = json.RawMessage(`{"orderId":"ord_8f14e45fceea167a5a36dedd4bea2543","customerId":"cus_1f0e3dad99908345f7439f8ffabdffc4","currency":"EUR","total":129.9,"items":[{"sku":"SKU-1001","name":"Kaffeebohnen 1kg","qty":2,"price":24.95},{"sku":"SKU-2002","name":"Mühle","qty":1,"price":79.99}],"status":"created"}`)

func BenchmarkEncode(b *testing.B) {
	m := benchMessage()
	cfg := EncodeConfig{Exchange: "events"}

	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := Encode(m, cfg, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// benchMessage is an order event with a 300-byte payload and metadata that
// sets a correlation id and two headers.
func benchMessage() *Message {
	return &Message{
		ID:            "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
		AggregateType: "order",
		AggregateID:   "ord_8f14e45fceea167a5a36dedd4bea2543",
		EventType:     "order.created",
		Payload:       benchPayload,
		Metadata:      json.RawMessage(`{"correlationId":"req-77","headers":{"tenant":"acme","priority":5}}`),
		CreatedAt:     testCreated,
	}
}
