// Package backoff is the one retry policy of meetwatch: a jittered
// exponential backoff that resets on success.
//
// Every retry loop (a page request, an unacknowledged event, a NATS that is
// not up yet, a poll the API rejects) uses it, so that they all spread out
// their attempts the same way and a fleet of replicas that failed together
// does not retry in lockstep.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff hands out the waits between the attempts of one retry loop. The
// zero value is not usable; fill Base and Max. A Backoff is not safe for
// concurrent use: each loop owns its own.
type Backoff struct {
	// Base is the wait before the first retry, before jitter.
	Base time.Duration
	// Max caps every wait, before jitter.
	Max time.Duration
	// Jitter, when set, draws a number in [0, n); nil means math/rand/v2.
	// Tests set it to make waits exact.
	Jitter func(n int64) int64

	failures int
}

// Next returns the wait after one more failure: Base doubled per failure
// since the last Reset, capped at Max, then drawn from its upper half
// ("equal jitter"), so that a wait never collapses to nothing.
func (b *Backoff) Next() time.Duration {
	d := delay(b.Base, b.Max, b.failures)
	b.failures++
	half := int64(d / 2)
	n := b.Jitter
	if n == nil {
		n = rand.Int64N
	}
	return time.Duration(half + n(half+1))
}

// Reset starts the sequence again, after a success.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures returns the failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// delay returns the wait before jitter after attempt failures (0-based):
// base doubled attempt times, capped at maxWait.
func delay(base, maxWait time.Duration, attempt int) time.Duration {
	d := base << min(attempt, 32)
	if d <= 0 || d > maxWait || d>>min(attempt, 32) != base {
		d = maxWait
	}
	return d
}
