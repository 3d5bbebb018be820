package tunnel

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// An authenticated agent that opens streams of its own (a gateway expects
// one, the leave notice) and fills them cannot grow the gateway's heap: its
// session is closed. The agent side here is the real handshake and a raw
// yamux session, so it can do what a real Agent never does.
func TestAgentStreamFloodClosesSession(t *testing.T) {
	const tok = "flood-test-token-0123456789"
	gw, err := Listen("127.0.0.1:0", GatewayConfig{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	a, err := NewAgent(AgentConfig{ID: "flooder", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.connect(ctx, &target{addr: gw.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	sess := s.sess
	defer sess.Close()

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const streams, size = 1024, 256 << 10
	payload := make([]byte, size)
	opened := 0
	for range streams {
		st, err := sess.OpenStream()
		if err != nil {
			break
		}
		_ = st.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := st.Write(payload); err != nil {
			break
		}
		opened++
	}
	grown := int64(heap()) - int64(before)
	t.Logf("%d streams of %d KiB sent; heap grew by %.1f MiB", opened, size>>10, float64(grown)/(1<<20))
	if grown > 32<<20 {
		t.Errorf("heap grew by %d MiB under the stream flood, want under 32", grown>>20)
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(5 * time.Second):
		t.Error("the gateway kept the session of an agent that opened streams it may not")
	}
}
