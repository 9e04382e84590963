package decode

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

func TestDecodeBeginCommit(t *testing.T) {
	d := New(Config{})

	begin, err := d.Decode(0x100, beginFrame(0x16B3748, testCommitTime, 777))
	if err != nil {
		t.Fatalf("decode Begin: %v", err)
	}
	if begin.Kind != KindBegin {
		t.Errorf("Begin kind = %v, want begin", begin.Kind)
	}
	if begin.Xid != 777 {
		t.Errorf("Begin xid = %d, want 777", begin.Xid)
	}
	if begin.CommitLSN != 0x16B3748 {
		t.Errorf("Begin final LSN = %s, want 0/16B3748", begin.CommitLSN)
	}
	if !begin.CommitTime.Equal(testCommitTime) || begin.CommitTime.Location() != time.UTC {
		t.Errorf("Begin commit time = %v, want %v in UTC", begin.CommitTime, testCommitTime)
	}

	commitTime := testCommitTime.Add(time.Millisecond)
	commit, err := d.Decode(0x200, commitFrame(0x16B3748, 0x16B3780, commitTime))
	if err != nil {
		t.Fatalf("decode Commit: %v", err)
	}
	if commit.Kind != KindCommit {
		t.Errorf("Commit kind = %v, want commit", commit.Kind)
	}
	if commit.Xid != 777 {
		t.Errorf("Commit xid = %d, want the Begin's 777", commit.Xid)
	}
	if commit.CommitLSN != 0x16B3748 {
		t.Errorf("Commit LSN = %s, want 0/16B3748", commit.CommitLSN)
	}
	if commit.EndLSN != 0x16B3780 {
		t.Errorf("Commit end LSN = %s, want 0/16B3780", commit.EndLSN)
	}
	if !commit.CommitTime.Equal(commitTime) {
		t.Errorf("Commit time = %v, want %v", commit.CommitTime, commitTime)
	}
}

func TestCommitTimeBeforeEpoch(t *testing.T) {
	d := New(Config{})
	want := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)

	ev := mustDecode(t, d, beginFrame(1, want, 1))

	if !ev.CommitTime.Equal(want) {
		t.Errorf("commit time = %v, want %v", ev.CommitTime, want)
	}
}

func TestDecodeInsertEventForge(t *testing.T) {
	d := newTestDecoder(t)
	frame := insertFrame(outboxOID, eventForgeRow(
		text(testID),
		text(`{"orderId": 42, "total": 99.5}`),
		text(`{"routingKey": "orders.created"}`),
		text("2026-12-04 20:13:58.123456+00"),
	)...)

	ev, err := d.Decode(0x16B3710, frame)
	if err != nil {
		t.Fatalf("decode Insert: %v", err)
	}

	if ev.Kind != KindMessage {
		t.Fatalf("kind = %v, want message", ev.Kind)
	}
	if ev.LSN != 0x16B3710 {
		t.Errorf("LSN = %s, want the walStart 0/16B3710", ev.LSN)
	}
	if !ev.Transactional {
		t.Error("Transactional = false, want true for a row")
	}
	m := ev.Message
	if m.ID != testID {
		t.Errorf("ID = %q, want %q", m.ID, testID)
	}
	if m.AggregateType != "order" {
		t.Errorf("AggregateType = %q, want order", m.AggregateType)
	}
	if m.AggregateID != "ord-42" {
		t.Errorf("AggregateID = %q, want ord-42", m.AggregateID)
	}
	if m.EventType != "order.created" {
		t.Errorf("EventType = %q, want order.created", m.EventType)
	}
	if string(m.Payload) != `{"orderId": 42, "total": 99.5}` {
		t.Errorf("Payload = %s", m.Payload)
	}
	if string(m.Metadata) != `{"routingKey": "orders.created"}` {
		t.Errorf("Metadata = %s", m.Metadata)
	}
	wantCreated := time.Date(2026, 12, 4, 20, 13, 58, 123456000, time.UTC)
	if !m.CreatedAt.Equal(wantCreated) {
		t.Errorf("CreatedAt = %v, want %v", m.CreatedAt, wantCreated)
	}
	if !m.ScheduledAt.IsZero() {
		t.Errorf("ScheduledAt = %v, want zero for NULL", m.ScheduledAt)
	}
}

func TestInsertDoesNotAliasFrame(t *testing.T) {
	d := newTestDecoder(t)
	frame := insertFrame(outboxOID, eventForgeRow(text(testID), text(`{"a":1}`), text(`{"b":2}`), null)...)

	ev := mustDecode(t, d, frame)
	for i := range frame {
		frame[i] = 'x'
	}

	if ev.Message.ID != testID {
		t.Errorf("ID changed with the frame: %q", ev.Message.ID)
	}
	if string(ev.Message.Payload) != `{"a":1}` {
		t.Errorf("Payload changed with the frame: %s", ev.Message.Payload)
	}
	if string(ev.Message.Metadata) != `{"b":2}` {
		t.Errorf("Metadata changed with the frame: %s", ev.Message.Metadata)
	}
}

func TestPayloadAppendKeepsMetadata(t *testing.T) {
	d := newTestDecoder(t)
	frame := insertFrame(outboxOID, eventForgeRow(text(testID), text(`{"a":1}`), text(`{"b":2}`), null)...)

	ev := mustDecode(t, d, frame)
	_ = append(ev.Message.Payload, "XXXXXXX"...)

	if string(ev.Message.Metadata) != `{"b":2}` {
		t.Errorf("Metadata = %s after appending to Payload, want it unchanged", ev.Message.Metadata)
	}
}

func TestRelationReplacedMidStream(t *testing.T) {
	d := New(Config{})
	mustDecode(t, d, relationFrame(outboxOID, "public", "outbox_messages",
		testColumn{"id", oidUUID},
		testColumn{"aggregate_type", oidVarchar},
		testColumn{"aggregate_id", oidVarchar},
		testColumn{"event_type", oidVarchar},
		testColumn{"payload", oidJSONB},
	))
	mustDecode(t, d, beginFrame(0x500, testCommitTime, 9))

	first := mustDecode(t, d, insertFrame(outboxOID,
		text("id-1"), text("order"), text("o-1"), text("created"), text(`{"v":1}`)))
	if first.Message.Metadata != nil {
		t.Errorf("first row metadata = %s, want nil before the column exists", first.Message.Metadata)
	}
	if !first.Message.CreatedAt.Equal(testCommitTime) {
		t.Errorf("first row CreatedAt = %v, want the commit time %v", first.Message.CreatedAt, testCommitTime)
	}

	// ALTER TABLE ... ADD COLUMN metadata, created_at; the new Relation
	// message also lists the columns in another order.
	mustDecode(t, d, relationFrame(outboxOID, "public", "outbox_messages",
		testColumn{"payload", oidJSONB},
		testColumn{"event_type", oidVarchar},
		testColumn{"id", oidUUID},
		testColumn{"created_at", oidTimestampTZ},
		testColumn{"aggregate_id", oidVarchar},
		testColumn{"metadata", oidJSONB},
		testColumn{"aggregate_type", oidVarchar},
	))
	second := mustDecode(t, d, insertFrame(outboxOID,
		text(`{"v":2}`), text("shipped"), text("id-2"), text("2026-01-02 03:04:05+00"),
		text("o-2"), text(`{"headers":{"x":"y"}}`), text("order")))

	m := second.Message
	if m.ID != "id-2" {
		t.Errorf("ID = %q, want id-2", m.ID)
	}
	if m.AggregateType != "order" {
		t.Errorf("AggregateType = %q, want order", m.AggregateType)
	}
	if m.AggregateID != "o-2" {
		t.Errorf("AggregateID = %q, want o-2", m.AggregateID)
	}
	if m.EventType != "shipped" {
		t.Errorf("EventType = %q, want shipped", m.EventType)
	}
	if string(m.Payload) != `{"v":2}` {
		t.Errorf("Payload = %s, want {\"v\":2}", m.Payload)
	}
	if string(m.Metadata) != `{"headers":{"x":"y"}}` {
		t.Errorf("Metadata = %s", m.Metadata)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !m.CreatedAt.Equal(want) {
		t.Errorf("CreatedAt = %v, want %v", m.CreatedAt, want)
	}

	// A row in the old five-column layout no longer matches the relation.
	_, err := d.Decode(0x600, insertFrame(outboxOID,
		text("id-3"), text("order"), text("o-3"), text("created"), text(`{}`)))
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("old-layout insert error = %v, want ErrMalformed", err)
	}
}

