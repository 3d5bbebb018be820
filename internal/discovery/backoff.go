package discovery

import (
	"math/rand/v2"
	"time"
)

// backoff doubles a delay from min up to max and adds up to 20% jitter.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur *= 2
	if b.cur > b.max {
		b.cur = b.max
	}
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

func (b *backoff) reset() { b.cur = b.min }
