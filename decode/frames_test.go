package decode

import (
	"encoding/binary"
	"time"
)

// frameBuilder writes pgoutput fields in network byte order.
type frameBuilder struct{ b []byte }

func newFrame(kind byte) *frameBuilder { return &frameBuilder{b: []byte{kind}} }

func (f *frameBuilder) u8(v byte) *frameBuilder { f.b = append(f.b, v); return f }

func (f *frameBuilder) u16(v uint16) *frameBuilder {
	f.b = binary.BigEndian.AppendUint16(f.b, v)
	return f
}

func (f *frameBuilder) u32(v uint32) *frameBuilder {
	f.b = binary.BigEndian.AppendUint32(f.b, v)
	return f
}

func (f *frameBuilder) u64(v uint64) *frameBuilder {
	f.b = binary.BigEndian.AppendUint64(f.b, v)
	return f
}

func (f *frameBuilder) cstring(s string) *frameBuilder {
	f.b = append(append(f.b, s...), 0)
	return f
}

func (f *frameBuilder) raw(b []byte) *frameBuilder { f.b = append(f.b, b...); return f }

func (f *frameBuilder) bytes() []byte { return f.b }

// pgMicros converts t to microseconds since 2000-01-01 00:00:00 UTC.
func pgMicros(t time.Time) uint64 {
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	return uint64(t.Sub(epoch).Microseconds())
}

func beginFrame(finalLSN uint64, commitTime time.Time, xid uint32) []byte {
	return newFrame('B').u64(finalLSN).u64(pgMicros(commitTime)).u32(xid).bytes()
}

func commitFrame(commitLSN, endLSN uint64, commitTime time.Time) []byte {
	return newFrame('C').u8(0).u64(commitLSN).u64(endLSN).u64(pgMicros(commitTime)).bytes()
}

// Type OIDs from pg_type.
const (
	oidText        = 25
	oidJSON        = 114
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
	oidVarchar     = 1043
	oidInt4        = 23
)

type testColumn struct {
	name    string
	typeOID uint32
}

func relationFrame(oid uint32, namespace, name string, columns ...testColumn) []byte {
	f := newFrame('R').u32(oid).cstring(namespace).cstring(name).u8('d').u16(uint16(len(columns)))
	for i, c := range columns {
		flags := byte(0)
		if i == 0 {
			flags = 1
		}
		f.u8(flags).cstring(c.name).u32(c.typeOID).u32(0xFFFFFFFF)
	}
	return f.bytes()
}

// tupleColumn is one column of an Insert: kind 'n', 'u', 't' or 'b' and, for
// 't' and 'b', its value.
type tupleColumn struct {
	kind  byte
	value string
}

func text(s string) tupleColumn { return tupleColumn{kind: 't', value: s} }

var (
	null      = tupleColumn{kind: 'n'}
	unchanged = tupleColumn{kind: 'u'}
)

func insertFrame(oid uint32, columns ...tupleColumn) []byte {
	f := newFrame('I').u32(oid).u8('N').u16(uint16(len(columns)))
	for _, c := range columns {
		f.u8(c.kind)
		if c.kind == 't' || c.kind == 'b' {
			f.u32(uint32(len(c.value))).raw([]byte(c.value))
		}
	}
	return f.bytes()
}

func messageFrame(transactional bool, lsn uint64, prefix, content string) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	return newFrame('M').u8(flags).u64(lsn).cstring(prefix).u32(uint32(len(content))).raw([]byte(content)).bytes()
}

// The Event-Forge outbox_messages table in its column order.
const outboxOID = 16384

// eventForgeColumns is outbox_messages with payload and metadata of type
// text, so the decoder validates their JSON; Postgres has already validated
// json and jsonb columns, and the decoder trusts those.
var eventForgeColumns = []testColumn{
	{"id", oidUUID},
	{"aggregate_type", oidVarchar},
	{"aggregate_id", oidVarchar},
	{"event_type", oidVarchar},
	{"payload", oidText},
	{"metadata", oidText},
	{"status", oidVarchar},
	{"retry_count", oidInt4},
	{"max_retries", oidInt4},
	{"error_message", oidText},
	{"scheduled_at", oidTimestampTZ},
	{"locked_by", oidVarchar},
	{"locked_at", oidTimestampTZ},
	{"created_at", oidTimestampTZ},
	{"updated_at", oidTimestampTZ},
}

// eventForgeRow returns the tuple of an outbox_messages row in table order.
func eventForgeRow(id, payload, metadata tupleColumn, createdAt tupleColumn) []tupleColumn {
	return []tupleColumn{
		id,
		text("order"),
		text("ord-42"),
		text("order.created"),
		payload,
		metadata,
		text("pending"),
		text("0"),
		text("3"),
		null,
		null,
		null,
		null,
		createdAt,
		text("2026-12-04 20:13:58.123456+00"),
	}
}

var (
	testCommitTime = time.Date(2026, 12, 4, 20, 13, 59, 654321000, time.UTC)
	testID         = "0b5e4c1e-8d3f-4a8e-9a51-6f0c2d7e1a90"
)

// newTestDecoder returns an Event-Forge decoder that has seen the outbox
// Relation and a Begin, so an Insert can follow.
func newTestDecoder(t testingT) *Decoder {
	t.Helper()
	d := New(Config{})
	mustDecode(t, d, relationFrame(outboxOID, "public", "outbox_messages", eventForgeColumns...))
	mustDecode(t, d, beginFrame(0x16B3748, testCommitTime, 777))
	return d
}

type testingT interface {
	Helper()
	Fatalf(format string, args ...any)
}

func mustDecode(t testingT, d *Decoder, frame []byte) Event {
	t.Helper()
	ev, err := d.Decode(0x16B3700, frame)
	if err != nil {
		t.Fatalf("decode %q frame: %v", frame[0], err)
	}
	return ev
}
