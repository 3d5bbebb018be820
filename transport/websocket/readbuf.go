package websocket

import (
	"io"
	"sync"
)

// readBufSize is the size of the lean framing's read buffers.
const readBufSize = 4096

// readBufs holds the lean framing's read buffers. A connection borrows one
// when bytes arrive and gives it back once it has read them all, so that a
// connection that waits for its next message holds no buffer: on plain TCP
// the wait happens before the buffer is borrowed (readwait_unix.go), with
// the same system calls as an ordinary read; on TLS the wait for a frame
// reads its first bytes into 16 bytes of the connection's own. Other
// connections hold a buffer while they wait.
var readBufs = sync.Pool{New: func() any { return new([readBufSize]byte) }}

// buffered returns how many received bytes have not been read yet.
func (f *leanFrames) buffered() int { return f.w - f.r + len(f.pending) }

// release gives the read buffer back once everything in it has been read.
func (f *leanFrames) release() {
	if f.buf != nil && f.r == f.w {
		readBufs.Put(f.buf)
		f.buf, f.r, f.w = nil, 0, 0
	}
}

// borrow makes sure a read buffer is held.
func (f *leanFrames) borrow() {
	if f.buf == nil {
		f.buf = readBufs.Get().(*[readBufSize]byte)
		f.r, f.w = 0, 0
	}
}

// fill adds at least one byte to the buffered ones (buf[r:w]), from pending
// first, then from the connection.
func (f *leanFrames) fill() error {
	if f.buf != nil {
		if f.r == f.w {
			f.r, f.w = 0, 0
		} else if f.w == len(f.buf) {
			f.w = copy(f.buf[:], f.buf[f.r:f.w])
			f.r = 0
		}
	}
	if len(f.pending) > 0 {
		f.borrow()
		n := copy(f.buf[f.w:], f.pending)
		f.w += n
		if f.pending = f.pending[n:]; len(f.pending) == 0 {
			f.pending = nil
		}
		return nil
	}
	if err := f.rerr; err != nil {
		f.rerr = nil
		f.release()
		return err
	}
	for range 100 { // as bufio: a reader that keeps returning nothing is broken
		var n int
		var err error
		switch {
		case f.rc != nil:
			n, err = f.readWait()
		case f.buf == nil && f.first != nil && f.remain == 0:
			// TLS, at a frame's start: wait with no buffer held. A read
			// returns at most what one record holds, and the next fills
			// take the rest of the record from crypto/tls's own buffer,
			// with no system call. Within a frame, a buffer is borrowed
			// and filled (a reader taking the payload in small pieces
			// would otherwise get 16 bytes a read).
			if n, err = f.conn.Read(f.first[:]); n > 0 {
				f.borrow()
				copy(f.buf[:], f.first[:n])
			}
		default:
			f.borrow()
			n, err = f.conn.Read(f.buf[f.w:])
		}
		if n > 0 {
			f.w += n
			f.rerr = err
			return nil
		}
		if err != nil {
			f.release()
			return err
		}
	}
	f.release()
	return io.ErrNoProgress
}

// readFull fills dst from the received bytes, as io.ReadFull does: io.EOF
// if the stream ended before any byte, io.ErrUnexpectedEOF after some.
func (f *leanFrames) readFull(dst []byte) error {
	for got := 0; got < len(dst); {
		if f.r == f.w {
			if err := f.fill(); err != nil {
				if got > 0 && err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		n := copy(dst[got:], f.buf[f.r:f.w])
		f.r += n
		got += n
	}
	return nil
}

// peek makes sure n bytes (at most readBufSize) are buffered, without
// reading them.
func (f *leanFrames) peek(n int) error {
	for f.w-f.r < n {
		if err := f.fill(); err != nil {
			return err
		}
	}
	return nil
}

// readSome reads up to len(p) bytes: buffered ones, or, when nothing is
// buffered and p is at least a buffer long, straight from the connection
// into p, as bufio does.
func (f *leanFrames) readSome(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.r == f.w {
		if len(f.pending) == 0 && f.rerr == nil && len(p) >= readBufSize {
			return f.conn.Read(p)
		}
		if err := f.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, f.buf[f.r:f.w])
	f.r += n
	return n, nil
}
