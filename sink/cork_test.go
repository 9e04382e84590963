package sink

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// recordingConn records each Write as one entry.
type recordingConn struct {
	net.Conn
	writes []string
	fail   error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func TestCorkConnBatchesWrites(t *testing.T) {
	rec := &recordingConn{}
	c := &corkConn{Conn: rec}

	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	c.Cork()
	for _, s := range []string{"b", "c", "d"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != 1 {
		t.Fatalf("writes while corked reached the socket: %q", rec.writes)
	}

	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}

	want := []string{"a", "bcd", "e"}
	if strings.Join(rec.writes, "|") != strings.Join(want, "|") {
		t.Errorf("socket writes = %q, want %q", rec.writes, want)
	}
}

func TestCorkConnFlushesAtLimit(t *testing.T) {
	rec := &recordingConn{}
	c := &corkConn{Conn: rec}
	c.Cork()

	chunk := strings.Repeat("x", corkLimit/2)
	for range 3 {
		if _, err := c.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != 1 || len(rec.writes[0]) != corkLimit {
		t.Fatalf("after %d corked bytes the socket saw %d writes, want one of %d bytes", 3*len(chunk), len(rec.writes), corkLimit)
	}

	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || len(rec.writes[1]) != len(chunk) {
		t.Errorf("Uncork wrote %d chunks, want the remaining %d bytes in one", len(rec.writes), len(chunk))
	}
}

func TestCorkConnKeepsFirstError(t *testing.T) {
	broken := errors.New("connection reset")
	rec := &recordingConn{fail: broken}
	c := &corkConn{Conn: rec}

	c.Cork()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatalf("corked write failed early: %v", err)
	}
	if err := c.Uncork(); !errors.Is(err, broken) {
		t.Fatalf("Uncork = %v, want %v", err, broken)
	}
	if _, err := c.Write([]byte("b")); !errors.Is(err, broken) {
		t.Errorf("write after a failed flush = %v, want %v", err, broken)
	}
}
