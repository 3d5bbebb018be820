package websocket

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

// maskBytes must equal the byte-at-a-time definition (RFC 6455, 5.3) for
// every length and for a stream masked in pieces.
func TestMaskBytes(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := 0; n < 40; n++ {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		want := make([]byte, n)
		for i := range data {
			want[i] = data[i] ^ key[i%4]
		}
		got := append([]byte(nil), data...)
		cut := rand.IntN(n + 1)
		k := maskBytes(key, got[:cut])
		maskBytes(k, got[cut:])
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d cut=%d: %x, want %x", n, cut, got, want)
		}
	}
}

// frame builds a frame as a client sends it (masked with key).
func frame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b := []byte{op, 0x80}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b[1] |= byte(n)
	default:
		b[1] |= 126
		b = append(b, byte(n>>8), byte(n))
	}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	maskBytes(key, b[start:])
	return b
}

// serverPair returns the server end (leanFrames) and the raw client end of
// a TCP connection.
func serverPair(t *testing.T) (*leanFrames, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	return newLeanFrames(server, nil, serverSide), client
}

// A fragmented message with a ping between its fragments reads as one
// stream; the ping is answered with a pong carrying its payload; a close
// frame ends the stream and is answered with the same status.
func TestLeanFramesControlAndFragments(t *testing.T) {
	f, c := serverPair(t)
	key := [4]byte{1, 2, 3, 4}
	var in []byte
	in = append(in, frame(false, opBinary, []byte("hello, "), key)...)
	in = append(in, frame(true, opPing, []byte("are you there"), key)...)
	in = append(in, frame(true, opContinuation, []byte("world"), key)...)
	in = append(in, frame(true, opClose, []byte{0x03, 0xe9, 'b', 'y', 'e'}, key)...)
	if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || string(got) != "hello, world" {
		t.Fatalf("read %q, %v; want the whole message, then EOF", got, err)
	}
	out := make([]byte, 64)
	n, err := io.ReadAtLeast(c, out, 2+13+2+2)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x8a, 13}, "are you there"...)
	want = append(want, 0x88, 2, 0x03, 0xe9)
	if !bytes.Equal(out[:n], want) {
		t.Fatalf("server answered %x, want pong then close 1001: %x", out[:n], want)
	}
}

// Frames a server must refuse: each closes with 1002 and an ErrProtocol.
func TestLeanFramesRefuseProtocolErrors(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	cases := map[string][]byte{
		"unmasked":           {0x82, 0x01, 'x'},
		"reserved bit":       append([]byte{0xc2}, frame(true, opBinary, []byte("x"), key)[1:]...),
		"reserved opcode":    frame(true, 0x3, []byte("x"), key),
		"fragmented ping":    frame(false, opPing, nil, key),
		"long control":       frame(true, opPing, make([]byte, 126), key),
		"length top bit set": {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		// RFC 6455 5.2: lengths in the fewest bytes.
		"16-bit length under 126":   append([]byte{0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4}, "hello"...),
		"64-bit length under 65536": append([]byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}, "hello"...),
		// 5.4: fragments.
		"orphan continuation": frame(true, opContinuation, []byte("x"), key),
		"message inside a fragmented one": append(frame(false, opBinary, []byte("a"), key),
			frame(true, opBinary, []byte("b"), key)...),
		// 5.5.1 and 7.4: close bodies.
		"close body of 1 byte":   frame(true, opClose, []byte{0x03}, key),
		"close status 0":         frame(true, opClose, []byte{0, 0}, key),
		"close status 1005":      frame(true, opClose, []byte{0x03, 0xed}, key),
		"close status 2000":      frame(true, opClose, []byte{0x07, 0xd0}, key),
		"close status 5000":      frame(true, opClose, []byte{0x13, 0x88}, key),
		"close reason not UTF-8": frame(true, opClose, []byte{0x03, 0xe8, 0xff, 0xfe}, key),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			f, c := serverPair(t)
			if _, err := c.Write(in); err != nil {
				t.Fatal(err)
			}
			var err error
			for i := 0; i < 4 && err == nil; i++ { // a first fragment reads before its error
				_, err = f.Read(make([]byte, 8))
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Read: %v, want ErrProtocol", err)
			}
			out := make([]byte, 4)
			if _, err := io.ReadFull(c, out); err != nil || !bytes.Equal(out, []byte{0x88, 2, 0x03, 0xea}) {
				t.Fatalf("server sent %x, %v; want a close frame with 1002", out, err)
			}
		})
	}
}

