package backoff

import (
	"testing"
	"time"
)

func TestNextGrowsWithinBoundsAndResets(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	// 100 ms, then Growth (1.5x) per attempt up to the maximum: 150 ms,
	// 225 ms, 337.5 ms, 506.25 ms, 759.375 ms, 1 s, 1 s.
	cur := 100 * time.Millisecond
	for i := range 8 {
		if d := b.Next(); d < cur/2 || d > cur {
			t.Fatalf("step %d: delay %v outside [%v, %v]", i, d, cur/2, cur)
		}
		cur = min(time.Duration(float64(cur)*Growth), time.Second)
	}
	b.Reset()
	if d := b.Next(); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("after Reset: delay %v, want the minimum's range", d)
	}
}

func TestMaxBelowMinIsMin(t *testing.T) {
	b := New(200*time.Millisecond, time.Millisecond)
	for range 5 {
		if d := b.Next(); d < 100*time.Millisecond || d > 200*time.Millisecond {
			t.Fatalf("delay %v, want within [100ms, 200ms] (max below min means min)", d)
		}
	}
}

// TestRetriesSpreadOut checks the jitter: peers that fail together do not
// retry together.
func TestRetriesSpreadOut(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[New(time.Second, time.Second).Next()] = true
	}
	if len(seen) < 90 {
		t.Fatalf("100 peers drew only %d distinct delays", len(seen))
	}
}

// A minimum of a nanosecond or two (a mistaken setting) still grows to the
// maximum: 1.5 times 1 ns rounds down to 1 ns, which would retry at once
// forever.
func TestTinyMinimumStillGrows(t *testing.T) {
	for _, low := range []time.Duration{0, 1, 2} {
		b := New(low, time.Millisecond)
		for range 100 {
			b.Next()
		}
		if b.cur != time.Millisecond {
			t.Fatalf("from %v: after 100 attempts the delay is %v, want the maximum, 1ms", low, b.cur)
		}
	}
}
