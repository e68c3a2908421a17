// Package watcher is meetwatch's engine. It lists the ongoing meetings from
// the API (completely or not at all), diffs the listing against the last
// committed snapshot, publishes the transitions, and only then commits the
// new snapshot, so that a crash at any point repeats work instead of losing
// it.
//
// The engine imports no adapter. It declares what it needs (a Lister, a
// Publisher, a StateStore, a Lease, a Health) and the errors its adapters'
// errors match (see errors.go); the packages beneath it (meetingapi,
// kvstore, ha) implement them for HTTP, JetStream and the lease.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Lister is the meeting API as the engine needs it: a complete snapshot of
// the ongoing meetings or an error, a lookup of one meeting that a
// snapshot no longer holds, and the pace its requests may go at, which
// sets a poll's deadline and schedule (see Run). List and Confirm make
// each record they receive a Meeting with read, which seals and trims it
// and remembers it for the next listing (see snapshot.Memo).
type Lister interface {
	// List calls planned once, as soon as the listing's first page has
	// told what the whole listing takes.
	List(ctx context.Context, read snapshot.ReadFunc, planned func(Plan)) (snapshot.Snapshot, error)
	// Confirm returns the meeting's current record and true while it is
	// still ongoing, false once it is confirmed gone. When it cannot
	// afford the lookup it fails at once with an error that matches
	// ErrSkipped: lookups only speed ends up.
	Confirm(ctx context.Context, m snapshot.Meeting, read snapshot.ReadFunc) (snapshot.Meeting, bool, error)
	// BudgetTime returns how long the request budget takes to allow n
	// requests; 0 without a budget.
	BudgetTime(n int) time.Duration
	// NotBefore returns the time before which no request has a use: the
	// end of a pause the API asked for (Retry-After), or of a refused
	// login's backoff; zero or past when requests may go.
	NotBefore() time.Time
}

// Plan is what a listing's first page tells of the whole listing, when the
// list holds still.
type Plan struct {
	// Requests counts the listing's requests, the first page's included.
	Requests int
	// Rounds counts the round trips of the pages after the first, as
	// many at a time as the Lister sends.
	Rounds int
}

// Publisher delivers encoded events, returning only when every one is
// acknowledged.
type Publisher interface {
	Send(ctx context.Context, msgs []events.Message) (events.PublishResult, error)
}

