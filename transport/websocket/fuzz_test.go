package websocket_test

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// upgrade is a valid upgrade request for the default path.
const upgrade = "GET /kitex HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// FuzzListener sends arbitrary bytes to a real WebSocket listener, either as
// the HTTP request itself or as WebSocket frames after a valid upgrade
// (unmasked, wrong opcodes, huge lengths, bad close frames…). The listener
// must never panic, must bound the connection (it closes, or answers, or
// waits for more bytes of a frame while other clients are served), and must
// go on serving a well-behaved client after every input. `make test` runs
// the seeds; `go test -fuzz FuzzListener ./transport/websocket` explores.
func FuzzListener(f *testing.F) {
	f.Add(false, []byte("GET /kitex HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(false, []byte("GET /kitex HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n"))
	f.Add(false, []byte("POST /kitex HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nabc"))
	f.Add(false, []byte("\x00\x01\x02\xff garbage"))
	f.Add(false, []byte(upgrade[:40]))
	f.Add(true, []byte{0x82, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4})             // a good masked binary frame
	f.Add(true, []byte{0x82, 0x04, 'p', 'i', 'n', 'g'})                                         // unmasked (a client must mask)
	f.Add(true, []byte{0x8f, 0x80, 0, 0, 0, 0})                                                 // reserved opcode
	f.Add(true, []byte{0xf2, 0x80, 0, 0, 0, 0})                                                 // reserved bits set
	f.Add(true, []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}) // 2^63-1 bytes announced
	f.Add(true, []byte{0x88, 0x81, 0, 0, 0, 0, 0x03})                                           // close frame with a 1-byte body
	f.Add(true, []byte{0x89, 0xfe, 0xff, 0xff, 0, 0, 0, 0})                                     // a 64 KiB ping (control frames are at most 125)
	f.Add(true, []byte{0x02, 0x81, 0, 0, 0, 0, 'a', 0x80, 0x81, 0, 0, 0, 0, 'b'})               // fragmented message
	f.Add(true, []byte{0x80, 0x81, 0, 0, 0, 0, 'a'})                                            // an orphan continuation
	f.Add(true, []byte{0x02, 0x81, 0, 0, 0, 0, 'a', 0x82, 0x81, 0, 0, 0, 0, 'b'})               // a new message inside a fragmented one
	f.Add(true, []byte{0x82, 0xfe, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'})                  // a 5-byte length in 16 bits (not minimal)
	f.Add(true, []byte{0x88, 0x82, 0, 0, 0, 0, 0, 0})                                           // close code 0
	f.Add(true, []byte{})

	l := listen(f, websocket.ListenerConfig{HandshakeTimeout: 500 * time.Millisecond})
	acceptEcho(f, l)
	addr := l.Addr().String()

	f.Fuzz(func(t *testing.T, upgraded bool, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if upgraded {
			if _, err := c.Write([]byte(upgrade)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("valid upgrade refused: %v %v", resp, err)
			}
		}
		_, _ = c.Write(data)
		// Read whatever comes back for a moment; the server must not hang
		// the test (the deadline bounds it) and must not crash.
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		roundTrip(t, addr, websocket.DialerConfig{})
	})
}
