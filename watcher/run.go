package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot"
)

// The behaviours Run asks of its Lister and its Health when they have them.
// The adapters do; without them Run still polls, with a fixed deadline, no
// pause and no heartbeat.
type (
	// budgeted is a Lister that spends a request budget, so that Run can
	// tell when a poll needs more time than the interval gives.
	budgeted interface {
		Requests() int64
		BudgetTime(requests int64) time.Duration
	}
	// paced is a Lister that knows the time before which a request has no
	// use: the end of a pause the API asked for (Retry-After), or of a
	// refused login's backoff. Run does not poll before it.
	paced interface{ NotBefore() time.Time }
	// sizer is a Lister that learns from a listing's first page when the
	// whole listing should be done: see apiClock.
	sizer interface {
		ListingDeadline(since time.Time) time.Time
	}
	// heartbeat is a Health that hears that the loop is alive, and until
	// when it may go without hearing again: the loop's own deadline of the
	// moment (the poll's, or the end of the wait for the next one).
	heartbeat interface{ Alive(until time.Time) }
)

// maxAPITimeout caps how far the floor of a poll's API deadline grows
// when listings keep running out of time.
const maxAPITimeout = 15 * time.Minute

// MaxBackoff caps the wait after failed polls at the larger of interval
// and 30 s: long enough not to hammer an API that refuses them, short
// enough that events flow again within 30 s of the API's return, however
// long it was away. It is exported so that a refused login backs off the
// same way.
func MaxBackoff(interval time.Duration) time.Duration { return max(interval, 30*time.Second) }

// Lead runs a fresh Watcher for every term lease grants this replica, until
// ctx ends. Each term starts from the stored state: a standby that takes
// over knows only what the last leader committed.
func Lead(ctx context.Context, lease Lease, cfg Config) error {
	return lease.Run(ctx, func(lctx context.Context) {
		if cfg.Health != nil {
			cfg.Health.NewTerm()
		}
		// Run logs its own failures, and returns when lctx ends or a write
		// was fenced: either way the term is over.
		_ = New(cfg).Run(lctx)
	})
}

