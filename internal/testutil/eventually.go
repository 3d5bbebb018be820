package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test (naming what
// it waited for) if it does not within timeout. It polls every 5 ms at
// first, then less often (up to every 100 ms), so that a quick condition
// is seen at once and a costly one does not busy the machine. Call it from
// the test's goroutine.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(pause)
	}
}
