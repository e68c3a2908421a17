package meetingapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxHold caps the pause one Retry-After can impose: the longest wait
// between two polls, and a guard against a broken gateway that names a day.
// An API that is still not ready after it answers 429 again and names a new
// pause.
const maxHold = 5 * time.Minute

// Gate holds every request to the API until the pause the API last asked
// for is over. A 429 or 503 answer with a Retry-After header (seconds or an
// HTTP date) closes it until then: page requests of every listing in flight
// or to come, end lookups and logins wait for it alike, so that concurrent
// page fetchers do not each spend a request to learn the same thing. A
// Client and the TokenSource that serves it share one (ClientConfig.Gate,
// LoginConfig.Gate), and the watcher reads it through Client.NotBefore so
// that it does not poll before the pause is over.
//
// The zero value is open. A Gate is safe for concurrent use.
type Gate struct {
	mu        sync.Mutex
	notBefore time.Time
}

// NotBefore returns the time before which no request may be sent; it is in
// the past, or zero, while the gate is open.
func (g *Gate) NotBefore() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notBefore
}

// Wait returns once the gate is open, or with ctx's cause when ctx ends
// first. When the gate opens only after ctx's deadline it fails at once with
// ErrThrottled: waiting would only end in that deadline.
func (g *Gate) Wait(ctx context.Context) error {
	for {
		nb := g.NotBefore()
		d := time.Until(nb)
		if d <= 0 {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && dl.Before(nb) {
			return fmt.Errorf("%w: no request before %s", ErrThrottled, nb.Format(time.RFC3339))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the api's Retry-After: %w", context.Cause(ctx))
		case <-t.C:
			// The pause may have grown meanwhile: look again.
		}
	}
}

// admit waits for the gate, then for budget (nil: none), then for the gate
// again, since a pause the API asked for while this request waited for its
// turn in the budget holds it too.
func (g *Gate) admit(ctx context.Context, budget func(context.Context) error) error {
	if err := g.Wait(ctx); err != nil {
		return err
	}
	if budget != nil {
		if err := budget(ctx); err != nil {
			return err
		}
	}
	return g.Wait(ctx)
}

// heed reads an answer's Retry-After and returns how long it asks to wait
// (0 when it names no wait), capped at maxHold, whatever the status. When
// the answer is a 429 or a 503, it closes the gate that long, unless it is
// closed longer already.
func (g *Gate) heed(status int, h http.Header, now time.Time) time.Duration {
	d := min(retryAfter(h, now), maxHold)
	if d <= 0 || (status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable) {
		return d
	}
	until := now.Add(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if until.After(g.notBefore) {
		g.notBefore = until
	}
	return d
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	const most = 24 * 60 * 60 // seconds: a day is plenty, and cannot overflow
	switch secs, err := strconv.ParseUint(v, 10, 64); {
	case err == nil:
		return time.Duration(min(secs, most)) * time.Second
	case errors.Is(err, strconv.ErrRange): // digits past any wait worth counting
		return most * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
