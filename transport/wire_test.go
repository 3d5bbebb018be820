package transport_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	xws "golang.org/x/net/websocket"

	"github.com/anyconn/kitex-anyconn/transport"
)

// The wire is standard Thrift: a client that knows nothing of Kitex, writing
// the Thrift binary protocol by hand in a Framed transport (on TCP, or as one
// binary WebSocket message), gets the echo reply.
func TestStandardThriftWire(t *testing.T) {
	for _, tc := range cases() {
		if tc.kind == transport.Yamux {
			continue // its streams are reached through the tunnel, not an address
		}
		t.Run(string(tc.kind), func(t *testing.T) {
			f := startFixture(t, tc)
			for i, msg := range []string{"", "plain thrift", string(bytes.Repeat([]byte("z"), 200_000))} {
				req := framedCall("echo", int32(i+1), msg)
				var reply []byte
				if tc.kind == transport.WebSocket {
					reply = webSocketExchange(t, f.addr, req)
				} else {
					reply = tcpExchange(t, f.addr, req)
				}
				got, err := decodeEchoReply(reply, int32(i+1))
				if err != nil {
					t.Fatalf("reply to a %d-byte message: %v", len(msg), err)
				}
				if got != msg {
					t.Fatalf("reply carries %d bytes, want %d", len(got), len(msg))
				}
			}
		})
	}
}

func tcpExchange(t *testing.T, addr string, req []byte) []byte {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return append(size[:], body...)
}

// webSocketExchange sends the framed request as one binary message with
// golang.org/x/net/websocket's own client and expects the framed reply as
// one binary message.
func webSocketExchange(t *testing.T, addr string, req []byte) []byte {
	cfg, err := xws.NewConfig("ws://"+addr+"/kitex", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := xws.Message.Send(ws, req); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	if err := xws.Message.Receive(ws, &reply); err != nil {
		t.Fatal(err)
	}
	return reply
}

// framedCall encodes Echo.echo(Request{message}) in Thrift's strict binary
// protocol inside a Framed transport.
func framedCall(method string, seq int32, message string) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0x80010001) // version 1, CALL
	b = appendString(b, method)
	b = binary.BigEndian.AppendUint32(b, uint32(seq))
	b = append(b, 12, 0, 1) // field 1 (req): struct
	b = append(b, 11, 0, 1) // field 1 (message): string
	b = appendString(b, message)
	b = append(b, 0) // end of Request
	b = append(b, 0) // end of the arguments
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// decodeEchoReply reads a framed REPLY to echo and returns Response.message.
func decodeEchoReply(b []byte, seq int32) (string, error) {
	r := &reader{b: b}
	if size := r.u32(); int(size) != len(b)-4 {
		return "", fmt.Errorf("frame size %d, but %d bytes follow", size, len(b)-4)
	}
	if v := r.u32(); v != 0x80010002 {
		return "", fmt.Errorf("message header %#x, want a strict REPLY", v)
	}
	if name := r.str(); name != "echo" {
		return "", fmt.Errorf("method %q", name)
	}
	if got := int32(r.u32()); got != seq {
		return "", fmt.Errorf("sequence id %d, want %d", got, seq)
	}
	if typ, id := r.byte(), r.u16(); typ != 12 || id != 0 {
		return "", fmt.Errorf("result field type %d id %d, want success (struct, 0)", typ, id)
	}
	if typ, id := r.byte(), r.u16(); typ != 11 || id != 1 {
		return "", fmt.Errorf("response field type %d id %d, want message (string, 1)", typ, id)
	}
	msg := r.str()
	if r.byte() != 0 || r.byte() != 0 || r.err != nil {
		return "", fmt.Errorf("malformed end of reply: %v", r.err)
	}
	return msg, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = io.ErrUnexpectedEOF
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte  { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) str() string { return string(r.take(int(r.u32()))) }