// Run polls now and then every Interval until ctx ends. Run returns nil
// when ctx ends, and an unfinished poll is abandoned with nothing
// committed; it returns ErrFenced as soon as a poll finds that this
// replica no longer leads, so that the term ends at once.
//
//   - A failed poll is logged, and the next one waits a jittered backoff
//     that starts at Interval, doubles with each failure in a row up to
//     MaxBackoff, and starts over after a success; never less than
//     Interval from the failed poll's start.
//   - No poll starts before the Lister's NotBefore, when it has one: a
//     pause the API asked for, or a refused login's backoff.
//   - The API part of a poll gets PollTimeout at least, and as long as the
//     listing's first page says the request budget needs (see apiClock).
//     A listing that runs out of time doubles PollTimeout for the next,
//     up to 15 minutes, unless a pause the API asked for is what held it;
//     a success brings it back.
//   - Health, when it listens, hears a heartbeat with the loop's deadline
//     at each poll's start, each time the poll's deadline moves, and at
//     the start of each wait.
func (w *Watcher) Run(ctx context.Context) error {
	clock := w.api
	budget, _ := w.cfg.Lister.(budgeted)
	pace, _ := w.cfg.Lister.(paced)

	failures := 0
	retry := backoff.Backoff{Base: w.cfg.Interval, Max: MaxBackoff(w.cfg.Interval)}
	tooSmall := false // the budget cannot fit a poll into the interval: said once a streak
	for {
		started := time.Now()
		w.beat(started.Add(clock.floor))
		var before int64
		if budget != nil {
			before = budget.Requests()
		}
		res, err := w.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if w.cfg.Observer != nil {
			w.cfg.Observer.Polled(res, time.Since(started), err)
		}
		if errors.Is(err, ErrFenced) {
			// Another replica leads, or this one's lease ran out on its
			// own clock: its term is over, whatever its lease says.
			w.logger.Warn("fenced: this replica stops leading", "err", err)
			return err
		}
		held := pace != nil && pace.NotBefore().After(started)
		switch {
		case err == nil:
			// Room for twice what this poll took: a listing that the
			// API's pace, not the budget, makes slow keeps the deadline
			// it needed, rather than fail every other poll.
			clock.floor = max(w.cfg.PollTimeout, min(clock.floor, 2*time.Since(started)))
		case (errors.Is(err, errPollTimeout) || errorIs(err, overBudget.OverBudget)) && !held:
			// Too short for this listing: give the next one longer, up to
			// a bound. A pause the API asked for is no reason to.
			clock.floor = min(clock.floor*2, max(maxAPITimeout, w.cfg.PollTimeout))
		}
		if err == nil && budget != nil {
			n := budget.Requests() - before
			need := budget.BudgetTime(n)
			switch {
			case need > w.cfg.Interval && !tooSmall:
				w.logger.Warn("the request budget cannot fit a poll into the interval; polls run back to back",
					"requests", n, "budget_needs_ms", need.Milliseconds(), "interval_ms", w.cfg.Interval.Milliseconds())
			case need <= w.cfg.Interval && tooSmall:
				w.logger.Info("the request budget fits a poll into the interval again",
					"requests", n, "budget_needs_ms", need.Milliseconds(), "interval_ms", w.cfg.Interval.Milliseconds())
			}
			tooSmall = need > w.cfg.Interval
		}

		next := started.Add(w.cfg.Interval)
		if err != nil {
			failures++
			w.logPollError(err, failures, res)
			if w.cfg.Health != nil {
				w.cfg.Health.PollFailed(err)
			}
			if after := time.Now().Add(retry.Next()); after.After(next) {
				next = after
			}
		} else {
			if failures > 0 {
				w.logger.Info("polling recovered", "consecutive_errors", failures)
			}
			failures = 0
			retry.Reset()
			w.logPoll(res)
		}
		if pace != nil {
			if nb := pace.NotBefore(); nb.After(next) && nb.After(time.Now()) {
				w.logger.Info("the api asked for a pause; the next poll waits for it", "not_before", nb)
				next = nb
			}
		}
		if now := time.Now(); next.Before(now) {
			next = now // the poll took longer than the interval: the next one starts now
		}
		w.beat(next)
		if !w.wait(ctx, next, failures > 0) {
			return nil
		}
	}
}

// wait returns at next, or sooner when Wake says that what failed the
// last polls may be back (failing), and false when ctx ends first. Even
// woken, it does not poll before a pause the API asked for.
func (w *Watcher) wait(ctx context.Context, next time.Time, failing bool) bool {
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-w.cfg.Wake:
			if !failing {
				continue
			}
			failing = false
			woken := time.Now()
			if pace, ok := w.cfg.Lister.(paced); ok && pace.NotBefore().After(woken) {
				woken = pace.NotBefore()
			}
			if woken.Before(next) {
				w.logger.Info("nats is back; polling now")
				t.Reset(time.Until(woken))
			}
		}
	}
}

// beat tells Health, when it listens, that the loop is alive until until.
func (w *Watcher) beat(until time.Time) {
	if hb, ok := w.cfg.Health.(heartbeat); ok {
		hb.Alive(until)
	}
}

// apiClock times the API part of every poll, the listing and the end
// lookups: Poll reaches its Lister through it.
//
// A listing gets floor from its start: PollTimeout, or more while listings
// run out of time, and after one that needed more, up to twice what the
// last poll took. When the Lister sizes its listings (sizer), the deadline
// moves to when the listing's first page says the whole listing should be
// done, at the request budget's pace and after any pause the API asked
// for, however far that is: a big listing under a small budget is not cut
// short by a fixed PollTimeout, and a small one on a hung API still gives
// way after PollTimeout. Every move is a heartbeat. The end lookups that
// follow the poll's commit must be done by the listing's deadline too.
type apiClock struct {
	Lister
	sizer sizer // nil: the floor is the deadline
	beat  func(until time.Time)
	floor time.Duration // PollTimeout, or more while listings run out of time or ran long (Run)

	mu       sync.Mutex
	lookupBy time.Time // end lookups of the poll in flight end by then
}