// StateStore holds the last committed snapshot. A poll hands it its
// changes: Prepare before their events are published, Write once they are
// acknowledged, and Commit last.
type StateStore interface {
	Load(ctx context.Context) (State, error)
	// Prepare records the started meetings of changes before their events
	// are published; Load returns those a commit never covered as Pending.
	Prepare(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error
	// Write records the changed and ended meetings of changes, whose
	// events are acknowledged.
	Write(ctx context.Context, changes []snapshot.Change) error
	// Commit makes the poll's snapshot the committed state.
	Commit(ctx context.Context, c Commit) error
	// Revision returns the revision of the stored record of a meeting, 0
	// when there is none: the Base of its next change. Prepare stores a
	// changed meeting's Base with its intent, and Load returns it with the
	// pending change, so that its event is published again under its id.
	Revision(confUUID string) uint64
}

// Lease tells this replica when it leads. Run calls lead for each term this
// replica holds the lease, with a context that ends as soon as the lease
// may be lost, and returns when ctx ends.
type Lease interface {
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// readAheader is a StateStore that can read the keys a poll is about to
// write while the poll still lists, so that the server has them at hand
// when the writes come: at 100,000 meetings, nats-server writes a key
// whose block it has let go of (10 s after its last use) in about a
// millisecond, against tens of microseconds once it has read it. Poll
// hands it the meetings that changed as the listing reads them, and the
// vanished ones once it is diffed; a meeting that starts has no key yet.
type readAheader interface {
	ReadAhead(ctx context.Context, meetings <-chan string)
}

// readAheadQueue bounds the meetings waiting to be read ahead; past it,
// hints are dropped: a read ahead only saves time.
const readAheadQueue = 4096

// readAhead starts the store reading ahead, when it can, and returns the
// hint that queues a meeting (it never blocks) and the stop that ends the
// reading and waits for it.
func (w *Watcher) readAhead(ctx context.Context) (hint func(meeting string), stop func()) {
	ra, ok := w.cfg.Store.(readAheader)
	if !ok {
		return func(string) {}, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan string, readAheadQueue)
	var wg sync.WaitGroup
	wg.Go(func() { ra.ReadAhead(ctx, queue) })
	hint = func(meeting string) {
		select {
		case queue <- meeting:
		default:
		}
	}
	return hint, func() { cancel(); wg.Wait() }
}

// Observer hears of every poll Run makes, with how long it took and how it
// ended, for metrics.
type Observer interface {
	Polled(res PollResult, took time.Duration, err error)
}

// Health hears of the watcher's progress, for the probes: NewTerm when this
// replica starts leading, Polled after every committed poll, PollFailed
// with the error of every poll that failed, and Alive, the heartbeat of
// the loop, with its own deadline of the moment (the poll's, or the end of
// the wait for the next one): at each poll's start, when the listing's
// first page sets the poll's deadline, and at the start of each wait.
type Health interface {
	NewTerm()
	Polled(at time.Time)
	PollFailed(err error)
	Alive(until time.Time)
}

// Config wires a Watcher.
type Config struct {
	Lister    Lister
	Publisher Publisher
	Store     StateStore
	Builder   events.Builder
	// Redact seals secrets in every record before it is diffed or stored;
	// nil keeps records as sent. The Builder should strip with the same
	// policy.
	Redact *redact.Policy
	// MaxRecordBytes trims every record to at most that many bytes before
	// it is diffed or stored (see snapshot.Trim), so that one huge meeting
	// can neither overflow a state value nor wedge the polls; 0 keeps
	// records whole. Set it from events.MaxRecordBytes.
	MaxRecordBytes int
	// Interval is the time between the starts of two polls.
	Interval time.Duration
	// PollTimeout is the least time the API part of a poll, the listing
	// and the end lookups, gets from the listing's start; 0 means 90% of
	// Interval, so that a hung API gives way to the next poll. A listing
	// whose first page shows that it needs longer gets that (see
	// pollAPI.deadline). Publishing and committing are not cut short by
	// it: they have their own acknowledgement timeouts, and a first
	// snapshot of many meetings must be able to finish.
	PollTimeout time.Duration
	// ConfirmConcurrency bounds the end lookups of a poll, all in flight
	// at once; 0 means 4. The ends of meetings not looked up wait for the
	// next listing.
	ConfirmConcurrency int
	// Health, when set, hears of terms and committed polls.
	Health Health
	// Observer, when set, hears of every poll Run makes.
	Observer Observer
	// Wake, when set, says that what failed the last polls may be back
	// (NATS reconnected): Run then polls at once instead of waiting out
	// its backoff.
	Wake   <-chan struct{}
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Watcher turns polls into events. Run owns its loop; Poll runs one poll
// and is exported for tests and benchmarks.
type Watcher struct {
	cfg    Config
	logger *slog.Logger

	// api is the Lister under the deadline of a poll's API part.
	api *pollAPI
	// records reads every record the API sends, sealed and trimmed.
	records *snapshot.Memo
	loaded  bool
	state   State
	polls   int
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
	if cfg.ConfirmConcurrency <= 0 {
		cfg.ConfirmConcurrency = 4
	}
	w := &Watcher{cfg: cfg, logger: cfg.Logger.With("component", "watcher")}
	w.api = &pollAPI{lister: cfg.Lister, timeout: cfg.PollTimeout, beat: w.beat}
	w.records = snapshot.NewMemo(w.fit)
	return w
}

// PollResult says what one successful poll did.
type PollResult struct {
	Meetings                int
	Started, Changed, Ended int
	Stored, Duplicates      int
	// Ignored counts changes confined to ignored fields: committed, not
	// published.
	Ignored int
	// StillOngoing counts meetings a listing missed that a lookup found
	// still ongoing; Unconfirmed, those the listing missed for the first
	// time that no lookup confirmed, whose end waits for the next listing.
	StillOngoing, Unconfirmed int
	// PendingEnds counts the meetings of the committed snapshot that the
	// listing lacked and whose ended event waits for the next one.
	PendingEnds int
	ObservedAt  time.Time
	// Listing, Deliver (writing the keys of started meetings, building
	// and publishing the events, writing the other keys) and Commit (the
	// missing meetings' keys and meta) are the steps of Total, from the
	// poll's start to its commit; what is left is mostly the diff. Ends is
	// what follows the commit: looking up the meetings the listing missed
	// for the first time, and publishing and committing what they found.
	Listing, Deliver, Commit, Total, Ends time.Duration
}

// Poll runs one poll: load state (once), list, diff, publish and wait for
// every ack, then commit. If any step fails nothing after it happens, and
// the in-memory state stays as it was, so the next poll repeats the work.
//
// Once the poll is committed, and its events out, Poll looks up the
// meetings its listing missed for the first time (see lookUpEnds): a
// lookup only speeds an end up, so it never holds the listing's events
// back. An error of that step fails nothing the poll did; Poll returns it
// only when this replica was fenced or ctx ended.
func (w *Watcher) Poll(ctx context.Context) (PollResult, error) {
	res, fresh, err := w.poll(ctx)
	if err != nil {
		return res, err
	}
	if err := w.lookUpEnds(ctx, fresh, &res); err != nil {
		if errors.Is(err, ErrFenced) || ctx.Err() != nil {
			return res, err
		}
		// The ends it published, if any, are published again, under the
		// same ids, when the next listing settles them.
		w.loaded = false
		w.logger.Warn("publishing the ends that lookups confirmed failed; the next listing settles them", "err", err)
	}
	return res, nil
}

// poll is Poll up to its commit. It returns the meetings its listing
// missed for the first time, in key order.
func (w *Watcher) poll(ctx context.Context) (PollResult, []string, error) {
	start := w.cfg.Now()
	var res PollResult
	if !w.loaded {
		st, err := w.cfg.Store.Load(ctx)
		if err != nil {
			return PollResult{}, nil, fmt.Errorf("loading state: %w", err)
		}
		w.logger.Info("state loaded", "meetings", len(st.Snapshot), "committed", st.Committed,
			"observed_at", st.ObservedAt, "pending", len(st.Pending))
		if err := w.settle(ctx, &st, &res); err != nil {
			return res, nil, err
		}
		w.state, w.loaded = st, true
	}

	observedAt := w.cfg.Now()
	w.records.Prior(w.state.Snapshot)
	ahead, stopAhead := w.readAhead(ctx)
	defer stopAhead()
	prev := w.state.Snapshot
	next, err := w.api.List(ctx, func(raw []byte) (snapshot.Meeting, error) {
		m, err := w.records.Read(raw)
		if old, ok := prev[m.UUID]; ok && err == nil && !old.Same(m) {
			ahead(m.UUID) // changed: its key is written before its event
		}
		return m, err
	})
	if err != nil {
		return PollResult{}, nil, fmt.Errorf("listing meetings: %w", err)
	}
	w.records.Keep()
	listed := w.cfg.Now()

	changes := snapshot.Diff(w.state.Snapshot, next)
	changes, missed, settled, fresh := w.holdEnds(changes, next)
	for _, c := range changes {
		if c.Kind == snapshot.Ended {
			ahead(c.Key) // purged once its end is announced
		}
	}
	res.ObservedAt, res.Listing = observedAt, listed.Sub(observedAt)
	res.Meetings, res.Unconfirmed = len(next), len(fresh)
	t := w.cfg.Now()
	err = w.deliver(ctx, changes, observedAt, listed, &res)
	res.Deliver = w.cfg.Now().Sub(t)
	if err != nil {
		// Some events may have gone out and some keys changed: the next
		// poll reads the store again rather than trusting memory. res
		// says what went out.
		w.loaded = false
		return res, nil, err
	}
	if err := ctx.Err(); err != nil {
		w.loaded = false // the keys written stay; the store says what they are
		return res, nil, fmt.Errorf("before commit: %w", context.Cause(ctx))
	}
	commit := Commit{ObservedAt: observedAt, Meetings: len(next), Missed: missed, Settled: settled}
	t = w.cfg.Now()
	err = w.cfg.Store.Commit(ctx, commit)
	res.Commit = w.cfg.Now().Sub(t)
	if err != nil {
		// Part of the commit may have landed. Reading the store again on the
		// next poll makes it diff against what is really there, so it
		// re-publishes (under the same ids) and re-writes only the rest.
		w.loaded = false
		return res, nil, fmt.Errorf("committing state: %w", err)
	}
	w.state = State{Snapshot: next, ObservedAt: observedAt, Committed: true, Missing: missed}
	res.PendingEnds = len(missed)
	if w.cfg.Health != nil {
		w.cfg.Health.Polled(time.Now())
	}
	res.Total = w.cfg.Now().Sub(start)
	return res, fresh, nil
}

// settle finishes what a poll that stopped short of its commit left behind:
// it publishes the events of st.Pending again, under the same ids, so
// JetStream keeps one copy, and takes their records into st, to be
// committed with the next poll. The diff that follows then knows them: it
// reports the end of a meeting announced but not committed, and diffs a
// changed meeting against the record its last event announced.
// st.Committed and st.ObservedAt stay as they were: the first snapshot's
// other meetings are still initial, and lastSeen stays a true lower bound.
func (w *Watcher) settle(ctx context.Context, st *State, res *PollResult) error {
	if len(st.Pending) == 0 {
		return nil
	}
	var again PollResult
	evs, _, err := w.build(st, st.Pending, w.cfg.Now(), &again)
	if err != nil {
		return err
	}
	pr, err := w.cfg.Publisher.Send(ctx, evs)
	if err != nil {
		res.Stored += pr.Stored
		res.Duplicates += pr.Duplicates
		return fmt.Errorf("publishing %d pending events: %w", len(evs), err)
	}
	for _, c := range st.Pending {
		st.Snapshot[c.Key] = c.New
	}
	w.logger.Info("pending events published again", "started", again.Started, "changed", again.Changed, "duplicates", pr.Duplicates)
	again.Stored, again.Duplicates = pr.Stored, pr.Duplicates
	res.addCounts(again)
	return nil
}

// chunkSize is how many events are built and held at a time.
const chunkSize = 4096

// deliver publishes the events of changes and stores their records. The
// key of a started or changed meeting is written before its event, as an
// intent that Load recognises; every other key after its event is safely
// stored. So two streams of writes run at once: the starts' keys, then
// their events; and the ends' and changes' events, each chunk's intents
// before them and its keys behind them. Each change takes its Base from
// the store before any of its writes.
func (w *Watcher) deliver(ctx context.Context, changes []snapshot.Change, observedAt, listed time.Time, res *PollResult) error {
	for i := range changes {
		if changes[i].Kind == snapshot.Changed {
			changes[i].Base = w.cfg.Store.Revision(changes[i].Key)
		}
	}
	// Diff puts the starts last.
	first := slices.IndexFunc(changes, func(c snapshot.Change) bool { return c.Kind == snapshot.Started })
	if first < 0 {
		first = len(changes)
	}
	others, starts := changes[:first], changes[first:]
	var startsRes, othersRes PollResult // one each, so that the streams share no counter
	// The starts' events are sent after the others', in Diff's order, the
	// order a consumer mostly sees. It is no promise: a retried publish is
	// stored after events sent later. Only a meeting's own events keep
	// their order, since a poll has one per meeting.
	othersOut := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if len(starts) == 0 {
			return nil
		}
		// All the starts' keys first: interleaved with the events, they
		// would slow the events down as much as they sped the keys up.
		if err := w.cfg.Store.Prepare(gctx, starts, observedAt); err != nil {
			return fmt.Errorf("before publishing: %w", err)
		}
		select {
		case <-othersOut:
		case <-gctx.Done():
			return context.Cause(gctx)
		}
		return w.stream(gctx, starts, listed, &startsRes, stages{})
	})
	g.Go(func() error {
		if len(others) == 0 {
			close(othersOut)
			return nil
		}
		return w.stream(gctx, others, listed, &othersRes, stages{
			before: func(ctx context.Context, announced []snapshot.Change) error {
				if err := w.cfg.Store.Prepare(ctx, announced, observedAt); err != nil {
					return fmt.Errorf("before publishing: %w", err)
				}
				return nil
			},
			published: func() { close(othersOut) },
			after: func(ctx context.Context, part []snapshot.Change) error {
				if err := w.cfg.Store.Write(ctx, part); err != nil {
					return fmt.Errorf("committing state: %w", err)
				}
				return nil
			},
		})
	})
	err := g.Wait()
	res.addCounts(startsRes)
	res.addCounts(othersRes)
	return err
}

// addCounts adds o's counts of events to r's.
func (r *PollResult) addCounts(o PollResult) {
	r.Started += o.Started
	r.Changed += o.Changed
	r.Ended += o.Ended
	r.Ignored += o.Ignored
	r.Stored += o.Stored
	r.Duplicates += o.Duplicates
}

// stages are what stream does around publishing a chunk, each optional:
// before, with the changes whose events the chunk holds, ahead of
// publishing them; published once every event is acknowledged; and after,
// with all of the chunk's changes, once its events are acknowledged.
type stages struct {
	before    func(ctx context.Context, announced []snapshot.Change) error
	published func()
	after     func(ctx context.Context, changes []snapshot.Change) error
}

// stream writes changes a chunk at a time through stages that overlap,
// each a chunk behind the one before: building the events, the before
// stage, publishing them and waiting for their acknowledgements, and the
// after stage. A chunk goes through each stage only once the one before
// finished with it, so that the order of writes per meeting holds, while
// the connection stays busy and no more than a few chunks of events are
// held at once.
func (w *Watcher) stream(ctx context.Context, changes []snapshot.Change, listed time.Time, res *PollResult, st stages) error {
	if len(changes) == 0 {
		return nil
	}
	type chunk struct {
		changes   []snapshot.Change
		evs       []events.Message
		announced []snapshot.Change
	}
	g, gctx := errgroup.WithContext(ctx)
	stage := func(in <-chan chunk, do func(*chunk) error, finished func()) <-chan chunk {
		out := make(chan chunk, 1)
		g.Go(func() error {
			defer close(out)
			for c := range in {
				if err := do(&c); err != nil {
					return err
				}
				select {
				case out <- c:
				case <-gctx.Done():
					return context.Cause(gctx)
				}
			}
			if finished != nil && gctx.Err() == nil {
				finished()
			}
			return nil
		})
		return out
	}
	src := make(chan chunk)
	g.Go(func() error {
		defer close(src)
		for part := range slices.Chunk(changes, chunkSize) {
			select {
			case src <- chunk{changes: part}:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		}
		return nil
	})
	next := stage(src, func(c *chunk) error {
		var err error
		c.evs, c.announced, err = w.build(&w.state, c.changes, listed, res)
		return err
	}, nil)
	if st.before != nil {
		next = stage(next, func(c *chunk) error { return st.before(gctx, c.announced) }, nil)
	}
	next = stage(next, func(c *chunk) error {
		if len(c.evs) == 0 {
			return nil
		}
		pr, err := w.cfg.Publisher.Send(gctx, c.evs)
		res.Stored += pr.Stored
		res.Duplicates += pr.Duplicates
		if err != nil {
			return fmt.Errorf("publishing %d events: %w", len(c.evs), err)
		}
		c.evs, c.announced = nil, nil
		return nil
	}, st.published)
	if st.after != nil {
		next = stage(next, func(c *chunk) error { return st.after(gctx, c.changes) }, nil)
	}
	g.Go(func() error {
		for range next { // the last stage's output: nothing left to do
		}
		return nil
	})
	return g.Wait()
}

// build returns the events of changes against st, encoded, counting them in res,
// and the changes they announce. A change confined to ignored fields gets
// none, and neither does one whose event stays too large even trimmed:
// holding every other meeting's events back for it would be worse. Both
// are committed all the same, so that later diffs start from them.
func (w *Watcher) build(st *State, changes []snapshot.Change, observed time.Time, res *PollResult) ([]events.Message, []snapshot.Change, error) {
	evs := make([]events.Message, 0, len(changes))
	announced := make([]snapshot.Change, 0, len(changes))
	for _, c := range changes {
		if !w.cfg.Builder.Publishes(c) {
			res.Ignored++
			continue
		}
		lastSeen := st.ObservedAt
		if t, ok := st.Missing[c.Key]; ok {
			lastSeen = t
		}
		e, err := w.cfg.Builder.Build(c, observed, !st.Committed, lastSeen)
		if errors.Is(err, snapshot.ErrTooLarge) {
			w.logger.Error("event too large to publish even trimmed; skipped", "kind", c.Kind, "meeting", c.Key, "err", err)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		m, err := e.Message()
		if err != nil {
			return nil, nil, err
		}
		evs = append(evs, m)
		announced = append(announced, c)
		switch c.Kind {
		case snapshot.Started:
			res.Started++
		case snapshot.Changed:
			res.Changed++
		case snapshot.Ended:
			res.Ended++
		}
	}
	return evs, announced, nil
}

// fit replaces the secrets of a record by digests, so that the diff still
// sees a secret change but the state never holds the value, and trims it
// to MaxRecordBytes, the same way every time, so that a huge record diffs
// stably against itself. A record that cannot be trimmed enough is kept
// as small as it goes, and said so.
func (w *Watcher) fit(m snapshot.Meeting) (snapshot.Meeting, error) {
	m, err := w.cfg.Redact.Seal(m)
	if err != nil {
		return snapshot.Meeting{}, fmt.Errorf("redacting %s: %w", m.UUID, err)
	}
	if w.cfg.MaxRecordBytes <= 0 {
		return m, nil
	}
	trimmed, cut, err := snapshot.Trim(m, w.cfg.MaxRecordBytes)
	switch {
	case errors.Is(err, snapshot.ErrTooLarge):
		w.logger.Error("meeting record too large even trimmed", "meeting", m.UUID, "err", err)
	case err != nil:
		return snapshot.Meeting{}, fmt.Errorf("trimming %s: %w", m.UUID, err)
	case len(cut) > 0:
		// Once for each version of the record a process reads: the
		// listings after it find it remembered (see snapshot.Memo).
		w.logger.Info("meeting record trimmed to fit the size limit", "meeting", m.UUID,
			"bytes", len(m.Raw()), "max_bytes", w.cfg.MaxRecordBytes, "trimmed", cut)
	}
	return trimmed, nil
}

// holdEnds decides, for every meeting that vanished from a complete
// listing, whether it ended. Offset paging over a live list is checked
// page by page, but the API is the API: a meeting is only declared ended
// when two complete listings in a row lack it, or sooner when a lookup (a
// listing filtered by its meeting ID) confirms it gone (see lookUpEnds).
//
// So a meeting that the previous listing lacked too ends now, whatever the
// request budget: no end waits more than one listing after it was first
// missed. A meeting missing for the first time goes back into next with
// its old record, neither announced nor forgotten: its ended change is
// taken out of changes, and it is returned in missed, with when it was
// last seen, and in fresh. Missing meetings that are listed again, or end
// now, are returned in settled.
func (w *Watcher) holdEnds(changes []snapshot.Change, next snapshot.Snapshot) (kept []snapshot.Change, missed map[string]time.Time, settled, fresh []string) {
	for key := range w.state.Missing {
		settled = append(settled, key) // ended now, or listed again
	}
	slices.Sort(settled)
	kept = changes[:0]
	for _, c := range changes {
		if _, before := w.state.Missing[c.Key]; c.Kind != snapshot.Ended || before {
			kept = append(kept, c)
			continue
		}
		next[c.Key] = c.Old
		if missed == nil {
			missed = map[string]time.Time{}
		}
		missed[c.Key] = w.state.ObservedAt
		fresh = append(fresh, c.Key)
	}
	if len(fresh) > 0 {
		w.logger.Info("meetings missing from the listing for the first time; a lookup or the next listing settles their end",
			"missing", len(fresh))
	}
	return kept, missed, settled, fresh
}

// lookUpEnds looks up, once the poll that missed them is committed, up to
// ConfirmConcurrency of fresh, the meetings that listing missed for the
// first time, all at once, while the budget has room: one round at most,
// since past that a poll would spend more on speeding ends up by one
// listing than on the listing itself. A meeting found gone ends now; one
// found ongoing is missing no more, and changed if its record did. Their
// events go out, the ends sent first, and are committed as a step of their own.
// A meeting not looked up, or whose lookup failed, stays missing: the next
// listing settles it. Lookups must be done by the poll's deadline (see
// pollAPI).
func (w *Watcher) lookUpEnds(ctx context.Context, fresh []string, res *PollResult) error {
	if len(fresh) == 0 {
		return nil
	}
	start := w.cfg.Now()
	defer func() { res.Ends = w.cfg.Now().Sub(start) }()
	fresh = fresh[:min(len(fresh), w.cfg.ConfirmConcurrency)]
	ahead, stopAhead := w.readAhead(ctx)
	defer stopAhead()
	for _, key := range fresh {
		ahead(key) // purged or written if the lookup finds an end or a change
	}
	// was holds each meeting a lookup answered for, as last listed; now,
	// those still ongoing, as the lookup found them. Their diff is the
	// step's changes, in Diff's order: ends, then changes.
	var (
		mu               sync.Mutex
		lastErr, skipped error
		was, now         = snapshot.Snapshot{}, snapshot.Snapshot{}
	)
	var g sync.WaitGroup
	for _, key := range fresh {
		old := w.state.Snapshot[key]
		g.Go(func() {
			cur, still, err := w.api.Confirm(ctx, old, w.records.Read)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrSkipped):
				skipped = err
				return
			case err != nil:
				lastErr = err
				return
			case still:
				now[key] = cur
			}
			was[key] = old
		})
	}
	g.Wait()
	if len(now) > 0 {
		w.logger.Info("meetings missing from the listing are still ongoing", "still_ongoing", len(now))
	}
	switch {
	case lastErr != nil:
		w.logger.Info("end lookups failed; the next listing settles those meetings", "err", lastErr)
	case skipped != nil:
		w.logger.Debug("end lookups not sent; the next listing settles those meetings", "reason", skipped)
	}
	if len(was) == 0 {
		return nil
	}
	changes := snapshot.Diff(was, now)
	settled := slices.Sorted(maps.Keys(was))

	var step PollResult
	if err := w.deliver(ctx, changes, w.state.ObservedAt, w.cfg.Now(), &step); err != nil {
		return fmt.Errorf("publishing what end lookups found: %w", err)
	}
	snap := w.state.Snapshot
	for _, c := range changes {
		if c.Kind == snapshot.Ended {
			delete(snap, c.Key)
		} else {
			snap[c.Key] = c.New
		}
	}
	for _, key := range settled {
		delete(w.state.Missing, key)
	}
	if err := w.cfg.Store.Commit(ctx, Commit{ObservedAt: w.state.ObservedAt, Meetings: len(snap), Settled: settled}); err != nil {
		return fmt.Errorf("committing what end lookups found: %w", err)
	}
	res.addCounts(step)
	res.StillOngoing = len(now)
	res.Unconfirmed -= len(settled)
	res.Meetings, res.PendingEnds = len(snap), len(w.state.Missing)
	return nil
}
