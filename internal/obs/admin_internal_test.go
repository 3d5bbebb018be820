package obs

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The admin port cuts clients that hold connections (idle after a request,
// or trickling a request) and refuses oversized headers: probes and scrapes
// are small and quick.
func TestAdminBoundsClients(t *testing.T) {
	saved := adminTimeouts
	adminTimeouts.header, adminTimeouts.read, adminTimeouts.idle = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { adminTimeouts = saved })
	a, err := StartAdmin("127.0.0.1:0", prometheus.NewRegistry(), func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(time.Second) })
	addr := a.Addr().String()

	// Idle after a request on a kept-alive connection.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v, %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	began := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("an idle kept-alive connection: read %v after %v, want EOF (closed by the server)", err, time.Since(began))
	}
	t.Logf("idle connection closed after %v", time.Since(began).Round(time.Millisecond))

	// A request trickled byte by byte never completes.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	began = time.Now()
	req := "GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Slow: " + strings.Repeat("a", 200)
	for i := 0; i < len(req); i++ {
		if _, err := c2.Write([]byte{req[i]}); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if time.Since(began) > 3*time.Second {
			t.Fatal("a trickled request kept its connection for 3 s")
		}
	}
	_ = c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a trickled request's connection is still open")
	}

	// Headers over the cap.
	r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	r.Header.Set("X-Big", strings.Repeat("b", 2*AdminMaxHeaderBytes))
	resp, err = http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("%d KiB of headers: %d, want 431", 2*AdminMaxHeaderBytes>>10, resp.StatusCode)
	}
}
