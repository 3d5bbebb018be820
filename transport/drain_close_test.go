package transport_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/transport"
)

// Closing a netpoll server's listener closes its descriptors once: sockets
// that other goroutines open meanwhile keep theirs. (netpoll v0.7.2's own
// Close closes one descriptor twice, which closed such sockets.)
func TestNetpollListenerCloseSparesOtherSockets(t *testing.T) {
	stop := make(chan struct{})
	var broken atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { // open, use and close listeners as fast as possible
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					continue
				}
				c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
				if err != nil {
					broken.Add(1)
				} else {
					_ = c.Close()
				}
				_ = ln.Close()
			}
		}()
	}
	for range 5000 {
		_, ln, err := transport.ServerOptions(transport.ServerConfig{Kind: transport.Netpoll, Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		_ = ln.Close()
	}
	close(stop)
	wg.Wait()
	if n := broken.Load(); n > 0 {
		t.Fatalf("%d listeners of other goroutines lost their socket while netpoll listeners closed", n)
	}
}
