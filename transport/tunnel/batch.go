package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// maxBatch bounds the bytes a batchConn holds before writers wait.
const maxBatch = 256 << 10

// directWrite is the body size from which a frame is written by the
// session's send loop itself, without being copied into the queue.
const directWrite = 4 << 10

// keepBuffer is the capacity up to which a batchConn keeps its buffers
// between writes whatever they held; a larger one is kept only while the
// batches fill at least 1/shrinkRatio of it, so that a session that had a
// burst gives its memory back at its next small write.
const (
	keepBuffer  = 64 << 10
	shrinkRatio = 8
	shrinkAfter = time.Second
)

// yamux's frame header (see hashicorp/yamux's spec.md): version, type,
// flags, stream, length. A data frame's body follows its header.
const (
	frameHeaderSize = 12
	frameTypeData   = 0
)

// batchConn sits under a yamux session and turns the session's many small
// writes (yamux writes each frame's header and body separately) into as few
// syscalls as possible: Write only queues (a data frame's header is held
// until its body comes, so that both are queued together), and one flusher
// goroutine writes everything queued since its last write at once. A body
// of directWrite bytes or more is not copied into the queue: yamux's send
// loop writes it itself, after what is queued and its header, in one
// writev on TCP. The queue is bounded (maxBatch): writers wait while it is
// full, which is yamux's backpressure. Because the real write happens
// here, out of reach of yamux's ConnectionWriteTimeout, batchConn enforces
// its own write deadline and fails every later Write once a write has
// failed. Its two buffers are kept from one write to the next (the large
// ones only while they are filled), so a busy session allocates nothing.
//
// It has one writer: yamux's send loop writes every frame, a header and
// then its body, from one goroutine (hashicorp/yamux v0.1.2, session.go).
// Write is not for concurrent use.
type batchConn struct {
	net.Conn
	writeTimeout time.Duration
	tcp          *net.TCPConn // Conn, if it is TCP: frames go out with writev

	mu      sync.Mutex
	room    *sync.Cond // signalled when a write ends or fails
	queue   []byte
	spare   []byte
	held    [frameHeaderSize]byte // a data frame's header, waiting for its body
	heldN   int
	writing bool // a write to Conn is in progress (the flusher's or a direct one)
	err     error
	kick    chan struct{}
	done    chan struct{}
	flushed chan struct{}
	once    sync.Once

	// Used by the direct writer only, which is alone while writing is set.
	vec     [3][]byte
	bufs    net.Buffers
	scratch []byte

	lastBig time.Time // the flusher's last batch of at least 1/shrinkRatio of its buffer
}

func newBatchConn(c net.Conn, writeTimeout time.Duration) *batchConn {
	b := &batchConn{
		Conn:         c,
		writeTimeout: writeTimeout,
		kick:         make(chan struct{}, 1),
		done:         make(chan struct{}),
		flushed:      make(chan struct{}),
	}
	b.tcp, _ = c.(*net.TCPConn)
	b.room = sync.NewCond(&b.mu)
	go b.flushLoop()
	return b
}

// isDataHeader reports whether p is the header of a yamux data frame with
// a body, which yamux writes next.
func isDataHeader(p []byte) bool {
	return len(p) == frameHeaderSize && p[0] == 0 && p[1] == frameTypeData && binary.BigEndian.Uint32(p[8:]) > 0
}

// Write queues p, or writes it at once if it is a large body (see
// batchConn). It blocks only while the queue is full, or, for a large
// body, while the flusher writes.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	if b.heldN == 0 && isDataHeader(p) {
		// Keep it for its body, which yamux writes next, to write both at once.
		b.heldN = copy(b.held[:], p)
		b.mu.Unlock()
		return len(p), nil
	}
	if len(p) >= directWrite {
		for b.err == nil && b.writing {
			b.room.Wait()
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		return b.writeDirect(p)
	}
	for b.err == nil && len(b.queue) > 0 && len(b.queue)+b.heldN+len(p) > maxBatch {
		b.room.Wait()
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.queue = append(b.queue, b.held[:b.heldN]...)
	b.queue = append(b.queue, p...)
	b.heldN = 0
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default: // a flush is already due
	}
	return len(p), nil
}

