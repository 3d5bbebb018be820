package websocket_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// BenchmarkFraming compares this package's lean framing with x/net's own,
// both ends the same, on 1 KiB round trips over loopback TCP:
//
//	cd transport && go test -run '^$' -bench Framing -benchmem ./websocket
func BenchmarkFraming(b *testing.B) {
	for _, tc := range []struct {
		name string
		xnet bool
	}{{"lean", false}, {"xnet", true}} {
		b.Run(tc.name, func(b *testing.B) {
			lcfg, dcfg := websocket.ListenerConfig{}, websocket.DialerConfig{}
			if tc.xnet {
				lcfg, dcfg = websocket.XNetFraming(lcfg), websocket.XNetDialer(dcfg)
			}
			l := listen(b, lcfg)
			acceptEcho(b, l)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := websocket.Dial(ctx, l.Addr().String(), dcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, got := make([]byte, 1024), make([]byte, 1024)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
