package transport_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
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

func heapMiB() float64 {
	runtime.GC()
	runtime.GC() // pooled buffers (sync.Pool) go in the second
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// testDeclaredLengthBomb sends requests that declare a 256 MiB string and
// carry a few bytes, unframed and framed, 4 connections of each: the
// server's heap must not grow by the declared sizes, the connections are
// closed, and a legitimate client alongside loses no call.
func testDeclaredLengthBomb(t *testing.T, tc transportCase) {
	const limit = 64 << 10
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.MaxMessageBytes = limit; c.ReadTimeout = 2 * time.Second })
	before := heapMiB()
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
		peak = max(peak, heapMiB())
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
	before := heapMiB()
	const clients, calls, size = 3, 6, 2 << 20
	out := thrift.NewTMemoryBuffer()
	for i := 1; i <= calls; i++ {
		if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), int32(i), strings.Repeat("r", size)); err != nil {
			t.Fatal(err)
		}
	}
	pipelined := out.Bytes()
	var conns []net.Conn
	began := time.Now()
	for range clients {
		c, err := f.dialServer(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { _, _ = c.Write(pipelined) }() // the server may stop reading us first
		conns = append(conns, c)
	}
	time.Sleep(writeTimeout / 2)
	during := heapMiB()
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
	pipelined = nil // the clients' own 12 MiB
	time.Sleep(time.Second)
	after := heapMiB()
	t.Logf("report: %s: %d clients pipelining %d × %d MiB without reading: heap %.0f MiB before, %.0f while they held it, %.0f after; closed within %v of starting (WriteTimeout %v)",
		tc.kind, clients, calls, size>>20, before, during, after, closed.Round(10*time.Millisecond), writeTimeout)
	if after-before > 16 {
		t.Fatalf("the heap kept %.0f MiB after the slow readers were closed", after-before)
	}
}