// writeDirect writes what is queued, the held header and p to Conn from
// the caller's goroutine: on TCP in one writev, without copying p. It is
// called with mu held and no write in progress, and releases mu.
func (b *batchConn) writeDirect(p []byte) (int, error) {
	b.writing = true
	var out []byte
	if len(b.queue) > 0 {
		out = b.queue
		b.queue, b.spare = b.spare[:0], nil
	}
	head := b.held[:b.heldN]
	b.heldN = 0
	b.mu.Unlock() // held is not touched again while writing is set
	_ = b.Conn.SetWriteDeadline(time.Now().Add(b.writeTimeout))
	var err error
	switch {
	case len(out) == 0 && len(head) == 0:
		_, err = b.Conn.Write(p)
	case b.tcp != nil:
		b.vec = [3][]byte{out, head, p}
		b.bufs = b.vec[:]
		_, err = b.bufs.WriteTo(b.tcp)
		b.vec = [3][]byte{}
	default: // TLS or WebSocket: as few writes (records, messages) as possible
		b.scratch = append(append(b.scratch[:0], out...), head...)
		if len(p) < directWrite {
			b.scratch = append(b.scratch, p...)
			_, err = b.Conn.Write(b.scratch)
		} else if _, err = b.Conn.Write(b.scratch); err == nil {
			_, err = b.Conn.Write(p)
		}
		if cap(b.scratch) > keepBuffer {
			b.scratch = nil
		}
	}
	b.mu.Lock()
	b.writing = false
	if out != nil {
		b.recycle(out)
	}
	if err != nil && b.err == nil {
		b.err = err
	}
	b.room.Broadcast()
	b.mu.Unlock()
	if err != nil {
		_ = b.Conn.Close()
		return 0, err
	}
	return len(p), nil
}

// recycle keeps out, just written, as the spare buffer unless it is large
// and has not been filled for a while. Called with mu held.
func (b *batchConn) recycle(out []byte) {
	if c := cap(out); c <= keepBuffer {
		b.spare = out[:0]
	} else if c <= 2*maxBatch {
		now := time.Now()
		if len(out) >= c/shrinkRatio {
			b.lastBig = now
		}
		if now.Sub(b.lastBig) < shrinkAfter {
			b.spare = out[:0]
		}
	}
}

func (b *batchConn) flushLoop() {
	defer close(b.flushed)
	for {
		select {
		case <-b.kick:
		case <-b.done:
			return
		}
		b.mu.Lock()
		if b.writing || len(b.queue) == 0 {
			// A direct write is in progress; it kicks again when it ends.
			b.mu.Unlock()
			continue
		}
		// Swap buffers: writers fill the spare while out is written. The
		// spare is never the array being written, so nothing is overwritten.
		out := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.writing = true
		b.mu.Unlock()
		_ = b.Conn.SetWriteDeadline(time.Now().Add(b.writeTimeout))
		_, err := b.Conn.Write(out)
		b.mu.Lock()
		b.writing = false
		b.recycle(out)
		if err != nil && b.err == nil {
			b.err = err
		}
		more := len(b.queue) > 0
		b.room.Broadcast()
		b.mu.Unlock()
		if err != nil {
			_ = b.Conn.Close()
			return
		}
		if more {
			select {
			case b.kick <- struct{}{}:
			default:
			}
		}
	}
}

// Close stops the flusher (dropping what is still queued) and closes the connection.
func (b *batchConn) Close() error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		if b.err == nil {
			b.err = net.ErrClosed
		}
		b.room.Broadcast()
		b.mu.Unlock()
		close(b.done)
		err = b.Conn.Close()
		<-b.flushed
	})
	return err
}
