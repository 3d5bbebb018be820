package tunnel_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// BenchmarkIdleSessionMemory reports the heap held per idle tunnel session,
// gateway and agent side together (both live in this process), over 200
// sessions.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const sessions = 200
	for i := 0; i < b.N; i++ {
		gw := startGateway(b, "127.0.0.1:0")
		before := heapInUse()
		var agents []*tunnel.Agent
		for j := 0; j < sessions; j++ {
			a, err := tunnel.NewAgent(tunnel.AgentConfig{ID: fmt.Sprintf("idle-%d", j), Token: token})
			if err != nil {
				b.Fatal(err)
			}
			a.SetGateways([]string{gw.Addr().String()})
			agents = append(agents, a)
		}
		waitAgents(b, gw, sessions)
		time.Sleep(200 * time.Millisecond)
		after := heapInUse()
		b.ReportMetric(float64(after-before)/sessions, "heap-bytes/session")
		for _, a := range agents {
			_ = a.Shutdown(context.Background())
		}
		_ = gw.Close()
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkReconnect reports how long after a cut of the agent's
// connection the first call succeeds again. Run it with -benchtime 1x: cuts
// that follow each other within 5 s find the backoff grown, on purpose.
func BenchmarkReconnect(b *testing.B) {
	gw := startGateway(b, "127.0.0.1:0")
	proxy := testutil.StartProxy(b, gw.Addr().String())
	startAgent(b, "reconnect", proxy.Addr())
	waitAgents(b, gw, 1)
	cli := newClient(b, gw)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		if _, err := call(cli, "warm"); err != nil {
			b.Fatal(err)
		}
		cut := time.Now()
		proxy.Cut()
		for {
			if _, err := call(cli, "again"); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(cut)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-first-call")
}
