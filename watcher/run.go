package watcher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/meetwatch/meetwatch/watcher/backoff"
)

// budgeted is a Lister that spends a request budget, so that the watcher
// can tell when a poll needs more time than the interval gives.
type budgeted interface {
	Requests() int64
	BudgetTime(requests int64) time.Duration
}

// maxAPITimeout caps how far the API part of a poll's deadline grows when
// listings keep running out of time.
const maxAPITimeout = 15 * time.Minute

// maxRejectedBackoff caps the wait between polls while the API rejects the
// configuration (400, 403): long enough not to hammer it, short enough to
// notice a fix.
const maxRejectedBackoff = 5 * time.Minute

// Lead runs a fresh Watcher for every term lease grants this replica, until
// ctx ends. Each term starts from the stored state: a standby that takes
// over knows only what the last leader committed.
func Lead(ctx context.Context, lease Lease, cfg Config) error {
	return lease.Run(ctx, func(lctx context.Context) {
		if cfg.Health != nil {
			cfg.Health.NewTerm()
		}
		_ = New(cfg).Run(lctx) // Run logs its own failures and returns when lctx ends
	})
}

// Run polls now and then every Interval until ctx ends. A failed poll is
// logged and retried at the next tick; Run returns nil when ctx ends, and an
// unfinished poll is abandoned with nothing committed.
//
// When the request budget cannot fit a poll into the interval, the poll's
// deadline grows to what the budget needs and polls run back to back. While
// the API rejects the configuration, polls back off up to five minutes.
func (w *Watcher) Run(ctx context.Context) error {
	failures := 0
	rejected := backoff.Backoff{Base: 2 * w.cfg.Interval, Max: maxRejectedBackoff}
	budget, _ := w.cfg.Lister.(budgeted)
	for {
		started := time.Now()
		var before int64
		if budget != nil {
			before = budget.Requests()
		}
		res, err := w.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errPollTimeout) || errorIs(err, overBudget.OverBudget) {
			// Too short for this listing (the budget may be what slows it):
			// give the next one longer, up to a bound.
			w.apiTimeout = min(w.apiTimeout*2, max(maxAPITimeout, w.cfg.PollTimeout))
		} else if budget != nil {
			n := budget.Requests() - before
			need := budget.BudgetTime(n)
			w.apiTimeout = max(w.cfg.PollTimeout, need*3/2)
			if need > w.cfg.Interval {
				w.logger.Warn("the request budget cannot fit a poll into the interval; polls run back to back",
					"requests", n, "budget_needs_ms", need.Milliseconds(), "interval_ms", w.cfg.Interval.Milliseconds())
			}
		}
		wait := w.cfg.Interval - time.Since(started)
		switch {
		case err != nil:
			failures++
			w.logPollError(err, failures)
			if errorIs(err, rejecter.Rejected) {
				wait = rejected.Next()
			}
		default:
			if failures > 0 {
				w.logger.Info("polling recovered", "consecutive_errors", failures)
			}
			failures = 0
			rejected.Reset()
			w.logPoll(res)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (w *Watcher) logPoll(res PollResult) {
	w.polls++
	level := slog.LevelDebug
	if res.Started+res.Changed+res.Ended > 0 || w.polls == 1 {
		level = slog.LevelInfo
	}
	w.logger.Log(context.Background(), level, "poll committed",
		"meetings", res.Meetings, "started", res.Started, "changed", res.Changed, "ended", res.Ended,
		"duplicates", res.Duplicates, "listing_ms", res.Listing.Milliseconds(), "total_ms", res.Total.Milliseconds())
}

func (w *Watcher) logPollError(err error, failures int) {
	attrs := []any{"err", err, "consecutive_errors", failures}
	var withAttrs logAttrser
	if errors.As(err, &withAttrs) {
		attrs = append(attrs, withAttrs.LogAttrs()...)
	}
	msg := "poll failed; nothing published or committed"
	switch {
	case errorIs(err, unauthorized.Unauthorized):
		msg = "authentication failed: the API refused the access token; retrying at the next tick"
	case errorIs(err, rejecter.Rejected):
		msg = "the API rejected the request as configured (403: queryAll needs an enterprise admin; 400: check the parameters); backing off"
	}
	w.logger.Error(msg, attrs...)
}
