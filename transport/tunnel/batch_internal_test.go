package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// Every write arrives whole and in the order of the writes, however many
// writers there are and however the flusher batches them.
func TestBatchConnKeepsWritesWholeAndOrdered(t *testing.T) {
	c, s := tcpPair(t)
	b := newBatchConn(c, 5*time.Second)
	defer b.Close()
	const writers, perWriter = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				// A record: writer, sequence, then a body of a size that varies.
				body := bytes.Repeat([]byte{byte(w)}, (i*37)%3000)
				rec := binary.BigEndian.AppendUint32(nil, uint32(len(body)+8))
				rec = binary.BigEndian.AppendUint32(rec, uint32(w))
				rec = binary.BigEndian.AppendUint32(rec, uint32(i))
				if _, err := b.Write(append(rec, body...)); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	next := make([]int, writers)
	head := make([]byte, 12)
	for n := 0; n < writers*perWriter; n++ {
		if _, err := io.ReadFull(s, head); err != nil {
			t.Fatalf("record %d: %v", n, err)
		}
		size, w, i := binary.BigEndian.Uint32(head), binary.BigEndian.Uint32(head[4:]), binary.BigEndian.Uint32(head[8:])
		if w >= writers || int(i) != next[w] {
			t.Fatalf("record %d: writer %d sequence %d, want sequence %d", n, w, i, next[w])
		}
		next[w]++
		body := make([]byte, size-8)
		if _, err := io.ReadFull(s, body); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, bytes.Repeat([]byte{byte(w)}, len(body))) {
			t.Fatalf("record %d of writer %d is corrupted", i, w)
		}
	}
	wg.Wait()
}

// Once the connection fails, every later Write fails, and Close is safe twice.
func TestBatchConnFailsAfterAWriteError(t *testing.T) {
	c, s := tcpPair(t)
	b := newBatchConn(c, time.Second)
	s.Close()
	c.Close() // the flusher's next write fails
	testutil.Eventually(t, "a write failing after the connection failed", 5*time.Second, func() bool {
		_, err := b.Write([]byte("x"))
		return err != nil
	})
	_ = b.Close()
	if _, err := b.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
	if err := b.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// A peer that stops reading makes writers wait (bounded queue) instead of
// the queue growing without end; the write deadline then fails the conn.
func TestBatchConnBackpressure(t *testing.T) {
	c, _ := tcpPair(t)
	b := newBatchConn(c, 300*time.Millisecond)
	defer b.Close()
	chunk := make([]byte, 64<<10)
	var err error
	start := time.Now()
	for i := 0; i < 10_000 && err == nil; i++ { // 640 MiB if nothing stopped it
		_, err = b.Write(chunk)
	}
	if err == nil {
		t.Fatal("writes to a peer that never reads kept succeeding")
	}
	b.mu.Lock()
	queued := len(b.queue)
	b.mu.Unlock()
	if queued > maxBatch+len(chunk) {
		t.Fatalf("queue grew to %d bytes, over its bound %d", queued, maxBatch)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatal("the write deadline did not end the blocked writes")
	}
}
