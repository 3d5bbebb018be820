package transport_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/transport"
)

// TestLimits checks, on every transport, that a peer cannot take more than
// the server's limits allow, and that the server keeps serving others.
func TestLimits(t *testing.T) {
	for _, tc := range cases() {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Run("OversizedMessage", func(t *testing.T) { testOversizedMessage(t, tc) })
			t.Run("SlowClients", func(t *testing.T) { testSlowClients(t, tc) })
			t.Run("SilentClients", func(t *testing.T) { testSilentClients(t, tc) })
			t.Run("ConnectionCap", func(t *testing.T) { testConnectionCap(t, tc) })
			t.Run("DeclaredLengthBomb", func(t *testing.T) { testDeclaredLengthBomb(t, tc) })
			t.Run("SlowReaders", func(t *testing.T) { testSlowReaders(t, tc) })
			t.Run("PipelineFlood", func(t *testing.T) { testPipelineFlood(t, tc) })
			t.Run("HandshakeHog", func(t *testing.T) { testHandshakeHog(t, tc) })
		})
	}
}

func testOversizedMessage(t *testing.T, tc transportCase) {
	const limit = 64 << 10
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.MaxMessageBytes = limit })
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: strings.Repeat("x", 4*limit)}); err == nil {
		t.Fatalf("a %d-byte request passed a %d-byte limit", 4*limit, limit)
	}
	// A frame that declares 2 GiB is refused before anything is read.
	c, err := f.dialServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	huge := []byte{0x7f, 0xff, 0xff, 0xff, 0x80, 0x01, 0x00, 0x01}
	if _, err := c.Write(huge); err != nil {
		t.Fatal(err)
	}
	if err := testutil.ReadUntilError(c, 5*time.Second); testutil.IsTimeout(err) {
		t.Fatal("the server kept a connection that declared a 2 GiB frame open")
	}
	if resp, err := f.cli.Echo(context.Background(), &api.Request{Message: strings.Repeat("y", limit/2)}); err != nil || len(resp.Message) != limit/2 {
		t.Fatalf("a message under the limit after refusals: %v", err)
	}
}

// testSlowClients sends the first bytes of a request, then one byte every
// 100 ms, on several connections: each is closed once ReadTimeout has passed
// since its first byte, and the goroutines behind them end.
func testSlowClients(t *testing.T, tc transportCase) {
	const readTimeout = 400 * time.Millisecond
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.ReadTimeout = readTimeout })
	before := runtime.NumGoroutine()
	const clients = 8
	var wg sync.WaitGroup
	lasted := make(chan time.Duration, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lasted <- trickle(t, f, 5*time.Second)
		}()
	}
	wg.Wait()
	close(lasted)
	var longest time.Duration
	for d := range lasted {
		if d < readTimeout || d > readTimeout+2*time.Second {
			t.Errorf("a slow client was cut after %v; want about %v", d, readTimeout)
		}
		longest = max(longest, d)
	}
	t.Logf("report: %s: %d clients sending 1 byte per 100 ms cut within %v (ReadTimeout %v)",
		tc.kind, clients, longest.Round(time.Millisecond), readTimeout)
	if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "after slow clients"}); err != nil {
		t.Fatalf("after slow clients: %v", err)
	}
	waitGoroutines(t, before+4)
}

// trickle opens a raw stream to the server, writes a frame header that
// announces 100 bytes and then one byte every 100 ms, and returns how long
// the server kept the connection (up to limit).
func trickle(t *testing.T, f *fixture, limit time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := f.dialServer(ctx)
	if err != nil {
		t.Errorf("dial: %v", err)
		return 0
	}
	defer c.Close()
	start := time.Now()
	// One byte per write: the WebSocket Conn would hold a whole frame back.
	for _, b := range []byte{0, 0, 0, 100, 0x80, 0x01} {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Errorf("write: %v", err)
			return 0
		}
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = testutil.ReadUntilError(c, limit)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return time.Since(start)
		case <-tick.C:
			_, _ = c.Write([]byte{0})
		}
	}
}

