package tunnel_test

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

// helloBytes is a well-formed version 3 agent hello (identity, slot,
// dialed address, nonce).
func helloBytes(id string, slot byte, addr string) []byte {
	b := append([]byte("KXTN\x03"), slot, byte(len(id)))
	b = append(b, id...)
	b = append(b, byte(len(addr)))
	b = append(b, addr...)
	return append(b, bytes.Repeat([]byte{7}, 32)...)
}

// FuzzGatewayHandshake sends arbitrary bytes to a real gateway as the first
// bytes of a connection. Whatever they are, the gateway must answer or close
// within its handshake timeout, never accept a session (no input can prove
// the token to a fresh nonce), never panic, and keep serving the
// legitimate agent. `make test` runs the seeds; `go test -fuzz
// FuzzGatewayHandshake ./transport/tunnel` explores.
func FuzzGatewayHandshake(f *testing.F) {
	proof := bytes.Repeat([]byte{1}, 1+16+32)
	f.Add(helloBytes("agent-1", 0, ""))
	f.Add(append(helloBytes("agent-1", 0, ""), proof...)) // a proof that cannot match
	f.Add(append(helloBytes("good", 0, ""), proof...))    // the live identity, without the token
	f.Add(append(helloBytes("agent-1", 0, ""), 9))        // proof index beyond the gateway's proofs
	f.Add(helloBytes("bad/identity", 0, ""))
	f.Add(helloBytes("", 0, ""))
	f.Add(helloBytes(strings.Repeat("a", 200), 0, ""))
	f.Add(helloBytes("agent-1", 200, ""))                                 // session slot out of range
	f.Add(helloBytes("agent-1", 3, strings.Repeat("x", 255)))             // long address
	f.Add(helloBytes("agent-1", 0, "")[:20])                              // nonce cut short
	f.Add(append(helloBytes("a", 0, ""), bytes.Repeat([]byte{0}, 64)...)) // trailing bytes
	f.Add([]byte("KXTN\x01\x01a\x00\x1fs3cret-token-for-the-tests-0123")) // version 1: token in clear
	f.Add([]byte("KXTN\x02\x01a\x00\x01x\x03"))                           // version 2
	f.Add([]byte("KXTN\x09\x00"))                                         // unknown version
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05}) // a TLS ClientHello on a plain gateway
	f.Add([]byte{})

	gw := startGateway(f, "127.0.0.1:0")
	addr := gw.Addr().String()
	good := startAgent(f, "good", addr)
	waitAgents(f, gw, 1)
	cli := newClient(f, gw)

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(data)
		// The gateway's handshake timeout is 500 ms: it must have answered or
		// closed well before this deadline.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				if testutil.IsTimeout(err) {
					t.Fatalf("gateway kept the connection open after %q", data)
				}
				break
			}
		}
		if ids := gw.Agents(); len(ids) != 1 || ids[0] != "good" {
			t.Fatalf("after %q the agents are %v, want only the legitimate one", data, ids)
		}
		if got, err := call(cli, "ping"); err != nil || got != "good:ping" {
			t.Fatalf("after %q the gateway no longer serves: %q, %v", data, got, err)
		}
		if good.agent.Stats().Reconnects != 0 {
			t.Fatalf("after %q the legitimate agent lost its session", data)
		}
	})
}
