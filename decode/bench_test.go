package decode

import (
	"strings"
	"testing"
)

// BenchmarkDecodeInsert decodes one outbox row with a 300-byte payload, the
// work done for every row the relay publishes. In "jsonb", the Event-Forge
// table, the server has already checked the payload and metadata. In
// "text" they are text columns, so the decoder checks them as JSON.
func BenchmarkDecodeInsert(b *testing.B) {
	payload := `{"orderId":"ord-20261204-000042","customerId":"cus-7f3a9c","currency":"EUR",` +
		`"items":[{"sku":"SKU-1001","quantity":2,"price":19.99},{"sku":"SKU-2002","quantity":1,"price":5.50}],"note":"`
	payload += strings.Repeat("x", 300-len(payload)-2) + `"}`
	if len(payload) != 300 {
		b.Fatalf("payload is %d bytes, want 300", len(payload))
	}
	frame := insertFrame(outboxOID, eventForgeRow(
		text(testID),
		text(payload),
		text(`{"correlationId":"c0ffee00-1234-4abc-8def-000000000001","routingKey":"orders.created"}`),
		text("2026-12-04 20:13:58.123456+00"),
	)...)

	for _, jsonType := range []struct {
		name string
		oid  uint32
	}{{"jsonb", oidJSONB}, {"text", oidText}} {
		b.Run(jsonType.name, func(b *testing.B) {
			columns := make([]testColumn, len(eventForgeColumns))
			copy(columns, eventForgeColumns)
			for i := range columns {
				if columns[i].name == "payload" || columns[i].name == "metadata" {
					columns[i].typeOID = jsonType.oid
				}
			}
			d := New(Config{})
			mustDecode(b, d, relationFrame(outboxOID, "public", "outbox_messages", columns...))
			mustDecode(b, d, beginFrame(0x16B3748, testCommitTime, 777))

			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				ev, err := d.Decode(0x16B3710, frame)
				if err != nil || ev.Kind != KindMessage {
					b.Fatalf("decode: kind %v, error %v", ev.Kind, err)
				}
			}
		})
	}
}