// List lists with a deadline of floor from now, moved as the listing
// sizes itself. A listing cut short fails with errPollTimeout.
func (c *apiClock) List(ctx context.Context, read snapshot.ReadFunc) (snapshot.Snapshot, error) {
	start := time.Now()
	deadline := start.Add(c.floor)
	c.mu.Lock()
	c.lookupBy = time.Time{}
	c.mu.Unlock()

	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			next := deadline
			if c.sizer != nil {
				if d := c.sizer.ListingDeadline(start); d.After(next) {
					next = d
				}
			}
			now := time.Now()
			if !next.After(now) {
				cancel(errPollTimeout)
				return
			}
			deadline = next // read by List only after wg.Wait
			c.beat(next)
			t.Reset(next.Sub(now))
		}
	})
	snap, err := c.Lister.List(lctx, read)
	close(done)
	wg.Wait()
	if err != nil {
		if context.Cause(lctx) == errPollTimeout {
			err = fmt.Errorf("%w (%s): %w", errPollTimeout, deadline.Sub(start), err)
		}
		return nil, err
	}
	c.mu.Lock()
	c.lookupBy = deadline
	c.mu.Unlock()
	return snap, nil
}

// Confirm looks a meeting up by the deadline the listing left to lookups.
func (c *apiClock) Confirm(ctx context.Context, m snapshot.Meeting, read snapshot.ReadFunc) (snapshot.Meeting, bool, error) {
	c.mu.Lock()
	by := c.lookupBy
	c.mu.Unlock()
	if !by.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, by, errPollTimeout)
		defer cancel()
	}
	return c.Lister.Confirm(ctx, m, read)
}

func (w *Watcher) logPoll(res PollResult) {
	w.polls++
	level := slog.LevelDebug
	if res.Started+res.Changed+res.Ended > 0 || w.polls == 1 {
		level = slog.LevelInfo
	}
	w.logger.Log(context.Background(), level, "poll committed",
		"meetings", res.Meetings, "started", res.Started, "changed", res.Changed, "ended", res.Ended,
		"duplicates", res.Duplicates, "missing", res.Unconfirmed, "ignored", res.Ignored,
		"listing_ms", res.Listing.Milliseconds(), "ends_ms", res.Ends.Milliseconds(), "deliver_ms", res.Deliver.Milliseconds(),
		"commit_ms", res.Commit.Milliseconds(), "total_ms", res.Total.Milliseconds())
}

// logPollError says why a poll failed, and what it published before:
// events acknowledged before the failure stay in the stream, and the next
// poll publishes them again under the same ids, which the stream drops as
// duplicates; the poll's snapshot is never committed.
func (w *Watcher) logPollError(err error, failures int, res PollResult) {
	published := res.Stored + res.Duplicates
	attrs := []any{"err", err, "consecutive_errors", failures, "published", published, "committed", false}
	var withAttrs logAttrser
	if errors.As(err, &withAttrs) {
		attrs = append(attrs, withAttrs.LogAttrs()...)
	}
	msg := "poll failed; nothing published or committed"
	if published > 0 {
		msg = "poll failed after publishing some of its events; nothing committed: the next poll publishes them again under the same ids"
	}
	switch {
	case errorIs(err, unauthorized.Unauthorized):
		msg = "authentication failed: the API refused the access token; retrying with backoff"
	case errorIs(err, rejecter.Rejected):
		msg = "the API rejected the request as configured (403: queryAll needs an enterprise admin; 400: check the parameters); backing off"
	}
	w.logger.Error(msg, attrs...)
}
