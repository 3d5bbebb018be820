package backoff

import (
	"testing"
	"time"
)

func TestNextDoublesWithinBoundsAndResets(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	for i, cur := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		cur *= time.Millisecond
		if d := b.Next(); d < cur/2 || d > cur {
			t.Fatalf("step %d: delay %v outside [%v, %v]", i, d, cur/2, cur)
		}
	}
	b.Reset()
	if d := b.Next(); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("after Reset: delay %v, want the minimum's range", d)
	}
}