// Between messages the lean framing holds no read buffer, whether a read
// waits for the next frame or not, and frames cut anywhere (two in one
// segment, one across several, a payload larger than the buffer) read
// whole; a read deadline still ends a wait for bytes that do not come.
func TestLeanFramesHoldNoBufferBetweenMessages(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		f, c := serverPair(t)
		if f.rc == nil {
			t.Skip("no raw connection on this platform")
		}
		holdNoBuffer(t, f, c)
	})
	t.Run("tls", func(t *testing.T) {
		f, c := tlsServerPair(t)
		holdNoBuffer(t, f, c)
	})
}

func holdNoBuffer(t *testing.T, f *leanFrames, c net.Conn) {
	key := [4]byte{1, 2, 3, 4}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes, over readBufSize
	var in []byte
	in = append(in, frame(true, opBinary, []byte("first"), key)...)
	in = append(in, frame(true, opBinary, []byte("second"), key)...)
	in = append(in, frame(true, opBinary, big, key)...)
	go func() {
		for len(in) > 0 { // in small pieces
			n := min(len(in), 1000)
			_, _ = c.Write(in[:n])
			in = in[n:]
			time.Sleep(time.Millisecond)
		}
	}()
	want := append([]byte("firstsecond"), big...)
	got := make([]byte, len(want))
	for n := 0; n < len(got); {
		m, err := f.Read(got[n:])
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		n += m
		if f.buf != nil && f.r == f.w {
			t.Fatalf("after %d bytes a drained buffer is still held", n)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read other bytes than were sent")
	}
	if f.buf != nil || f.buffered() != 0 {
		t.Fatalf("after the last message: buffer %v, %d bytes buffered", f.buf != nil, f.buffered())
	}
	_ = f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := f.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("%v (%T) is no net.Error timeout", err, err)
	}
	if f.buf != nil {
		t.Fatal("a read that timed out kept its buffer")
	}
	_ = c.Close()
	_ = f.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := f.Read(got); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}

// Within a message, a reader that takes it in small pieces (as Kitex's
// buffered reader does, into what is left of its buffer) gets a read
// buffer's worth of the connection per fill: the small wait read that
// keeps a TLS connection from holding a buffer is for a frame's start
// only.
func TestLeanFramesSmallReadsWithinAMessage(t *testing.T) {
	small := func(t *testing.T, f *leanFrames, c net.Conn) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes
		go func() { _, _ = c.Write(frame(true, opBinary, big, [4]byte{1, 2, 3, 4})) }()
		var got []byte
		p := make([]byte, 1024)
		reads := 0
		for len(got) < len(big) {
			n, err := f.Read(p)
			if err != nil {
				t.Fatalf("after %d bytes: %v", len(got), err)
			}
			reads++
			got = append(got, p[:n]...)
		}
		if !bytes.Equal(got, big) {
			t.Fatal("read other bytes than were sent")
		}
		if limit := 2*len(big)/len(p) + 4; reads > limit {
			t.Fatalf("%d reads of %d bytes for a message of %d, want at most %d", reads, len(p), len(big), limit)
		}
	}
	t.Run("tcp", func(t *testing.T) {
		f, c := serverPair(t)
		small(t, f, c)
	})
	t.Run("tls", func(t *testing.T) {
		f, c := tlsServerPair(t)
		small(t, f, c)
	})
}

// tlsServerPair is serverPair over TLS: the server's lean framing on a
// tls.Conn, and the client's tls.Conn.
func tlsServerPair(t *testing.T) (*leanFrames, net.Conn) {
	ca := testutil.NewCA(t)
	f, c := serverPair(t)
	srv := tls.Server(f.conn, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "echo", x509.ExtKeyUsageServerAuth)}})
	cli := tls.Client(c, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	go func() { _ = cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	return newLeanFrames(srv, nil, serverSide), cli
}
