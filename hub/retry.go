package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Clock lets tests observe and skip the waits between retries.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done, whichever comes first, and
	// returns ctx.Err() in the latter case.
	Sleep(ctx context.Context, d time.Duration) error
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retry policy, as in huggingface_hub.utils._http.http_backoff: up to 5
// retries after the first attempt, waiting 1 s and doubling up to 8 s; on 429
// the server's RateLimit reset (or Retry-After) plus one second wins.
const (
	defaultMaxRetries = 5
	backoffBase       = 1 * time.Second
	backoffCap        = 8 * time.Second
	// backoffJitter is the largest extra fraction added to an exponential
	// wait, so that many clients failing together do not retry in lockstep.
	// Server-requested waits are honoured exactly (no jitter).
	backoffJitter = 0.25
	// rateLimitSlack is added to a server-requested wait, as the Python
	// client does, "to avoid rounding issues".
	rateLimitSlack = 1 * time.Second
	// maxServerWait bounds a server-requested wait so a bogus header cannot
	// park a worker for hours.
	maxServerWait = 10 * time.Minute
)

// backoff computes successive waits. It is the one place that decides how long
// to wait before a retry; every retrying loop in the package uses it.
type backoff struct {
	clock   Clock
	retries int // retries done so far
	max     int
	next    time.Duration
	jitter  func() float64 // in [0,1)
}

func (c *Client) newBackoff() *backoff {
	return &backoff{clock: c.clock, max: c.maxRetries, next: backoffBase, jitter: rand.Float64}
}

// wait sleeps before the next retry and reports whether one is allowed.
// serverWait, when positive, is the server's requested delay (already
// including the slack). It returns ctx.Err() if the context ends first.
func (b *backoff) wait(ctx context.Context, serverWait time.Duration) (bool, error) {
	if b.retries >= b.max {
		return false, nil
	}
	b.retries++
	d := serverWait
	if d <= 0 {
		d = b.next + time.Duration(float64(b.next)*backoffJitter*b.jitter())
	}
	b.next = min(backoffCap, b.next*2)
	if err := b.clock.Sleep(ctx, d); err != nil {
		return false, err
	}
	return true, nil
}

// exhausted reports whether every allowed retry has been used.
func (b *backoff) exhausted() bool { return b.retries >= b.max }

// reset forgets earlier failures, after progress has been made.
func (b *backoff) reset() {
	b.retries = 0
	b.next = backoffBase
}

// rateLimitRE parses the IETF draft RateLimit header the Hub sends, e.g.
// `"api";r=0;t=55` (r remaining requests, t seconds until the window resets).
var rateLimitRE = regexp.MustCompile(`"(\w+)"\s*;\s*r\s*=\s*(\d+)\s*;\s*t\s*=\s*(\d+)`)

// retryAfter returns how long the server asked us to wait, slack included,
// and whether it asked at all. Like huggingface_hub, a 429 whose RateLimit
// header says r=0 waits t+1 s; otherwise a numeric Retry-After (on any
// retryable status) waits its value + 1 s. HTTP-date Retry-After values are
// ignored, as in Python.
func retryAfter(h http.Header, status int) (time.Duration, bool) {
	if status == http.StatusTooManyRequests {
		if m := rateLimitRE.FindStringSubmatch(h.Get("RateLimit")); m != nil && m[2] == "0" {
			t, err := strconv.Atoi(m[3])
			if err == nil {
				return capWait(time.Duration(t)*time.Second + rateLimitSlack), true
			}
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return capWait(time.Duration(n)*time.Second + rateLimitSlack), true
		}
	}
	return 0, false
}

func capWait(d time.Duration) time.Duration { return min(d, maxServerWait) }

// retryableStatus is huggingface_hub's _DEFAULT_RETRY_ON_STATUS_CODES.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryableNetErr reports whether a transport error is worth retrying: any
// error while the caller's context is still live (a client timeout included,
// as Python retries timeouts), unless it is a permanent *Error.
func retryableNetErr(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var he *Error
	if errors.As(err, &he) {
		return he.Retryable()
	}
	return true
}
