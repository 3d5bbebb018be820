package websocket

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	xws "golang.org/x/net/websocket"
)

// frames carries WebSocket messages over an upgraded connection: Read
// returns the payload of the data frames received as one byte stream, and
// WriteMessage sends p as one binary message.
type frames interface {
	Read(p []byte) (int, error)
	WriteMessage(p []byte) error
	// Close sends a close frame (bounded by closeFrameTimeout) and closes
	// the connection.
	Close() error
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// xnetFrames is golang.org/x/net/websocket's own framing.
type xnetFrames struct {
	*xws.Conn
	raw net.Conn // on the server side, the connection under ws's handed-off wrapper; nil on the client side
}

// newXNetFrames returns x/net's framing of ws, in binary messages. raw, if
// not nil, is closed after ws (ws's own connection ignores Close once
// handed off, see handoffConn).
func newXNetFrames(ws *xws.Conn, raw net.Conn) xnetFrames {
	ws.PayloadType = xws.BinaryFrame
	return xnetFrames{Conn: ws, raw: raw}
}

func (f xnetFrames) WriteMessage(p []byte) error {
	_, err := f.Conn.Write(p)
	return err
}

func (f xnetFrames) Close() error {
	_ = f.Conn.SetWriteDeadline(time.Now().Add(closeFrameTimeout))
	err := f.Conn.Close()
	if f.raw != nil {
		return f.raw.Close()
	}
	return err
}

// WebSocket opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// maxControl is the largest payload of a control frame (RFC 6455, 5.5).
const maxControl = 125

// ErrProtocol is returned by Read for a frame that breaks RFC 6455 (reserved
// bits or opcodes, an unmasked frame from a client, a control frame over 125
// bytes…); the connection is closed with status 1002.
var ErrProtocol = errors.New("websocket: protocol error")

// leanFrames reads and writes RFC 6455 frames itself: no allocation per
// message, masking 8 bytes at a time, one write per message, and no read
// buffer held between messages (readbuf.go). The wire is the same as
// golang.org/x/net/websocket's.
type leanFrames struct {
	conn net.Conn
	side side // a client masks what it sends; a server requires masked input

	// Read state: Read is called from one goroutine at a time.
	remain int64   // payload bytes left in the current data frame
	key    [4]byte // its masking key, rotated to the next byte
	masked bool
	fin    bool // the current data frame ends its message
	inMsg  bool // a data message has begun and its final frame not come

	// Received bytes are read through buf, a buffer borrowed from readBufs
	// only while it holds bytes not read yet (or, on a connection without
	// rc, while a read waits): an idle connection holds none (readbuf.go).
	buf     *[readBufSize]byte
	r, w    int             // buf[r:w] is buffered
	pending []byte          // bytes that came with the handshake, read before conn
	rerr    error           // an error that came with the last bytes read, for the next fill
	rc      syscall.RawConn // conn's, when it is plain TCP: a read waits for bytes with no buffer held; nil otherwise
	first   *[16]byte       // with TLS: where a read waits while no buffer is held (crypto/tls has the rest of the record already)
	onRead  func(fd uintptr) bool
	rn      int   // onRead's result
	rsysErr error // onRead's error

	pongWrite time.Duration // ListenerConfig.PongWriteTimeout; 0 on the client side

	pongs    atomic.Uint64 // pong frames received
	lastRead atomic.Int64  // when a frame last arrived (Unix nanoseconds)

	wmu       sync.Mutex
	rng       *mrand.ChaCha8 // masking keys (a client's), under wmu
	closeSent atomic.Bool
}

// side is which end of a WebSocket connection a framing serves.
type side bool

const (
	serverSide side = false
	clientSide side = true
)

// newLeanFrames reads pending (bytes already received on conn), then conn.
func newLeanFrames(conn net.Conn, pending []byte, s side) *leanFrames {
	f := &leanFrames{conn: conn, side: s}
	if len(pending) > 0 {
		f.pending = pending
	}
	f.rc = rawConnOf(conn)
	if f.rc != nil {
		f.onRead = f.readReady
	} else if _, ok := conn.(*tls.Conn); ok {
		f.first = new([16]byte)
	}
	f.lastRead.Store(time.Now().UnixNano())
	if s == clientSide {
		var seed [32]byte
		_, _ = rand.Read(seed[:])
		f.rng = mrand.NewChaCha8(seed)
	}
	return f
}

func (f *leanFrames) Read(p []byte) (int, error) {
	defer f.release()
	for f.remain == 0 {
		if err := f.nextFrame(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > f.remain {
		p = p[:f.remain]
	}
	n, err := f.readSome(p)
	if f.masked {
		f.key = maskBytes(f.key, p[:n])
	}
	f.remain -= int64(n)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// nextFrame reads frame headers until one starts data, answering pings and
// close frames on the way. A close frame ends the stream with io.EOF.
func (f *leanFrames) nextFrame() error {
	var hdr [10]byte
	h := hdr[:]
	if err := f.readFull(h[:2]); err != nil {
		return err
	}
	fin, rsv, op := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0f
	masked, n := h[1]&0x80 != 0, int64(h[1]&0x7f)
	if rsv != 0 {
		return f.fail(fmt.Errorf("%w: reserved bits set", ErrProtocol))
	}
	if masked == (f.side == clientSide) {
		return f.fail(fmt.Errorf("%w: masked frame from the server or unmasked frame from a client", ErrProtocol))
	}
	switch n {
	case 126:
		if err := f.readFull(h[2:4]); err != nil {
			return err
		}
		n = int64(binary.BigEndian.Uint16(h[2:4]))
		if n < 126 {
			return f.fail(fmt.Errorf("%w: 16-bit length %d (not minimal)", ErrProtocol, n))
		}
	case 127:
		if err := f.readFull(h[2:10]); err != nil {
			return err
		}
		u := binary.BigEndian.Uint64(h[2:10])
		if u>>63 != 0 {
			return f.fail(fmt.Errorf("%w: 64-bit length with its top bit set", ErrProtocol))
		}
		n = int64(u)
		if n < 1<<16 {
			return f.fail(fmt.Errorf("%w: 64-bit length %d (not minimal)", ErrProtocol, n))
		}
	}
	f.masked = masked
	if masked {
		if err := f.readFull(f.key[:]); err != nil {
			return err
		}
	}
	f.lastRead.Store(time.Now().UnixNano())
	switch op {
	case opContinuation, opText, opBinary:
		// RFC 6455 5.4: a continuation continues a message, and no other
		// message begins before the final frame of one.
		if (op == opContinuation) != f.inMsg {
			if op == opContinuation {
				return f.fail(fmt.Errorf("%w: continuation frame outside a message", ErrProtocol))
			}
			return f.fail(fmt.Errorf("%w: a new message inside a fragmented one", ErrProtocol))
		}
		f.remain, f.fin, f.inMsg = n, fin, !fin
		return nil
	case opClose, opPing, opPong:
	default:
		return f.fail(fmt.Errorf("%w: reserved opcode %#x", ErrProtocol, op))
	}
	if !fin || n > maxControl {
		return f.fail(fmt.Errorf("%w: fragmented or over-long control frame", ErrProtocol))
	}
	var ctl [maxControl]byte
	body := ctl[:n]
	if err := f.readFull(body); err != nil {
		return err
	}
	if masked {
		maskBytes(f.key, body)
	}
	switch op {
	case opPong:
		f.pongs.Add(1)
	case opPing:
		if err := f.pong(body); err != nil {
			return err
		}
	case opClose:
		if err := checkClose(body); err != nil {
			return f.fail(err)
		}
		// Echo the status code, as RFC 6455 asks, then end the stream.
		if len(body) >= 2 {
			body = body[:2]
		}
		f.sendClose(body)
		return io.EOF
	}
	return nil
}

// pong answers a ping, within pongWrite if it is set (see
// ListenerConfig.PongWriteTimeout).
func (f *leanFrames) pong(body []byte) error {
	if f.pongWrite > 0 {
		f.wmu.Lock()
		_ = f.conn.SetWriteDeadline(time.Now().Add(f.pongWrite))
		f.wmu.Unlock()
	}
	return f.write(opPong, body)
}

// checkClose checks a close frame's body (RFC 6455 5.5.1 and 7.4): empty,
// or a status code that may be sent, then a UTF-8 reason.
func checkClose(body []byte) error {
	if len(body) == 0 {
		return nil
	}
	if len(body) == 1 {
		return fmt.Errorf("%w: close frame of 1 byte", ErrProtocol)
	}
	code := binary.BigEndian.Uint16(body)
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
	default:
		return fmt.Errorf("%w: close status %d may not be sent", ErrProtocol, code)
	}
	if !utf8.Valid(body[2:]) {
		return fmt.Errorf("%w: close reason is not UTF-8", ErrProtocol)
	}
	return nil
}

// fail answers a protocol error with close status 1002 and returns err.
func (f *leanFrames) fail(err error) error {
	f.sendClose([]byte{0x03, 0xea})
	return err
}

// sendClose sends a close frame once, bounded by closeFrameTimeout.
func (f *leanFrames) sendClose(body []byte) {
	if f.closeSent.Swap(true) {
		return
	}
	_ = f.conn.SetWriteDeadline(time.Now().Add(closeFrameTimeout))
	_ = f.write(opClose, body)
}

func (f *leanFrames) WriteMessage(p []byte) error { return f.write(opBinary, p) }

// messageDone reports whether the last data byte read ended a message.
func (f *leanFrames) messageDone() bool { return f.remain == 0 && f.fin }

// write sends one frame with a single write.
func (f *leanFrames) write(op byte, p []byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	bp := writeBufs.Get().(*[]byte)
	b := append((*bp)[:0], 0x80|op, 0)
	switch n := len(p); {
	case n <= 125:
		b[1] = byte(n)
	case n < 1<<16:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if f.side == clientSide {
		b[1] |= 0x80
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], uint32(f.rng.Uint64()))
		b = append(b, key[:]...)
		start := len(b)
		b = append(b, p...)
		maskBytes(key, b[start:])
	} else {
		b = append(b, p...)
	}
	_, err := f.conn.Write(b)
	putWriteBuf(bp, b)
	return err
}

// writeBufs holds the write buffers of the lean framing and of Conn's
// gathering: borrowed for one message, so that an idle connection holds
// none.
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

// putWriteBuf gives b, borrowed as bp, back to writeBufs, unless it grew
// over keepPending.
func putWriteBuf(bp *[]byte, b []byte) {
	if cap(b) <= keepPending {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
}

func (f *leanFrames) Close() error {
	f.sendClose([]byte{0x03, 0xe8}) // 1000, normal closure
	return f.conn.Close()
}

func (f *leanFrames) SetDeadline(t time.Time) error      { return f.conn.SetDeadline(t) }
func (f *leanFrames) SetReadDeadline(t time.Time) error  { return f.conn.SetReadDeadline(t) }
func (f *leanFrames) SetWriteDeadline(t time.Time) error { return f.conn.SetWriteDeadline(t) }

// maskBytes XORs b with the masking key, 8 bytes at a time, and returns the
// key rotated so that it continues where b ended.
func maskBytes(key [4]byte, b []byte) [4]byte {
	k := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k) | uint64(k)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[0]
		key = [4]byte{key[1], key[2], key[3], key[0]}
	}
	return key
}