func TestDebeziumColumns(t *testing.T) {
	d := New(Config{Schema: "inventory", Table: "outboxevent", Columns: DebeziumColumns()})
	mustDecode(t, d, relationFrame(7000, "inventory", "outboxevent",
		testColumn{"id", oidUUID},
		testColumn{"aggregatetype", oidVarchar},
		testColumn{"aggregateid", oidVarchar},
		testColumn{"type", oidVarchar},
		testColumn{"timestamp", oidTimestampTZ},
		testColumn{"payload", oidJSONB},
		// Columns named like the Event-Forge optional ones must be ignored.
		testColumn{"metadata", oidText},
		testColumn{"created_at", oidText},
	))
	mustDecode(t, d, beginFrame(0x500, testCommitTime, 9))

	ev := mustDecode(t, d, insertFrame(7000,
		text(testID), text("Order"), text("123"), text("OrderCreated"),
		text("2026-12-04 20:13:58+00"), text(`{"id":123}`), text("not json"), text("not a time")))

	m := ev.Message
	if m.ID != testID || m.AggregateType != "Order" || m.AggregateID != "123" || m.EventType != "OrderCreated" {
		t.Errorf("message = %+v, want the Debezium row's id, aggregatetype, aggregateid and type", m)
	}
	if string(m.Payload) != `{"id":123}` {
		t.Errorf("Payload = %s", m.Payload)
	}
	if m.Metadata != nil {
		t.Errorf("Metadata = %s, want nil because Debezium has no metadata column", m.Metadata)
	}
	if !m.CreatedAt.Equal(testCommitTime) {
		t.Errorf("CreatedAt = %v, want the commit time %v", m.CreatedAt, testCommitTime)
	}
}

func TestNullMetadata(t *testing.T) {
	d := newTestDecoder(t)

	ev := mustDecode(t, d, insertFrame(outboxOID, eventForgeRow(text(testID), text(`{}`), null, null)...))

	if ev.Message.Metadata != nil {
		t.Errorf("Metadata = %q, want nil for NULL", ev.Message.Metadata)
	}
	if !ev.Message.CreatedAt.Equal(testCommitTime) {
		t.Errorf("CreatedAt = %v, want the commit time %v for NULL created_at", ev.Message.CreatedAt, testCommitTime)
	}
}

func TestScheduledAt(t *testing.T) {
	d := newTestDecoder(t)
	row := eventForgeRow(text(testID), text(`{}`), null, null)
	row[10] = text("2027-01-01 00:00:00.5+02")

	ev := mustDecode(t, d, insertFrame(outboxOID, row...))

	want := time.Date(2026, 12, 31, 22, 0, 0, 500000000, time.UTC)
	if !ev.Message.ScheduledAt.Equal(want) {
		t.Errorf("ScheduledAt = %v, want %v", ev.Message.ScheduledAt, want)
	}
}

