package outbox

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestEncoderMatchesEncode encodes a run of different messages with one
// Encoder and checks each result against the function Encode, so that
// nothing of one message (a header, a routing key, body bytes) is left in
// the next.
func TestEncoderMatchesEncode(t *testing.T) {
	cfg := EncodeConfig{Exchange: "events", DelayedExchange: "delayed"}
	base := testMessage()

	withMeta := func(m *Message, metadata string) *Message {
		c := *m
		c.Metadata = json.RawMessage(metadata)
		return &c
	}
	other := *base
	other.AggregateType, other.EventType, other.AggregateID = "invoice", "paid", "inv-7"
	scheduled := *base
	scheduled.ScheduledAt = testNow.Add(90 * time.Second)
	long := *base
	long.Payload = json.RawMessage(`{"note":"` + `a much longer payload than the others, so the body buffer grows"}`)

	messages := []*Message{
		withMeta(base, `{"headers":{"tenant":"acme","priority":5},"correlationId":"req-1"}`),
		base,
		&long,
		withMeta(base, `{"routingKey":"custom.key","exchange":"audit"}`),
		&other,
		&scheduled,
		base,
		withMeta(&other, `{"delay":250}`),
		&other,
	}

	enc := NewEncoder(cfg)
	for i, m := range messages {
		want, err := Encode(m, cfg, testNow)
		if err != nil {
			t.Fatalf("message %d: Encode: %v", i, err)
		}
		got, err := enc.Encode(m, testNow)
		if err != nil {
			t.Fatalf("message %d: Encoder.Encode: %v", i, err)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("message %d: Encoder.Encode =\n%+v\nwant\n%+v", i, *got, want)
		}
	}
}

// TestEncoderInvalidMetadata checks that the Encoder reports invalid
// metadata as Encode does, and encodes the next message correctly after it.
func TestEncoderInvalidMetadata(t *testing.T) {
	enc := NewEncoder(EncodeConfig{})
	bad := testMessage()
	bad.Metadata = json.RawMessage(`{"delay":`)
	if _, err := enc.Encode(bad, testNow); err == nil {
		t.Fatalf("Encoder.Encode with metadata %q: got no error", bad.Metadata)
	}

	good := testMessage()
	got, err := enc.Encode(good, testNow)
	if err != nil {
		t.Fatalf("Encoder.Encode after an error: %v", err)
	}
	want, _ := Encode(good, EncodeConfig{}, testNow)
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Encoder.Encode after an error =\n%+v\nwant\n%+v", *got, want)
	}
}

// BenchmarkEncoder builds a message the way the relay does: one Encoder,
// and metadata the decoder has already checked.
func BenchmarkEncoder(b *testing.B) {
	m := benchMessage()
	m.MetadataChecked = true
	enc := NewEncoder(EncodeConfig{Exchange: "events"})

	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := enc.Encode(m, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
