package transport_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// listening are the transports that a client reaches through an address
// (all but the tunnel, which its server dials out of).
func listening() []transportCase {
	var out []transportCase
	for _, tc := range cases() {
		if tc.kind != transport.Yamux {
			out = append(out, tc)
		}
	}
	return out
}

// clientVia returns a client of f's transport whose calls go to addr (a
// proxy in front of f's server).
func clientVia(t *testing.T, f *fixture, addr string) echo.Client {
	t.Helper()
	ct, err := transport.NewClientTransport(f.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ct.Close() })
	cli, err := echo.NewClient("echo", append(ct.Options(),
		client.WithHostPorts(addr), client.WithRPCTimeout(5*time.Second), client.WithConnectTimeout(2*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// callsEvery makes n calls, one every interval, calling at(i) before call
// i, and returns the errors of those that failed.
func callsEvery(cli echo.Client, n int, interval time.Duration, at func(i int)) []error {
	var failed []error
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range n {
		if at != nil {
			at(i)
		}
		msg := fmt.Sprintf("call %d", i)
		resp, err := cli.Echo(context.Background(), &api.Request{Message: msg})
		if err == nil && resp.GetMessage() != msg {
			err = fmt.Errorf("reply %q to %q", resp.GetMessage(), msg)
		}
		if err != nil {
			failed = append(failed, err)
		}
		<-tick.C
	}
	return failed
}

// A proxy that closes connections idle for 300 ms, calls every 450 ms: each
// call finds its pooled connection closed by the proxy, and none fails.
func TestIdleProxyShorterThanTheCallInterval(t *testing.T) {
	for _, tc := range listening() {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Parallel()
			f := startFixture(t, tc)
			proxy := testutil.StartProxy(t, f.addr)
			proxy.IdleTimeout(300 * time.Millisecond)
			if failed := callsEvery(clientVia(t, f, proxy.Addr()), 6, 450*time.Millisecond, nil); len(failed) != 0 {
				t.Fatalf("%d of 6 calls failed: %v", len(failed), failed)
			}
		})
	}
}

// A proxy restarted (every connection cut) between calls: no call was in
// flight, none fails.
func TestProxyRestartedBetweenCalls(t *testing.T) {
	for _, tc := range listening() {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Parallel()
			f := startFixture(t, tc)
			proxy := testutil.StartProxy(t, f.addr)
			failed := callsEvery(clientVia(t, f, proxy.Addr()), 40, 25*time.Millisecond, func(i int) {
				if i%10 == 5 {
					proxy.Cut()
					time.Sleep(5 * time.Millisecond) // the FIN reaches the client
				}
			})
			if len(failed) != 0 {
				t.Fatalf("%d of 40 calls failed across 4 restarts: %v", len(failed), failed)
			}
		})
	}
}

// Kitex over WebSocket through Go's standard reverse proxy, which rewrites
// Host as nginx's recipe does: every call gets through.
func TestWebSocketThroughAHostRewritingProxy(t *testing.T) {
	var ws transportCase
	for _, tc := range cases() {
		if tc.kind == transport.WebSocket {
			ws = tc
		}
	}
	f := startFixture(t, ws)
	proxy := testutil.StartReverseProxy(t, f.addr, false)
	if failed := callsEvery(clientVia(t, f, proxy), 20, 10*time.Millisecond, nil); len(failed) != 0 {
		t.Fatalf("%d of 20 calls failed: %v", len(failed), failed)
	}
}

// A WebSocket client that never answers the server's pings (it never
// reads) costs the others nothing, and its connection is closed at the
// server's IdleTimeout.
func TestWebSocketClientThatNeverAnswersPings(t *testing.T) {
	var ws transportCase
	for _, tc := range cases() {
		if tc.kind == transport.WebSocket {
			ws = tc
		}
	}
	f := startFixtureWith(t, ws, func(c *transport.ServerConfig) {
		c.WebSocket.PingInterval = 20 * time.Millisecond
		c.IdleTimeout = 700 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	silent, err := websocket.Dial(ctx, f.addr, websocket.DialerConfig{PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	if failed := callsEvery(f.cli, 20, 20*time.Millisecond, nil); len(failed) != 0 {
		t.Fatalf("%d of 20 calls failed next to the silent client: %v", len(failed), failed)
	}
	err = testutil.ReadUntilError(silent, 5*time.Second)
	if testutil.IsTimeout(err) {
		t.Fatal("the silent client's connection is still open after 5 s")
	}
	t.Logf("silent connection closed after %v: %v", time.Since(start).Round(10*time.Millisecond), err)
}