func TestPayloadByteExact(t *testing.T) {
	big := `{"blob":"` + strings.Repeat("0123456789abcdef", 1<<16) + `"}`
	tests := []struct {
		name    string
		payload string
	}{
		{"unicode", `{"name": "Zoë 🐘 日本語", "escaped": "\u00e9\n", "n": 1.50}`},
		{"whitespace kept", "{ \"a\" :\t[1, 2 ,3]\n}"},
		{"one megabyte", big},
		{"scalar", `"just a string"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDecoder(t)

			ev := mustDecode(t, d, insertFrame(outboxOID, eventForgeRow(text(testID), text(tc.payload), null, null)...))

			if !bytes.Equal(ev.Message.Payload, []byte(tc.payload)) {
				t.Errorf("Payload differs: got %d bytes, want %d", len(ev.Message.Payload), len(tc.payload))
			}
		})
	}
}

func TestBinaryColumnTakenAsText(t *testing.T) {
	d := newTestDecoder(t)
	row := eventForgeRow(text(testID), tupleColumn{kind: 'b', value: `{"b":true}`}, null, null)

	ev := mustDecode(t, d, insertFrame(outboxOID, row...))

	if string(ev.Message.Payload) != `{"b":true}` {
		t.Errorf("Payload = %s, want the binary column's bytes", ev.Message.Payload)
	}
}

func TestSkippedMessages(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
	}{
		{"update", newFrame('U').u32(outboxOID).u8('N').u16(0).bytes()},
		{"delete", newFrame('D').u32(outboxOID).u8('K').bytes()},
		{"truncate", newFrame('T').u32(1).u8(0).u32(outboxOID).bytes()},
		{"type", newFrame('Y').u32(90000).cstring("public").cstring("mood").bytes()},
		{"origin", newFrame('O').u64(5).cstring("node_a").bytes()},
		{"unknown type byte", []byte{'Z', 1, 2, 3}},
		{"stream start of protocol 2", newFrame('S').u32(1).u8(1).bytes()},
		{"insert into another table", insertFrame(9999, text("1"), text("hello"))},
		{"message with another prefix", messageFrame(true, 0x900, "audit", `{"not":"ours"}`)},
		{"message with another prefix, not JSON", messageFrame(false, 0x900, "other", "\x00\x01binary")},
		{"message with a longer prefix", messageFrame(true, 0x900, "walrelay2", `{}`)},
		{"relation", relationFrame(12345, "public", "customers", testColumn{"id", oidInt4})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDecoder(t)
			mustDecode(t, d, relationFrame(9999, "public", "customers",
				testColumn{"id", oidInt4}, testColumn{"name", oidText}))

			ev, err := d.Decode(0x800, tc.frame)

			if err != nil {
				t.Fatalf("decode: %v, want the message skipped", err)
			}
			if ev.Kind != KindNone {
				t.Errorf("kind = %v, want none", ev.Kind)
			}
		})
	}
}

func TestOutboxNameInOtherSchemaSkipped(t *testing.T) {
	d := New(Config{})
	mustDecode(t, d, relationFrame(555, "archive", "outbox_messages", eventForgeColumns...))
	mustDecode(t, d, beginFrame(1, testCommitTime, 1))

	ev, err := d.Decode(2, insertFrame(555, eventForgeRow(text(testID), text(`{}`), null, null)...))

	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if ev.Kind != KindNone {
		t.Errorf("kind = %v, want none for archive.outbox_messages", ev.Kind)
	}
}

func TestInsertUnannouncedRelation(t *testing.T) {
	d := New(Config{})
	mustDecode(t, d, beginFrame(1, testCommitTime, 1))

	_, err := d.Decode(0x10, insertFrame(outboxOID, eventForgeRow(text(testID), text(`{}`), null, null)...))

	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("error = %v, want ErrMalformed", err)
	}
	if !strings.Contains(err.Error(), "not announced") {
		t.Errorf("error = %q, want it to say the relation was not announced", err)
	}
}

func TestResetForgetsRelations(t *testing.T) {
	d := newTestDecoder(t)

	d.Reset()
	mustDecode(t, d, beginFrame(1, testCommitTime, 1))
	_, err := d.Decode(0x10, insertFrame(outboxOID, eventForgeRow(text(testID), text(`{}`), null, null)...))

	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error = %v, want ErrMalformed after Reset", err)
	}
}

func TestResetClosesTransaction(t *testing.T) {
	d := newTestDecoder(t)

	d.Reset()
	_, err := d.Decode(0x10, beginFrame(2, testCommitTime, 2))

	if err != nil {
		t.Errorf("Begin after Reset: %v, want no open transaction", err)
	}
}

func TestProtocolOrderErrors(t *testing.T) {
	tests := []struct {
		name   string
		frames [][]byte // all but the last must decode
	}{
		{"commit without begin", [][]byte{
			commitFrame(1, 2, testCommitTime),
		}},
		{"begin inside transaction", [][]byte{
			beginFrame(1, testCommitTime, 1),
			beginFrame(2, testCommitTime, 2),
		}},
		{"insert outside transaction", [][]byte{
			relationFrame(outboxOID, "public", "outbox_messages", eventForgeColumns...),
			insertFrame(outboxOID, eventForgeRow(text(testID), text(`{}`), null, null)...),
		}},
		{"transactional message outside transaction", [][]byte{
			messageFrame(true, 0x900, "walrelay", `{"aggregateType":"a","aggregateId":"1","eventType":"e","payload":{}}`),
		}},
		{"insert column count differs from relation", [][]byte{
			relationFrame(outboxOID, "public", "outbox_messages", eventForgeColumns...),
			beginFrame(1, testCommitTime, 1),
			insertFrame(outboxOID, text(testID)),
		}},
		{"insert without new tuple marker", [][]byte{
			newFrame('I').u32(outboxOID).u8('K').u16(0).bytes(),
		}},
		{"unknown tuple column kind", [][]byte{
			newFrame('I').u32(outboxOID).u8('N').u16(1).u8('x').bytes(),
		}},
		{"negative value length", [][]byte{
			newFrame('I').u32(outboxOID).u8('N').u16(1).u8('t').u32(0xFFFFFFFF).bytes(),
		}},
		{"negative message content length", [][]byte{
			newFrame('M').u8(0).u64(1).cstring("walrelay").u32(0x80000000).bytes(),
		}},
		{"begin with trailing bytes", [][]byte{
			append(beginFrame(1, testCommitTime, 1), 0),
		}},
		{"relation with trailing bytes", [][]byte{
			append(relationFrame(1, "public", "t", testColumn{"id", oidInt4}), 'x'),
		}},
		{"relation with huge column count", [][]byte{
			newFrame('R').u32(1).cstring("public").cstring("t").u8('d').u16(0xFFFF).bytes(),
		}},
		{"empty message", [][]byte{
			{},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := New(Config{})
			last := len(tc.frames) - 1
			for _, f := range tc.frames[:last] {
				mustDecode(t, d, f)
			}

			ev, err := d.Decode(0x10, tc.frames[last])

			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error = %v, want ErrMalformed", err)
			}
			if ev.Kind != KindNone {
				t.Errorf("kind = %v, want none with an error", ev.Kind)
			}
		})
	}
}

// validFrames returns one valid frame of each decoded type, each to be fed to
// a decoder from newTestDecoder (in a transaction, outbox relation known).
func validFrames() map[string][]byte {
	return map[string][]byte{
		"begin":           beginFrame(0x16B3748, testCommitTime, 777),
		"commit":          commitFrame(0x16B3748, 0x16B3780, testCommitTime),
		"relation":        relationFrame(outboxOID, "public", "outbox_messages", eventForgeColumns...),
		"insert":          insertFrame(outboxOID, eventForgeRow(text(testID), text(`{"a":"é"}`), text(`{}`), text("2026-12-04 20:13:58.1+00"))...),
		"insert other":    insertFrame(4242, text("1"), null, unchanged, tupleColumn{kind: 'b', value: "\x00\x01"}),
		"message":         messageFrame(true, 0x16B3720, "walrelay", `{"id":"m1","aggregateType":"a","aggregateId":"1","eventType":"e","payload":{"x":1}}`),
		"message untx":    messageFrame(false, 0x16B3720, "walrelay", `{"aggregateType":"a","aggregateId":2,"eventType":"e","payload":[]}`),
		"message other":   messageFrame(true, 0x16B3720, "other", "anything"),
		"message empty":   messageFrame(false, 0x16B3720, "other", ""),
		"relation no col": relationFrame(4343, "", "pg_thing"),
	}
}

func TestTruncatedFrames(t *testing.T) {
	for name, frame := range validFrames() {
		t.Run(name, func(t *testing.T) {
			d := newTestDecoder(t)
			mustDecode(t, d, relationFrame(4242, "public", "other",
				testColumn{"a", oidInt4}, testColumn{"b", oidText}, testColumn{"c", oidText}, testColumn{"d", oidText}))
			if name == "begin" {
				mustDecode(t, d, commitFrame(0x16B3748, 0x16B3780, testCommitTime))
			}

			for n := range len(frame) {
				ev, err := d.Decode(0x10, frame[:n])
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d of %d bytes: error = %v, want ErrMalformed", n, len(frame), err)
				}
				if ev.Kind != KindNone {
					t.Fatalf("prefix of %d bytes: kind = %v, want none with an error", n, ev.Kind)
				}
			}

			// No truncated frame changed the state, so the whole one decodes.
			if _, err := d.Decode(0x10, frame); err != nil {
				t.Errorf("whole frame after its prefixes: %v", err)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for kind, want := range map[Kind]string{KindNone: "none", KindBegin: "begin", KindCommit: "commit", KindMessage: "message", 9: "kind(9)"} {
		if got := kind.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(kind), got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	if err := (Config{Columns: DebeziumColumns()}).Validate(); err != nil {
		t.Errorf("Debezium Config: %v", err)
	}

	err := Config{Columns: Columns{Payload: NoColumn}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Payload") {
		t.Errorf("Payload set to NoColumn: error = %v, want one naming Payload", err)
	}
}

func TestCustomConfig(t *testing.T) {
	d := New(Config{
		Schema: "app",
		Table:  "events",
		Columns: Columns{
			ID:          "event_id",
			Payload:     "body",
			Metadata:    NoColumn,
			CreatedAt:   "occurred_at",
			ScheduledAt: NoColumn,
		},
	})
	mustDecode(t, d, relationFrame(1, "app", "events",
		testColumn{"event_id", oidText},
		testColumn{"aggregate_type", oidText},
		testColumn{"aggregate_id", oidText},
		testColumn{"event_type", oidText},
		testColumn{"body", oidJSON},
		testColumn{"occurred_at", oidTimestamp},
		testColumn{"metadata", oidJSON},
	))
	mustDecode(t, d, beginFrame(1, testCommitTime, 1))

	ev := mustDecode(t, d, insertFrame(1,
		text("e1"), text("a"), text("1"), text("t"), text(`[1]`), text("2020-02-29 12:00:00"), text(`{"ignored":true}`)))

	if ev.Message.ID != "e1" || string(ev.Message.Payload) != "[1]" {
		t.Errorf("message = %+v, want id e1 and payload [1]", ev.Message)
	}
	if ev.Message.Metadata != nil {
		t.Errorf("Metadata = %s, want nil for a disabled column", ev.Message.Metadata)
	}
	if want := time.Date(2020, 2, 29, 12, 0, 0, 0, time.UTC); !ev.Message.CreatedAt.Equal(want) {
		t.Errorf("CreatedAt = %v, want %v", ev.Message.CreatedAt, want)
	}
}

func TestDecodeErrorLeavesEventZero(t *testing.T) {
	d := newTestDecoder(t)

	ev, err := d.Decode(0x10, insertFrame(outboxOID, eventForgeRow(text(testID), text(`{`), null, null)...))

	if err == nil {
		t.Fatal("no error for invalid JSON")
	}
	if ev.Kind != KindNone || ev.LSN != pglogrepl.LSN(0) || ev.Message.ID != "" {
		t.Errorf("event = %+v, want the zero Event", ev)
	}
}
