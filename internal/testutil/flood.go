package testutil

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HoldHandshakes plays a client that holds handshake slots of the listener
// at addr from the source address 127.0.0.2: conns connections at once,
// each writing prelude (if any) and then nothing, and dialing again as soon
// as the listener closes one. It returns once the listener has accepted
// and closed at least conns connections (so its limits are in force), and
// stops when the test ends.
func HoldHandshakes(t testing.TB, addr string, conns int, prelude []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var held atomic.Int64
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				held.Add(1)
				if len(prelude) > 0 {
					_, _ = c.Write(prelude)
				}
				stop := context.AfterFunc(ctx, func() { _ = c.Close() })
				_, _ = c.Read(make([]byte, 1)) // until the listener closes it
				stop()
				_ = c.Close()
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	for held.Load() < int64(2*conns) {
		time.Sleep(5 * time.Millisecond)
	}
}
