package transport_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/transport"
)

// frame is a Thrift Framed message: 4-byte length, then body.
func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// FuzzServerInput sends arbitrary bytes to a real Kitex server on the netpoll,
// gonet and WebSocket transports (the WebSocket connection reaches Kitex
// through the connection adapter, connadapt): as raw TCP, or as the payload
// of a WebSocket connection. Whatever arrives, the server must not panic and
// must answer the next well-formed call. (The tunnel's own input is fuzzed by
// FuzzGatewayHandshake.) `make test` runs the seeds; explore with
// `go test -fuzz FuzzServerInput ./transport`.
func FuzzServerInput(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x10this is not thrift at all\r\n\r\n"))
	f.Add(frame(""))
	f.Add(frame("\x80\x01\x00\x01\x00\x00\x00\x04Echo\x00\x00\x00\x01\x00")) // a call whose struct never ends
	f.Add(frame("\x80\x01\x00\x01\x00\x00\x00\x04Nope\x00\x00\x00\x01\x00")) // unknown method
	f.Add(frame("\x80\x01\x00\x01\xff\xff\xff\xffEcho"))                     // method name length -1
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})                                    // a 2 GiB frame announced
	f.Add([]byte{0x80, 0x00, 0x00, 0x00})                                    // negative frame size
	f.Add(frame("\x0f\x0f\x0f\x0f\x0f"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(bombCall(256<<20, true))  // a string declared 256 MiB long, framed
	f.Add(bombCall(256<<20, false)) // the same, unframed (refused)
	f.Add(bombCall(3, true))        // a string declared longer than the frame
	f.Add([]byte{})

	type target struct {
		kind transport.Kind
		f    *fixture
	}
	var targets []target
	for _, tc := range cases() {
		if tc.kind == transport.Yamux {
			continue
		}
		targets = append(targets, target{tc.kind, startFixture(f, tc)})
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, tg := range targets {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := rawDial(ctx, tg.kind, tg.f.rawAddr)
			if err != nil {
				cancel()
				t.Fatalf("%s: dial: %v", tg.kind, err)
			}
			_, _ = c.Write(data)
			_ = testutil.ReadUntilError(c, 50*time.Millisecond)
			c.Close()
			resp, err := tg.f.cli.Echo(ctx, &api.Request{Message: "still serving"})
			cancel()
			if err != nil || resp.Message != "still serving" {
				t.Fatalf("%s: after %q the server does not answer: %v, %v", tg.kind, data, resp, err)
			}
		}
	})
}
