// Package backoff is the exponential backoff with jitter that every retry
// loop of the project uses.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff doubles a delay from a minimum up to a maximum. It is not safe
// for concurrent use; each retry loop owns one.
type Backoff struct {
	min, max, cur time.Duration
}

// New returns a Backoff starting at min and never above max.
func New(min, max time.Duration) *Backoff {
	if max < min {
		max = min
	}
	return &Backoff{min: min, max: max, cur: min}
}

// Next returns the delay to wait now, between half and all of the current
// delay (so that peers retrying together spread out), and doubles the
// current delay up to the maximum.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d/2 + time.Duration(rand.Int64N(int64(d)/2+1))
}

// Reset starts again from the minimum.
func (b *Backoff) Reset() { b.cur = b.min }
