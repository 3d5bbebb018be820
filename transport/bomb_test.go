package transport_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/transport"
)

// bombCall is the start of an echo call whose Request.message declares
// declared bytes and carries none: framed with a frame of the bytes that
// follow when framed, else unframed (strict binary, 0x8001).
func bombCall(declared uint32, framed bool) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0x80010001) // version 1, CALL
	b = binary.BigEndian.AppendUint32(b, 4)
	b = append(b, "echo"...)
	b = binary.BigEndian.AppendUint32(b, 1) // seq
	b = append(b, 12, 0, 1)                 // field 1: struct
	b = append(b, 11, 0, 1)                 // field 1: string
	b = binary.BigEndian.AppendUint32(b, declared)
	if framed {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
	}
	return b
}

// testDeclaredLengthBomb sends requests that declare a 256 MiB string and
// carry a few bytes, unframed and framed, 4 connections of each: the
// server's heap must not grow by the declared sizes, the connections are
// closed, and a legitimate client alongside loses no call.
func testDeclaredLengthBomb(t *testing.T, tc transportCase) {
	const limit = 64 << 10
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.MaxMessageBytes = limit; c.ReadTimeout = 2 * time.Second })
	before := testutil.HeapMiB()
	var peak float64
	for _, framed := range []bool{false, true} {
		var conns []net.Conn
		for range 4 {
			c, err := f.dialServer(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(bombCall(256<<20, framed)); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			if err := testutil.ReadUntilError(c, 5*time.Second); testutil.IsTimeout(err) {
				t.Fatalf("the server kept a connection open whose request declared 256 MiB (framed %v)", framed)
			}
		}
		time.Sleep(200 * time.Millisecond)
		peak = max(peak, testutil.HeapMiB())
		if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "alongside"}); err != nil {
			t.Fatalf("a legitimate call alongside the bombs (framed %v): %v", framed, err)
		}
	}
	t.Logf("report: %s: heap %.1f MiB before 8 requests declaring 256 MiB each, %.1f MiB at most while they were open", tc.kind, before, peak)
	if peak-before > 32 {
		t.Fatalf("the heap grew by %.0f MiB for requests that declared 256 MiB strings and sent 27 bytes", peak-before)
	}
}

// testSlowReaders pipelines requests whose replies make megabytes, on
// connections that never read them: each connection is closed once a
// reply has waited WriteTimeout to be written, what it held is freed, and
// a legitimate client alongside loses no call.
func testSlowReaders(t *testing.T, tc transportCase) {
	const writeTimeout = 500 * time.Millisecond
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.WriteTimeout = writeTimeout })
	before := testutil.HeapMiB()
	const clients, calls, size = 3, 6, 2 << 20
	out := thrift.NewTMemoryBuffer()
	for i := 1; i <= calls; i++ {
		if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), int32(i), strings.Repeat("r", size)); err != nil {
			t.Fatal(err)
		}
	}
	pipelined := out.Bytes()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	began := time.Now()
	for range clients {
		c, err := f.dialServer(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = c.Write(pipelined) }() // the server may stop reading us first
		conns = append(conns, c)
	}
	time.Sleep(writeTimeout / 2)
	during := testutil.HeapMiB()
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "alongside"}); err != nil {
		t.Fatalf("a legitimate call alongside the slow readers: %v", err)
	}
	// Let the replies wait well past WriteTimeout, then read: the server
	// has closed the connection, and not every reply came.
	time.Sleep(4 * writeTimeout)
	closed := time.Since(began)
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if testutil.IsTimeout(err) {
			t.Fatalf("slow reader %d: its connection was still open %v after its replies began to wait (WriteTimeout %v); %d bytes came", i, 4*writeTimeout, writeTimeout, n)
		}
		if n >= calls*size {
			t.Fatalf("slow reader %d got every reply (%d bytes): nothing was cut", i, n)
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	pipelined, conns = nil, nil // the clients' own 12 MiB, and their streams' buffers (yamux)
	time.Sleep(time.Second)
	after := testutil.HeapMiB()
	t.Logf("report: %s: %d clients pipelining %d × %d MiB without reading: heap %.0f MiB before, %.0f while they held it, %.0f after; closed within %v of starting (WriteTimeout %v)",
		tc.kind, clients, calls, size>>20, before, during, after, closed.Round(10*time.Millisecond), writeTimeout)
	if after-before > 16 {
		t.Fatalf("the heap kept %.0f MiB after the slow readers were closed", after-before)
	}
}

