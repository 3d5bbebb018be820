// Package backoff is the exponential backoff with jitter that every retry
// loop of the project uses.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Growth is how much the delay grows after each attempt: 1.5, not 2. A
// retry loop that waited through an outage of length T holds a delay of
// about T/3 when the peer comes back (T/2 when doubling), so after a
// gateway restart a thousand agents are back in about a third of the
// outage instead of half, and each refusal in a reconnect storm (a busy
// gateway) costs less extra waiting. Measured with `make bench-scale`
// (1,000 agents, 4 sessions each, a gateway down 5 s): every session back
// 3.8 s after the gateway listened again, 6.2 s with doubling.
const Growth = 1.5

// Backoff grows a delay from a minimum up to a maximum, by Growth per
// attempt. It is not safe for concurrent use; each retry loop owns one.
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
// delay (so that peers retrying together spread out), and grows the
// current delay by Growth (at least a nanosecond) up to the maximum.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(max(b.cur+b.cur/2, b.cur+1), b.max)
	return d/2 + time.Duration(rand.Int64N(int64(d)/2+1))
}

// Reset starts again from the minimum.
func (b *Backoff) Reset() { b.cur = b.min }
