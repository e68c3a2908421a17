// Package watcher is meetwatch's engine. It lists the ongoing meetings from
// the API (completely or not at all), diffs the listing against the last
// committed snapshot, publishes the transitions, and only then commits the
// new snapshot, so that a crash at any point repeats work instead of losing
// it.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
)

// Lister returns a complete snapshot of the ongoing meetings, or an error.
type Lister interface {
	List(ctx context.Context) (snapshot.Snapshot, error)
}

// Publisher delivers events, returning only when every one is acknowledged.
type Publisher interface {
	Publish(ctx context.Context, evs []events.Event) (events.PublishResult, error)
}

// StateStore holds the last committed snapshot.
type StateStore interface {
	Load(ctx context.Context) (State, error)
	Commit(ctx context.Context, changes []snapshot.Change, observedAt time.Time, meetings int) error
}

var (
	_ Lister     = (*Client)(nil)
	_ StateStore = (*Store)(nil)
	_ Publisher  = (*events.Publisher)(nil)
)

// Config wires a Watcher.
type Config struct {
	Lister    Lister
	Publisher Publisher
	Store     StateStore
	Builder   events.Builder
	// Interval is the time between the starts of two polls.
	Interval time.Duration
	// PollTimeout bounds one poll; 0 means 90% of Interval, so that a poll
	// that hangs gives way to the next one.
	PollTimeout time.Duration
	Logger      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Watcher turns polls into events. Run owns its loop; Poll runs one poll
// and is exported for tests and benchmarks.
type Watcher struct {
	cfg    Config
	logger *slog.Logger

	loaded bool
	state  State
	polls  int
}

// New returns a Watcher.
func New(cfg Config) *Watcher {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = cfg.Interval * 9 / 10
	}
	return &Watcher{cfg: cfg, logger: cfg.Logger.With("component", "watcher")}
}

// PollResult says what one successful poll did.
type PollResult struct {
	Meetings                int
	Started, Changed, Ended int
	Stored, Duplicates      int
	ObservedAt              time.Time
	Listing, Total          time.Duration
}

// Poll runs one poll: load state (once), list, diff, publish and wait for
// every ack, then commit. If any step fails nothing after it happens, and
// the in-memory state stays as it was, so the next poll repeats the work.
func (w *Watcher) Poll(ctx context.Context) (PollResult, error) {
	start := w.cfg.Now()
	if !w.loaded {
		st, err := w.cfg.Store.Load(ctx)
		if err != nil {
			return PollResult{}, fmt.Errorf("loading state: %w", err)
		}
		w.state, w.loaded = st, true
		w.logger.Info("state loaded", "meetings", len(st.Snapshot), "committed", st.Committed, "observed_at", st.ObservedAt)
	}

	observedAt := w.cfg.Now()
	next, err := w.cfg.Lister.List(ctx)
	if err != nil {
		return PollResult{}, fmt.Errorf("listing meetings: %w", err)
	}
	listed := w.cfg.Now()

	changes := snapshot.Diff(w.state.Snapshot, next)
	res := PollResult{Meetings: len(next), ObservedAt: observedAt, Listing: listed.Sub(observedAt)}
	evs := make([]events.Event, len(changes))
	for i, c := range changes {
		evs[i] = w.cfg.Builder.Build(c, listed, !w.state.Committed, w.state.ObservedAt)
		switch c.Kind {
		case snapshot.Started:
			res.Started++
		case snapshot.Changed:
			res.Changed++
		case snapshot.Ended:
			res.Ended++
		}
	}
	if len(evs) > 0 {
		pr, err := w.cfg.Publisher.Publish(ctx, evs)
		if err != nil {
			return PollResult{}, fmt.Errorf("publishing %d events: %w", len(evs), err)
		}
		res.Stored, res.Duplicates = pr.Stored, pr.Duplicates
	}
	if err := ctx.Err(); err != nil {
		return PollResult{}, fmt.Errorf("before commit: %w", context.Cause(ctx))
	}
	if err := w.cfg.Store.Commit(ctx, changes, observedAt, len(next)); err != nil {
		// Part of the commit may have landed. Reading the store again on the
		// next poll makes it diff against what is really there, so it
		// re-publishes (under the same ids) and re-writes only the rest.
		w.loaded = false
		return PollResult{}, fmt.Errorf("committing state: %w", err)
	}
	w.state = State{Snapshot: next, ObservedAt: observedAt, Committed: true}
	res.Total = w.cfg.Now().Sub(start)
	return res, nil
}

// Run polls now and then every Interval until ctx ends. A failed poll is
// logged and retried at the next tick; Run returns nil when ctx ends, and an
// unfinished poll is abandoned with nothing committed.
func (w *Watcher) Run(ctx context.Context) error {
	ticker := time.NewTicker(w.cfg.Interval)
	defer ticker.Stop()
	failures := 0
	for {
		pctx, cancel := context.WithTimeoutCause(ctx, w.cfg.PollTimeout, errPollTimeout)
		res, err := w.Poll(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			w.logPollError(err, failures)
		default:
			if failures > 0 {
				w.logger.Info("polling recovered", "consecutive_errors", failures)
			}
			failures = 0
			w.logPoll(res)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

var errPollTimeout = errors.New("poll took longer than its deadline")

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
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		attrs = append(attrs, apiErr.LogAttrs()...)
	}
	msg := "poll failed; nothing published or committed"
	if errors.Is(err, ErrUnauthorized) {
		msg = "authentication failed: the API refused the access token; retrying at the next tick"
	}
	w.logger.Error(msg, attrs...)
}
