package daemon

import (
	"math/rand/v2"
	"time"
)

// Clock is the daemon's source of time, injected so that tests control
// schedules and backoff without sleeping.
type Clock interface {
	Now() time.Time
	// After fires once d has elapsed (immediately for d <= 0).
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// backoffDelay is the wait before attempt+1 after `attempt` failed attempts
// (attempt >= 1): base*2^(attempt-1) capped at max, with "equal jitter" —
// half fixed, half uniform — so that jobs failing together (a Hub outage)
// do not retry in lockstep, while the delay never drops below half the
// nominal one. rnd returns a float64 in [0, 1).
func backoffDelay(attempt int, base, max time.Duration, rnd func() float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 { // d <= 0: overflow
		d = max
	}
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// defaultRand is the jitter source outside tests.
func defaultRand() func() float64 { return rand.Float64 }
