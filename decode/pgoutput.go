package decode

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// reader reads big-endian protocol fields from one message. buf[0] is the
// message type byte. The first failed read records err, and every later read
// returns a zero value. A parser may therefore read a whole frame and check
// err once, unless a loop or an allocation depends on a value read.
type reader struct {
	buf []byte
	off int
	err error
}

// need reports whether n more bytes can be read, and records a truncation
// error naming field when they cannot.
func (r *reader) need(n int, field string) bool {
	if r.err != nil {
		return false
	}
	if n > len(r.buf)-r.off {
		r.err = fmt.Errorf("%w: %s message truncated: %s needs %d bytes at offset %d but %d remain",
			ErrMalformed, messageName(r.buf[0]), field, n, r.off, len(r.buf)-r.off)
		return false
	}
	return true
}

func (r *reader) fail(format string, args ...any) {
	if r.err != nil {
		return
	}
	r.err = fmt.Errorf("%w: %s message: %s", ErrMalformed, messageName(r.buf[0]), fmt.Sprintf(format, args...))
}

func (r *reader) uint8(field string) byte {
	if !r.need(1, field) {
		return 0
	}
	v := r.buf[r.off]
	r.off++
	return v
}

func (r *reader) uint16(field string) uint16 {
	if !r.need(2, field) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf[r.off:])
	r.off += 2
	return v
}

func (r *reader) uint32(field string) uint32 {
	if !r.need(4, field) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v
}

func (r *reader) uint64(field string) uint64 {
	if !r.need(8, field) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf[r.off:])
	r.off += 8
	return v
}

// length reads an Int32 byte count and fails on a negative one.
func (r *reader) length(field string) int {
	n := int32(r.uint32(field))
	if n < 0 {
		r.fail("%s is negative (%d) at offset %d", field, n, r.off-4)
		return 0
	}
	return int(n)
}

