package testutil

import (
	"runtime"
	"runtime/metrics"
	"time"
)

// HeapMiB returns the live heap in MiB, after two collections (pooled
// buffers, sync.Pool's, go in the second).
func HeapMiB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// WatchHeap samples the heap's objects every 2 ms (live and not yet
// collected, without stopping the world) until the function it returns is
// called, which returns the highest sample in MiB: an upper bound of what
// was held in between.
func WatchHeap() (peak func() float64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() float64 {
		metrics.Read(sample)
		return float64(sample[0].Value.Uint64()) / (1 << 20)
	}
	stop, done := make(chan struct{}), make(chan float64)
	go func() {
		high := read()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- max(high, read())
				return
			case <-tick.C:
				high = max(high, read())
			}
		}
	}()
	return func() float64 {
		close(stop)
		return <-done
	}
}
