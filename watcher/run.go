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
//   - No poll starts before the Lister's NotBefore: a pause the API asked
//     for, or a refused login's backoff.
//   - The API part of a poll has one deadline (see pollAPI.deadline).
//   - Health hears a heartbeat with the loop's deadline at each poll's
//     start, when the poll's deadline is set, and at the start of each
//     wait.
func (w *Watcher) Run(ctx context.Context) error {
	failures := 0
	retry := backoff.Backoff{Base: w.cfg.Interval, Max: MaxBackoff(w.cfg.Interval)}
	tooSmall := false // the budget cannot fit a poll into the interval: said once a streak
	for {
		started := time.Now()
		w.beat(started.Add(w.cfg.PollTimeout))
		res, err := w.pollCommitted(ctx)
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
		if plan := w.api.lastPlan(); err == nil && plan.Requests > 0 {
			need := w.cfg.Lister.BudgetTime(plan.Requests)
			attrs := []any{"requests", plan.Requests, "budget_needs_ms", need.Milliseconds(), "interval_ms", w.cfg.Interval.Milliseconds()}
			switch {
			case need > w.cfg.Interval && !tooSmall:
				w.logger.Warn("the request budget cannot fit a poll into the interval; polls run back to back", attrs...)
			case need <= w.cfg.Interval && tooSmall:
				w.logger.Info("the request budget fits a poll into the interval again", attrs...)
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
			if err := w.reconcileView(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.logger.Warn("fenced: this replica stops leading", "err", err)
				return err
			}
		}
		if nb := w.cfg.Lister.NotBefore(); nb.After(next) && nb.After(time.Now()) {
			w.logger.Info("the api asked for a pause; the next poll waits for it", "not_before", nb)
			next = nb
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
// woken, it does not poll before the Lister's NotBefore.
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
			woken := later(time.Now(), w.cfg.Lister.NotBefore())
			if woken.Before(next) {
				w.logger.Info("nats is back; polling now")
				t.Reset(time.Until(woken))
			}
		}
	}
}

// beat tells Health, when there is one, that the loop is alive until until.
func (w *Watcher) beat(until time.Time) {
	if w.cfg.Health != nil {
		w.cfg.Health.Alive(until)
	}
}

// pollAPI is the Lister as a poll reaches it: the listing and the end
// lookups that follow the poll's commit run under one deadline, set when
// the listing starts and moved once, when its first page tells what the
// listing takes (see deadline), with a heartbeat.
type pollAPI struct {
	lister  Lister
	timeout time.Duration // PollTimeout
	beat    func(until time.Time)

	mu   sync.Mutex
	by   time.Time // the deadline of the poll in flight, or of the last one
	plan Plan      // the last listing's; zero until its first page
}

// List lists by the poll's deadline; a listing cut short by it fails with
// errPollTimeout.
func (a *pollAPI) List(ctx context.Context, read snapshot.ReadFunc) (snapshot.Snapshot, error) {
	start := time.Now()
	a.set(start.Add(a.timeout), Plan{})
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(a.timeout, func() { cancel(errPollTimeout) })
	defer timer.Stop()
	snap, err := a.lister.List(lctx, read, func(p Plan) {
		by := a.deadline(start, time.Now(), p)
		if !timer.Stop() {
			return // timed out already
		}
		a.set(by, p)
		timer.Reset(time.Until(by))
		a.beat(by)
	})
	if err != nil {
		if context.Cause(lctx) == errPollTimeout {
			err = fmt.Errorf("%w (%s): %w", errPollTimeout, a.deadlineAfter(start), err)
		}
		return nil, err
	}
	return snap, nil
}

// deadline returns when the API part of a poll must be done whose listing
// started at start and whose first page, answered at now, told plan: at
// PollTimeout from start, or later when the listing needs longer. From
// now, it needs the time the request budget takes to allow its requests,
// and, for each round of pages after the first, twice what the first page
// took (a login, a wait for the budget or a pause the API asked for
// included), so that pages slower than the first, or a retry, do not cut
// it short, while a listing far slower than its own first page still
// gives way.
func (a *pollAPI) deadline(start, now time.Time, plan Plan) time.Time {
	need := a.lister.BudgetTime(plan.Requests) + time.Duration(plan.Rounds)*2*now.Sub(start)
	return later(start.Add(a.timeout), now.Add(need))
}

// Confirm looks a meeting up by the poll's deadline.
func (a *pollAPI) Confirm(ctx context.Context, m snapshot.Meeting, read snapshot.ReadFunc) (snapshot.Meeting, bool, error) {
	a.mu.Lock()
	by := a.by
	a.mu.Unlock()
	ctx, cancel := context.WithDeadlineCause(ctx, by, errPollTimeout)
	defer cancel()
	return a.lister.Confirm(ctx, m, read)
}

func (a *pollAPI) set(by time.Time, plan Plan) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.by, a.plan = by, plan
}

// lastPlan returns the plan of the last listing, zero when its first page
// never came.
func (a *pollAPI) lastPlan() Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan
}

// deadlineAfter returns the poll's deadline as time from start.
func (a *pollAPI) deadlineAfter(start time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.by.Sub(start)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
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
// poll publishes again those whose record did not land, under the same
// ids, which the stream drops as duplicates; the poll's snapshot is never
// committed.
func (w *Watcher) logPollError(err error, failures int, res PollResult) {
	published := res.Stored + res.Duplicates
	attrs := []any{"err", err, "consecutive_errors", failures, "published", published, "committed", false}
	var withAttrs *AttrError
	if errors.As(err, &withAttrs) {
		for _, a := range withAttrs.Attrs {
			attrs = append(attrs, a)
		}
	}
	msg := "poll failed; nothing published or committed"
	if published > 0 {
		msg = "poll failed after publishing some of its events; nothing committed: the next poll publishes again, under the same ids, those it finds unrecorded"
	}
	switch {
	case errors.Is(err, ErrUnauthorized):
		msg = "authentication failed: the API refused the access token; retrying with backoff"
	case errors.Is(err, ErrRejected):
		msg = "the API rejected the request as configured (403: queryAll needs an enterprise admin; 400: check the parameters); backing off"
	}
	w.logger.Error(msg, attrs...)
}