// bytes returns the next n bytes without copying them.
func (r *reader) bytes(n int, field string) []byte {
	if !r.need(n, field) {
		return nil
	}
	v := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// cstring returns a NUL-terminated string without its terminator and without
// copying it.
func (r *reader) cstring(field string) []byte {
	if r.err != nil {
		return nil
	}
	end := bytes.IndexByte(r.buf[r.off:], 0)
	if end < 0 {
		r.err = fmt.Errorf("%w: %s message truncated: %s at offset %d has no NUL terminator",
			ErrMalformed, messageName(r.buf[0]), field, r.off)
		return nil
	}
	v := r.buf[r.off : r.off+end : r.off+end]
	r.off += end + 1
	return v
}

// finish returns the first read error, or an error when bytes are left over,
// which means the frame is not the protocol version 1 layout.
func (r *reader) finish() error {
	if r.err != nil {
		return r.err
	}
	if r.off != len(r.buf) {
		return fmt.Errorf("%w: %s message has %d trailing bytes after offset %d; the server may be sending a protocol version other than 1",
			ErrMalformed, messageName(r.buf[0]), len(r.buf)-r.off, r.off)
	}
	return nil
}

func messageName(t byte) string {
	switch t {
	case 'B':
		return "Begin"
	case 'C':
		return "Commit"
	case 'R':
		return "Relation"
	case 'I':
		return "Insert"
	case 'M':
		return "logical decoding Message"
	default:
		return fmt.Sprintf("%q", t)
	}
}

// postgresEpoch is 2000-01-01 00:00:00 UTC in Unix seconds; pgoutput sends
// timestamps as microseconds since then.
const postgresEpoch = 946684800

func postgresTime(micros int64) time.Time {
	return time.Unix(postgresEpoch+micros/1e6, (micros%1e6)*1e3).UTC()
}

// decodeBegin parses Begin: Int64 final LSN, Int64 commit time, Int32 xid.
func (d *Decoder) decodeBegin(r *reader) (Event, error) {
	finalLSN := r.uint64("final LSN")
	commitTime := int64(r.uint64("commit time"))
	xid := r.uint32("xid")
	if err := r.finish(); err != nil {
		return Event{}, err
	}

	if d.inTransaction {
		return Event{}, fmt.Errorf("%w: Begin of transaction %d while transaction %d has no Commit yet",
			ErrMalformed, xid, d.xid)
	}

	d.inTransaction = true
	d.xid = xid
	d.commitTime = postgresTime(commitTime)

	return Event{
		Kind:       KindBegin,
		Xid:        xid,
		CommitLSN:  pglogrepl.LSN(finalLSN),
		CommitTime: d.commitTime,
	}, nil
}

// decodeCommit parses Commit: Int8 flags (unused), Int64 commit LSN, Int64
// end LSN, Int64 commit time.
func (d *Decoder) decodeCommit(r *reader) (Event, error) {
	r.uint8("flags")
	commitLSN := r.uint64("commit LSN")
	endLSN := r.uint64("end LSN")
	commitTime := int64(r.uint64("commit time"))
	if err := r.finish(); err != nil {
		return Event{}, err
	}

	if !d.inTransaction {
		return Event{}, fmt.Errorf("%w: Commit at LSN %s without a Begin", ErrMalformed, pglogrepl.LSN(commitLSN))
	}

	ev := Event{
		Kind:       KindCommit,
		Xid:        d.xid,
		CommitLSN:  pglogrepl.LSN(commitLSN),
		EndLSN:     pglogrepl.LSN(endLSN),
		CommitTime: postgresTime(commitTime),
	}

	d.inTransaction = false
	d.xid = 0
	d.commitTime = time.Time{}

	return ev, nil
}

// decodeRelation parses Relation: Int32 OID, String namespace, String name,
// Int8 replica identity, Int16 column count, then per column Int8 flags,
// String name, Int32 type OID, Int32 type modifier. It replaces the cached
// entry for the OID.
func (d *Decoder) decodeRelation(r *reader) error {
	rel := &relation{oid: r.uint32("relation OID")}
	namespace := r.cstring("namespace")
	name := r.cstring("relation name")
	rel.replicaIdentity = r.uint8("replica identity")
	count := int(r.uint16("column count"))

	// Each column takes at least 10 bytes, so a count larger than the rest of
	// the frame allows is rejected before it sizes an allocation.
	if r.err == nil && count > (len(r.buf)-r.off)/10 {
		r.need(count*10, "columns")
	}
	if r.err != nil {
		return r.err
	}

	rel.namespace = string(namespace)
	rel.name = string(name)
	rel.columns = make([]relationColumn, count)
	for i := range rel.columns {
		col := &rel.columns[i]
		col.flags = r.uint8("column flags")
		col.name = string(r.cstring("column name"))
		col.typeOID = r.uint32("column type OID")
		col.typeModifier = int32(r.uint32("column type modifier"))
	}
	if err := r.finish(); err != nil {
		return err
	}

	d.storeRelation(rel)
	return nil
}

// tupleValue is one column of a TupleData, as offsets into the frame so that
// reading a tuple allocates nothing.
type tupleValue struct {
	kind       byte // 'n' null, 'u' unchanged TOAST value, 't' text, 'b' binary
	start, end int
}

// readTuple parses TupleData: Int16 column count, then per column a kind byte
// and, for 't' and 'b', an Int32 length and the value. The result reuses
// d.values and is valid until the next call.
func (d *Decoder) readTuple(r *reader) []tupleValue {
	count := int(r.uint16("tuple column count"))
	values := d.values[:0]
	for i := 0; i < count && r.err == nil; i++ {
		kind := r.uint8("tuple column kind")
		switch kind {
		case 'n', 'u':
			values = append(values, tupleValue{kind: kind})
		case 't', 'b':
			n := r.length("tuple value length")
			start := r.off
			r.bytes(n, "tuple value")
			values = append(values, tupleValue{kind: kind, start: start, end: r.off})
		default:
			if r.err == nil {
				r.fail("unknown tuple column kind %q for column %d at offset %d", kind, i, r.off-1)
			}
		}
	}
	d.values = values
	return values
}

// decodeInsert parses Insert: Int32 relation OID, Byte1 'N', TupleData. An
// insert into a table other than the outbox table returns KindNone.
func (d *Decoder) decodeInsert(r *reader, walStart pglogrepl.LSN) (Event, error) {
	oid := r.uint32("relation OID")
	marker := r.uint8("new tuple marker")
	if r.err == nil && marker != 'N' {
		r.fail("expected new tuple marker 'N', got %q", marker)
	}
	values := d.readTuple(r)
	if err := r.finish(); err != nil {
		return Event{}, err
	}

	rel, ok := d.relations[oid]
	if !ok {
		return Event{}, fmt.Errorf("%w: Insert at LSN %s into relation OID %d, which was not announced by a Relation message on this connection; reconnect to get the relation again",
			ErrMalformed, walStart, oid)
	}
	if len(values) != len(rel.columns) {
		return Event{}, fmt.Errorf("%w: Insert at LSN %s into %s.%s has %d columns but its Relation message announced %d",
			ErrMalformed, walStart, rel.namespace, rel.name, len(values), len(rel.columns))
	}
	if !rel.outbox {
		return Event{}, nil
	}
	if !d.inTransaction {
		return Event{}, fmt.Errorf("%w: Insert at LSN %s into %s.%s outside a transaction",
			ErrMalformed, walStart, rel.namespace, rel.name)
	}

	msg, err := d.mapRow(rel, r.buf, values)
	if err != nil {
		var rowErr *RowError
		if errors.As(err, &rowErr) {
			rowErr.Raw = rawRow(rel, r.buf, values)
			rowErr.LSN = walStart
		}
		return Event{}, err
	}

	return Event{Kind: KindMessage, Message: msg, LSN: walStart, Transactional: true}, nil
}

// decodeMessage parses a logical decoding Message: Int8 flags (1 means
// transactional), Int64 LSN, String prefix, Int32 content length, content.
// A message with another prefix returns KindNone.
func (d *Decoder) decodeMessage(r *reader) (Event, error) {
	flags := r.uint8("flags")
	lsn := pglogrepl.LSN(r.uint64("message LSN"))
	prefix := r.cstring("prefix")
	n := r.length("content length")
	content := r.bytes(n, "content")
	if err := r.finish(); err != nil {
		return Event{}, err
	}

	if string(prefix) != d.prefix {
		return Event{}, nil
	}

	transactional := flags&1 != 0
	if transactional && !d.inTransaction {
		return Event{}, fmt.Errorf("%w: transactional logical decoding message at LSN %s outside a transaction",
			ErrMalformed, lsn)
	}

	msg, err := mapMessage(content, lsn)
	if err != nil {
		var rowErr *RowError
		if errors.As(err, &rowErr) {
			rowErr.Raw, _ = json.Marshal(string(content))
			rowErr.LSN = lsn
			rowErr.Standalone = !transactional
			rowErr.Logical = true
		}
		return Event{}, err
	}
	if transactional {
		msg.CreatedAt = d.commitTime
	}

	return Event{Kind: KindMessage, Message: msg, LSN: lsn, Transactional: transactional}, nil
}

// rawRow returns the row as a JSON object of column names to text values,
// with null for NULL and for a value the server did not send.
func rawRow(rel *relation, frame []byte, values []tupleValue) []byte {
	row := make(map[string]*string, len(values))
	for i, v := range values {
		if i >= len(rel.columns) {
			break
		}
		if v.kind == 't' || v.kind == 'b' {
			text := string(frame[v.start:v.end])
			row[rel.columns[i].name] = &text
		} else {
			row[rel.columns[i].name] = nil
		}
	}

	raw, err := json.Marshal(row)
	if err != nil {
		// Every value is a string, so only invalid UTF-8 gets here, and
		// json.Marshal replaces that instead of failing.
		return nil
	}
	return raw
}
