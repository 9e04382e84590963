package sink

import (
	"net"
	"sync"
)

// corkLimit is the most bytes a corked connection buffers before it writes
// them out anyway.
const corkLimit = 64 << 10

// corkConn is the broker socket. While corked it collects writes in memory
// and sends them with one write at Uncork, so a burst of publishes costs
// one system call instead of one each. amqp091 flushes its own buffer after
// every publish, which is what this undoes. Uncorked, writes pass through.
// Every write goes through mu, so bytes leave in the order amqp091 wrote
// them, heartbeats included.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte
	err    error // the first failed write; later writes return it
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}

	c.buf = append(c.buf, p...)
	if len(c.buf) >= corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Cork starts collecting writes.
func (c *corkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was collected and lets writes pass through again.
func (c *corkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 || c.err != nil {
		return c.err
	}

	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}
