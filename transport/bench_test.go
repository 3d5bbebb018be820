package transport_test

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
)

// BenchmarkEcho1KiB16 calls echo with a 1 KiB message from 16 concurrent
// callers (8 per GOMAXPROCS on 2 cores) over each transport, client and
// server in one process. It reports calls/s; `make bench` (its own issue)
// measures in separate processes.
func BenchmarkEcho1KiB16(b *testing.B) {
	msg := strings.Repeat("x", 1024)
	for _, tc := range cases() {
		b.Run(string(tc.kind), func(b *testing.B) {
			f := startFixture(b, tc)
			b.SetParallelism(16 / max(1, procs()))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := &api.Request{Message: msg}
				for pb.Next() {
					if _, err := f.cli.Echo(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

func procs() int { return runtime.GOMAXPROCS(0) }