// testPipelineFlood sends pipelined requests as fast as it can on one
// connection and never reads a reply: whatever the server reads ahead while
// its first reply waits must stay bounded, not grow with what the client
// sends within WriteTimeout.
func testPipelineFlood(t *testing.T, tc transportCase) {
	const limit = 1 << 20
	log, logs := testutil.NewLogs(slog.LevelWarn)
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) {
		c.MaxMessageBytes = 2 * limit
		c.WriteTimeout = 20 * time.Second
		c.Logger = log
	})
	out := thrift.NewTMemoryBuffer()
	if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), 1, strings.Repeat("p", limit)); err != nil {
		t.Fatal(err)
	}
	call := out.Bytes()
	before := testutil.HeapMiB()
	c, err := f.dialServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sent int64
	var during float64
	start := time.Now()
	for mid := false; time.Since(start) < 2*time.Second && sent < 1<<30; {
		if !mid && time.Since(start) > time.Second {
			mid, during = true, testutil.HeapMiB()
		}
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Write(call)
		sent += int64(n)
		if err != nil && !testutil.IsTimeout(err) {
			break // the server closed it
		}
	}
	during = max(during, testutil.HeapMiB())
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "alongside"}); err != nil {
		t.Fatalf("a legitimate call alongside the flood: %v", err)
	}
	t.Logf("report: %s: one connection sent %d MiB of pipelined 1 MiB calls in %v without reading a reply: heap %.0f MiB before, at most %.0f MiB during",
		tc.kind, sent>>20, time.Since(start).Round(100*time.Millisecond), before, during)
	// netpoll reads ahead, and closes the connection; the others stop reading.
	if n := len(logs.Containing("that the server has not read yet")); tc.kind == transport.Netpoll && n != 1 {
		t.Errorf("%d log lines for the connection closed for what it sent ahead, want 1", n)
	}
	if during-before > 64 {
		t.Fatalf("the server buffered %.0f MiB for one connection that does not read its replies", during-before)
	}
}

// testHandshakeHog holds handshake slots from one source, 127.0.0.2: 160
// connections that send the start of an upgrade (WebSocket) or nothing
// (the tunnel gateway) and dial again as soon as they are closed. The heap
// stays flat, handshakes from another source all succeed, and the client
// already connected loses no call. netpoll and gonet serve a connection
// at once: SilentClients and ConnectionCap bound theirs.
func testHandshakeHog(t *testing.T, tc transportCase) {
	var prelude []byte
	switch tc.kind {
	case transport.WebSocket:
		prelude = []byte("GET /kitex HTTP/1.1\r\nHost: x\r\n")
	case transport.Yamux:
	default:
		t.Skip("no handshake: a connection is served at once")
	}
	f := startFixtureWith(t, tc, nil)
	before := testutil.HeapMiB()
	const hogs = 160
	testutil.HoldHandshakes(t, f.rawAddr, hogs, prelude)
	during := testutil.HeapMiB()
	const tries = 20
	failed := 0
	for range tries {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := f.handshake(ctx); err != nil {
			t.Logf("a handshake from 127.0.0.1: %v", err)
			failed++
		}
		cancel()
		if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "alongside"}); err != nil {
			t.Fatalf("a legitimate call alongside the hogs: %v", err)
		}
	}
	t.Logf("report: %s: %d connections from one source holding handshake slots: heap %.1f MiB before, %.1f MiB while held; %d of %d handshakes from another source failed",
		tc.kind, hogs, before, during, failed, tries)
	if failed > 0 {
		t.Fatalf("%d of %d handshakes from another source failed while one source hogged the slots", failed, tries)
	}
	if during-before > 16 {
		t.Fatalf("the heap grew by %.0f MiB for %d connections in their handshake", during-before, hogs)
	}
}
