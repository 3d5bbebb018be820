package tunnel

import (
	"net"
	"sync"
	"time"
)

// maxBatch bounds the bytes a batchConn holds before writers wait.
const maxBatch = 256 << 10

// batchConn sits under a yamux session and turns the session's many small
// writes (yamux writes each frame's header and body separately) into as few
// syscalls as possible: Write only queues, and one flusher goroutine writes
// everything queued since its last write at once. The queue is bounded
// (maxBatch): writers wait while it is full, which is yamux's backpressure.
// Because the real write happens here, out of reach of yamux's
// ConnectionWriteTimeout, batchConn enforces its own write deadline and
// fails every later Write once a write has failed.
type batchConn struct {
	net.Conn
	writeTimeout time.Duration

	mu      sync.Mutex
	room    *sync.Cond // signalled when the queue empties or fails
	queue   []byte
	spare   []byte
	err     error
	kick    chan struct{}
	done    chan struct{}
	flushed chan struct{}
	once    sync.Once
}

func newBatchConn(c net.Conn, writeTimeout time.Duration) *batchConn {
	b := &batchConn{
		Conn:         c,
		writeTimeout: writeTimeout,
		kick:         make(chan struct{}, 1),
		done:         make(chan struct{}),
		flushed:      make(chan struct{}),
	}
	b.room = sync.NewCond(&b.mu)
	go b.flushLoop()
	return b
}

// Write queues p; it blocks only while the queue is full.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for b.err == nil && len(b.queue) > 0 && len(b.queue)+len(p) > maxBatch {
		b.room.Wait()
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.queue = append(b.queue, p...)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default: // a flush is already due
	}
	return len(p), nil
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
		if len(b.queue) == 0 {
			b.mu.Unlock()
			continue
		}
		// Swap buffers: writers fill the spare while out is written. The
		// spare is never the array being written, so nothing is overwritten.
		out := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.mu.Unlock()
		_ = b.Conn.SetWriteDeadline(time.Now().Add(b.writeTimeout))
		_, err := b.Conn.Write(out)
		b.mu.Lock()
		if cap(out) <= maxBatch {
			b.spare = out[:0]
		}
		if err != nil && b.err == nil {
			b.err = err
		}
		b.room.Broadcast()
		b.mu.Unlock()
		if err != nil {
			_ = b.Conn.Close()
			return
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