// testSilentClients connects and sends nothing: IdleTimeout closes those
// connections, and only those: one that sends a request every 200 ms stays.
func testSilentClients(t *testing.T, tc transportCase) {
	const idle = 500 * time.Millisecond
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.IdleTimeout = idle })
	active, err := f.dialServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer active.Close()
	keptBusy := make(chan error, 1)
	go func() { keptBusy <- callEvery(active, 200*time.Millisecond, 8) }()

	c, err := f.dialServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = testutil.ReadUntilError(c, 5*time.Second)
	if testutil.IsTimeout(err) {
		t.Fatalf("a silent connection was still open after 5 s with a %v idle timeout", idle)
	}
	d := time.Since(start)
	if d < idle/2 {
		t.Fatalf("a silent connection was closed after %v, before its %v idle timeout", d, idle)
	}
	t.Logf("report: %s: a silent connection closed after %v (IdleTimeout %v)", tc.kind, d.Round(time.Millisecond), idle)
	if err := <-keptBusy; err != nil {
		t.Fatalf("a connection with a request every 200 ms was cut by the %v idle timeout: %v", idle, err)
	}
}

// callEvery makes n echo calls on c, one every interval, each a framed
// Thrift request written as raw bytes, and returns the first failure.
func callEvery(c net.Conn, interval time.Duration, n int) error {
	out := thrift.NewTMemoryBuffer()
	for i := 1; i <= n; i++ {
		out.Reset()
		if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), int32(i), "busy"); err != nil {
			return err
		}
		if _, err := c.Write(out.Bytes()); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return fmt.Errorf("reply %d: %w", i, err)
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
			return fmt.Errorf("reply %d: %w", i, err)
		}
		time.Sleep(interval)
	}
	return nil
}

// waitGoroutines waits (up to 5 s) until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("at most %d goroutines running", n), 5*time.Second, func() bool { return runtime.NumGoroutine() <= n })
}

// testConnectionCap opens connections past MaxConnections: the ones over
// it are closed at once, the client already connected keeps calling, and
// a slot freed is usable again.
func testConnectionCap(t *testing.T, tc transportCase) {
	const maxConns = 4
	log, logs := testutil.NewLogs(slog.LevelWarn)
	f := startFixtureWith(t, tc, func(c *transport.ServerConfig) { c.MaxConnections = maxConns; c.Logger = log })
	// The fixture's client holds one pooled connection; fill the rest.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	for len(held) < maxConns-1 {
		c, err := f.dialServer(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := callEvery(c, 0, 1); err != nil {
			t.Fatalf("connection %d of %d: %v", len(held)+1, maxConns, err)
		}
	}
	// The flood: 100 connections at once, each sending a call.
	const flood = 100
	before := testutil.HeapMiB()
	var over []net.Conn
	defer func() {
		for _, c := range over {
			_ = c.Close()
		}
	}()
	out := thrift.NewTMemoryBuffer()
	if err := writeEchoCall(thrift.NewTBinaryProtocolConf(thrift.NewTFramedTransportConf(out, thriftConf), thriftConf), 1, "flood"); err != nil {
		t.Fatal(err)
	}
	for range flood {
		if c, err := f.dialServer(context.Background()); err == nil { // a tunnel stream can be refused while it opens
			_, _ = c.Write(out.Bytes())
			over = append(over, c)
		}
	}
	during := testutil.HeapMiB()
	for i, c := range over {
		if err := testutil.ReadUntilError(c, 5*time.Second); testutil.IsTimeout(err) {
			t.Fatalf("connection %d over MaxConnections (%d) was kept open", i, maxConns)
		}
	}
	for i := range 10 {
		if _, err := f.cli.Echo(context.Background(), &api.Request{Message: "legit"}); err != nil {
			t.Fatalf("the client connected before the flood, call %d: %v", i, err)
		}
	}
	t.Logf("report: %s: %d connections over MaxConnections (%d) refused; heap %.1f MiB before, %.1f MiB while they were open",
		tc.kind, flood, maxConns, before, during)
	if during-before > 16 {
		t.Errorf("the heap grew by %.0f MiB for %d refused connections", during-before, flood)
	}
	if n := len(logs.Containing("transport: connection refused: MaxConnections are open")); n < 1 || n > 2 {
		t.Errorf("%d log lines for %d refusals, want the first one (and at most a summary)", n, flood)
	}
	_ = held[0].Close()
	held = held[1:]
	testutil.Eventually(t, "a freed slot taken again", 5*time.Second, func() bool {
		c, err := f.dialServer(context.Background())
		if err != nil {
			return false
		}
		if callEvery(c, 0, 1) != nil {
			_ = c.Close()
			return false
		}
		held = append(held, c)
		return true
	})
}
