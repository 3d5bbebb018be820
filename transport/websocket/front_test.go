package websocket_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// exchange sends req, in pieces of at most chunk bytes (all at once if
// chunk is 0), then one masked binary frame carrying "hello", and returns
// the answer. On a 101 it checks that the frame comes back.
func exchange(t *testing.T, addr, req string, chunk int) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	key := []byte{9, 8, 7, 6}
	frame := []byte{0x82, 0x80 | 5, 9, 8, 7, 6}
	for i, b := range []byte("hello") {
		frame = append(frame, b^key[i%4])
	}
	out := []byte(req)
	if chunk == 0 {
		out = append(out, frame...) // the frame right behind the request
		chunk = len(out)
	}
	for len(out) > 0 {
		n := min(chunk, len(out))
		if _, err := c.Write(out[:n]); err != nil {
			t.Fatal(err)
		}
		out = out[n:]
		if len(out) > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp
	}
	if chunk != len(req)+len(frame) { // sent in pieces: the frame goes now
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "\x82\x05hello" {
		t.Fatalf("echo %q, %v; want an unmasked binary frame with hello", got, err)
	}
	return resp
}

// The listener reads plain upgrade requests itself (see front.go) and
// passes every other request on to its HTTP server: both answer as RFC
// 6455 asks, whichever reads the request, however it is cut, and refusals
// are reported and logged as before.
func TestUpgradeRequestsReadByTheFrontOrTheHTTPServer(t *testing.T) {
	var rej rejections
	l := listen(t, websocket.ListenerConfig{OnReject: rej.record, HandshakeTimeout: 2 * time.Second})
	acceptEcho(t, l)
	addr := l.Addr().String()
	const (
		line = "GET /kitex HTTP/1.1\r\n"
		good = "Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	)
	for _, tt := range []struct {
		name, req   string
		chunk, want int
		protocol    string // the answer's Sec-WebSocket-Protocol
	}{
		{"front, whole", line + good + "\r\n", 0, 101, ""},
		{"front, a byte at a time", line + good + "\r\n", 1, 101, ""},
		{"front, header names in any case", line + strings.ToUpper(good[:8]) + good[8:] + "\r\n", 0, 101, ""},
		{"http server, headers longer than the front reads", line + good + "X-Pad: " + strings.Repeat("p", 5000) + "\r\n\r\n", 0, 101, ""},
		{"http server, one subprotocol", line + good + "Sec-WebSocket-Protocol: kitex\r\n\r\n", 0, 101, "kitex"},
		{"http server, same origin", line + good + "Origin: http://x\r\n\r\n", 0, 101, ""},
		{"HTTP/1.0", strings.Replace(line, "1.1", "1.0", 1) + good + "\r\n", 0, 400, ""},
		{"version 8", line + strings.Replace(good, "Version: 13", "Version: 8", 1) + "\r\n", 0, 400, ""},
		{"key of 4 bytes", line + strings.Replace(good, "dGhlIHNhbXBsZSBub25jZQ==", "AQIDBA==", 1) + "\r\n", 0, 400, ""},
		{"no key", line + strings.Replace(good, "Sec-WebSocket-Key", "X-Key", 1) + "\r\n", 0, 400, ""},
		{"two keys", line + good + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n", 0, 400, ""},
		{"two versions", line + good + "Sec-WebSocket-Version: 13\r\n\r\n", 0, 400, ""},
		{"no upgrade", line + strings.Replace(good, "Upgrade: websocket", "Upgrade: h2c", 1) + "\r\n", 0, 426, ""},
		{"two subprotocols", line + good + "Sec-WebSocket-Protocol: a, b\r\n\r\n", 0, 400, ""},
		{"foreign origin", line + good + "Origin: http://evil.example\r\n\r\n", 0, 403, ""},
		{"a control character", line + "Host: x\r\nX-Bad: a\x01b\r\n" + good[9:] + "\r\n", 0, 400, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := rej.count()
			resp := exchange(t, addr, tt.req, tt.chunk)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want != 101 {
				// The HTTP server refuses a malformed request itself; the
				// listener reports the others.
				if reported := rej.count() - before; reported != 1 && tt.name != "a control character" {
					t.Fatalf("OnReject called %d times, want once", reported)
				}
				if tt.name == "version 8" && resp.Header.Get("Sec-WebSocket-Version") != "13" {
					t.Fatalf("a refused version's answer names %q, want 13", resp.Header.Get("Sec-WebSocket-Version"))
				}
				return
			}
			// RFC 6455 1.3's example key and its accept value.
			if resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Fatalf("Sec-WebSocket-Accept %q", resp.Header.Get("Sec-WebSocket-Accept"))
			}
			if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
				t.Fatalf("answer headers %v", resp.Header)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.protocol {
				t.Fatalf("subprotocol %q, want %q", got, tt.protocol)
			}
		})
	}
	roundTrip(t, addr, websocket.DialerConfig{})
}
