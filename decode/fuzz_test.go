package decode

import (
	"errors"
	"testing"
	"time"
)

// FuzzDecode checks that no input panics and that every error is either
// ErrMalformed or a *RowError and comes with the zero Event. The decoder has
// the outbox relation and an open transaction, so inserts reach the mapping.
func FuzzDecode(f *testing.F) {
	for _, frame := range validFrames() {
		f.Add(frame)
	}
	f.Add(insertFrame(outboxOID, eventForgeRow(text(testID), text(`{"a":`), null, text("infinity"))...))
	f.Add(messageFrame(true, 1, "walrelay", `{"aggregateType":1}`))
	f.Add([]byte{})
	f.Add([]byte{'Z'})

	f.Fuzz(func(t *testing.T, frame []byte) {
		d := newTestDecoder(t)

		ev, err := d.Decode(0x10, frame)

		if err == nil {
			return
		}
		var rowErr *RowError
		if !errors.Is(err, ErrMalformed) && !errors.As(err, &rowErr) {
			t.Errorf("error %v is neither ErrMalformed nor a *RowError", err)
		}
		if ev.Kind != KindNone {
			t.Errorf("kind = %v with error %v, want none", ev.Kind, err)
		}
	})
}

// FuzzParseTimestamp checks that no text panics the hand-written timestamp
// parser and that every accepted value is in UTC.
func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{
		"2026-12-04 20:13:58.123456+00",
		"2026-12-04 20:13:58",
		"1883-11-18 12:00:00-07:52:58",
		"0044-03-15 12:00:00+00 BC",
		"infinity",
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTimestamp([]byte(s))
		if err == nil && got.Location() != time.UTC {
			t.Errorf("parseTimestamp(%q) location = %v, want UTC", s, got.Location())
		}
	})
}
