package websocket

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// maxCoalesce is the largest length-prefixed frame that Conn gathers into one
// WebSocket message. Larger frames, and writes that do not start with a
// plausible length prefix, go out as they are written.
const maxCoalesce = 64 << 20

// keepPending is the largest write or gather buffer given back to writeBufs
// after a message; a larger one is dropped after use.
const keepPending = 64 << 10

// Conn is a WebSocket connection seen as a byte stream: binary messages in,
// binary messages out. Reads return the payload of consecutive messages as
// one stream.
//
// Writes are gathered per Thrift frame, unless the connection is a stream
// (DialerConfig.Stream, ListenerConfig.Stream), where every write is one
// message: when a write starts with a 4-byte
// big-endian length (Thrift Framed and TTHeader both do), Conn holds the
// bytes until the whole frame is written and sends it as one binary message.
// Kitex writes a large reply in several chunks; without this a browser or
// script client would receive one reply as several messages.
type Conn struct {
	f      frames
	h      *health // the client side's keep-alive (keepalive.go); nil on servers and streams
	stream bool    // every Write is one message (DialerConfig.Stream, ListenerConfig.Stream)
	local  net.Addr
	remote net.Addr

	wmu     sync.Mutex
	pending []byte  // a frame being gathered, in a buffer borrowed from writeBufs as box
	box     *[]byte // pending's buffer while it is borrowed
	need    int

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

var _ net.Conn = (*Conn)(nil)

func newConn(f frames, local, remote net.Addr) *Conn {
	return &Conn{f: f, local: local, remote: remote, done: make(chan struct{})}
}

// Read reads message payload bytes. It returns io.EOF after the peer closed
// the WebSocket.
func (c *Conn) Read(p []byte) (int, error) {
	if c.h == nil {
		return c.f.Read(p)
	}
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	n, err := c.f.Read(p)
	c.h.endRead()
	return n, err
}

// IsActive reports whether the connection may carry a call: it is not
// closed and, on the client side, not retired (MaxConnectionAge), not
// silent to a ping, and its peer has not closed it. Kitex's connection
// pool asks it before it reuses a connection.
func (c *Conn) IsActive() bool {
	select {
	case <-c.done:
		return false
	default:
	}
	return c.h == nil || c.h.active()
}

// Write writes p; see the type's documentation for how writes become messages.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.stream {
		if err := c.f.WriteMessage(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.h != nil && len(c.pending) == 0 && !c.h.inCall.Load() {
		if err := c.h.startCall(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) == 0 {
		need, ok := frameSize(p)
		if !ok || len(p) >= need {
			if err := c.f.WriteMessage(p); err != nil {
				return 0, err
			}
			return len(p), nil
		}
		c.box = writeBufs.Get().(*[]byte)
		c.pending = append((*c.box)[:0], p...)
		c.need = need
		return len(p), nil
	}
	c.pending = append(c.pending, p...)
	if len(c.pending) < c.need {
		return len(p), nil
	}
	err := c.f.WriteMessage(c.pending)
	putWriteBuf(c.box, c.pending)
	c.pending, c.box = nil, nil
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// frameSize returns the size of the length-prefixed frame that p starts, if
// p plausibly starts one.
func frameSize(p []byte) (int, bool) {
	if len(p) < 4 {
		return 0, false
	}
	n := binary.BigEndian.Uint32(p)
	if n > maxCoalesce {
		return 0, false
	}
	return int(n) + 4, true
}

// closeFrameTimeout bounds the sending of the close frame: a peer that
// stopped reading must not keep Close (and the write it waits behind) stuck.
const closeFrameTimeout = time.Second

// Close sends a WebSocket close frame (waiting at most a second for it to
// go out) and closes the connection. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if c.h != nil {
			c.h.stop()
		}
		c.closeErr = c.f.Close()
		close(c.done)
	})
	return c.closeErr
}

// LocalAddr returns the local TCP address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's TCP address (never the Origin, never nil).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines of the underlying connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.f.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the underlying connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }
