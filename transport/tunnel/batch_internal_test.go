package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

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

// yamuxFrame is a frame as yamux's send loop writes it: the header, then,
// for a data frame, the body in a second write.
func yamuxFrame(stream uint32, body []byte) (head []byte) {
	head = make([]byte, frameHeaderSize)
	head[1] = frameTypeData
	binary.BigEndian.PutUint32(head[4:], stream)
	binary.BigEndian.PutUint32(head[8:], uint32(len(body)))
	return head
}

// Frames written as yamux writes them (header, then body; small bodies
// queued, large ones written past the queue; window updates in between)
// arrive whole and in order, on TCP (writev) and on a connection that is
// not TCP.
func TestBatchConnDirectAndQueuedFramesStayInOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		pipe bool
	}{{"tcp", false}, {"pipe", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var c, s net.Conn
			if tc.pipe {
				c, s = net.Pipe()
				t.Cleanup(func() { c.Close(); s.Close() })
			} else {
				c, s = tcpPair(t)
			}
			b := newBatchConn(c, 5*time.Second)
			defer b.Close()
			var want bytes.Buffer
			got := make(chan []byte, 1)
			const frames = 300
			go func() {
				var all []byte
				buf := make([]byte, 64<<10)
				for len(all) < wantLen(frames) {
					n, err := s.Read(buf)
					if err != nil {
						break
					}
					all = append(all, buf[:n]...)
				}
				got <- all
			}()
			for i := 0; i < frames; i++ {
				body := bytes.Repeat([]byte{byte(i)}, frameBodySize(i))
				head := yamuxFrame(uint32(i), body)
				want.Write(head)
				want.Write(body)
				if _, err := b.Write(head); err != nil {
					t.Fatal(err)
				}
				if _, err := b.Write(body); err != nil {
					t.Fatal(err)
				}
				if i%7 == 0 { // a window update: a header without a body
					update := []byte{0, 1, 0, 0, 0, 0, 0, byte(i), 0, 0, 1, 0}
					want.Write(update)
					if _, err := b.Write(update); err != nil {
						t.Fatal(err)
					}
				}
			}
			select {
			case all := <-got:
				if !bytes.Equal(all, want.Bytes()) {
					t.Fatalf("the peer read %d bytes that differ from the %d written", len(all), want.Len())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the frames did not all arrive")
			}
		})
	}
}

func frameBodySize(i int) int {
	if i%3 == 0 {
		return 16<<10 + i // over directWrite
	}
	return 1 + i*7%2000
}

func wantLen(frames int) int {
	n := 0
	for i := 0; i < frames; i++ {
		n += frameHeaderSize + frameBodySize(i)
		if i%7 == 0 {
			n += frameHeaderSize
		}
	}
	return n
}

// gatherPeer opens a stream of a yamux client session on one end of a TCP
// connection and returns it as the tunnel wraps it, with a function that
// reads the other end raw and returns the bodies of the next n data
// frames, one per yamux frame.
func gatherPeer(t *testing.T) (*countedStream, func(n int) [][]byte) {
	t.Helper()
	c, s := tcpPair(t)
	cfg := yamuxConfig(time.Minute)
	cfg.EnableKeepAlive = false
	bc := newBatchConn(c, 5*time.Second)
	sess, err := yamux.Client(bc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	cs := &countedStream{Stream: st, open: new(atomic.Int64)}
	cs.open.Add(1)
	frames := func(n int) [][]byte {
		var out [][]byte
		head := make([]byte, frameHeaderSize)
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(out) < n {
			if _, err := io.ReadFull(s, head); err != nil {
				t.Fatalf("after %d frames: %v", len(out), err)
			}
			size := binary.BigEndian.Uint32(head[8:])
			if head[1] != frameTypeData || size == 0 {
				continue // the stream's opening, window updates
			}
			body := make([]byte, size)
			if _, err := io.ReadFull(s, body); err != nil {
				t.Fatal(err)
			}
			out = append(out, body)
		}
		return out
	}
	return cs, frames
}

// kitexMessage returns a message of Kitex's framing: a 4-byte length, then
// magic (0x1000: TTHeader, 0x8001: Framed binary Thrift) and a body.
func kitexMessage(magic uint16, size int) []byte {
	m := binary.BigEndian.AppendUint32(nil, uint32(size-4))
	m = binary.BigEndian.AppendUint16(m, magic)
	for len(m) < size {
		m = append(m, byte(len(m)))
	}
	return m
}

// A Kitex message written in pieces leaves as one frame; other writes,
// and a whole message, leave as they are written.
func TestCountedStreamGathersKitexMessages(t *testing.T) {
	cs, frames := gatherPeer(t)
	tt := kitexMessage(0x1000, 20<<10)
	framed := kitexMessage(0x8001, 6<<10)
	whole := kitexMessage(0x1000, 1<<10)
	other := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, w := range [][]byte{tt[:86], tt[86 : 16<<10], tt[16<<10:], framed[:10], framed[10:], whole, other[:5], other[5:]} {
		if _, err := cs.Write(w); err != nil {
			t.Fatal(err)
		}
	}
	got := frames(5)
	for i, want := range [][]byte{tt, framed, whole, other[:5], other[5:]} {
		if !bytes.Equal(got[i], want) {
			t.Fatalf("frame %d: %d bytes, want the %d bytes written", i, len(got[i]), len(want))
		}
	}
}

// What was gathered of a message that turns out shorter than it said, or
// followed by a write that does not continue it, is written before the
// writer reads, closes or writes that.
func TestCountedStreamWritesWhatItGathered(t *testing.T) {
	cs, frames := gatherPeer(t)
	short := kitexMessage(0x1000, 4<<10)[:100]
	if _, err := cs.Write(short); err != nil {
		t.Fatal(err)
	}
	_ = cs.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := cs.Read(make([]byte, 10)); err == nil {
		t.Fatal("read something the peer never wrote")
	}
	if got := frames(1); !bytes.Equal(got[0], short) {
		t.Fatalf("got %d bytes before the read, want the %d gathered", len(got[0]), len(short))
	}

	big := []byte("not a continuation: longer than what the message still needs, so written after it")
	if _, err := cs.Write(short[:50]); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Write(append(big, make([]byte, 4<<10)...)); err != nil {
		t.Fatal(err)
	}
	if got := frames(2); !bytes.Equal(got[0], short[:50]) || !bytes.HasPrefix(got[1], big) {
		t.Fatalf("got frames of %d and %d bytes, want the 50 gathered, then the write after them", len(got[0]), len(got[1]))
	}

	if _, err := cs.Write(short); err != nil {
		t.Fatal(err)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if got := frames(1); !bytes.Equal(got[0], short) {
		t.Fatalf("got %d bytes before the close, want the %d gathered", len(got[0]), len(short))
	}
}

// A gathered message whose write waits for the peer's window holds up
// neither a Read nor a Close of its stream: Close ends the write, as it
// does any blocked write, and a Read waits for the peer, not for it (two
// peers whose writers both waited for the other's reader would never
// move).
func TestCountedStreamWaitingWriteHoldsUpNoReadOrClose(t *testing.T) {
	// A peer that reads nothing and grants no window: 256 KiB, yamux's
	// initial window, fill it.
	cs, _ := gatherPeer(t)
	if _, err := cs.Write(make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	msg := kitexMessage(0x1000, 1000)
	wrote := make(chan error, 1)
	go func() {
		if _, err := cs.Write(msg[:100]); err != nil {
			wrote <- err
			return
		}
		_, err := cs.Write(msg[100:]) // completes the message: its write waits for window
		wrote <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-wrote:
		t.Fatalf("the write did not wait for the window: %v", err)
	default:
	}

	_ = cs.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	read := make(chan error, 1)
	go func() { _, err := cs.Read(make([]byte, 10)); read <- err }()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("read something the peer never wrote")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read waited for the stream's blocked write, not for its deadline")
	}

	closed := make(chan error, 1)
	go func() { closed <- cs.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the stream's blocked write")
	}
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the blocked write succeeded on a closed stream")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the blocked write")
	}
}
