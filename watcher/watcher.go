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
//
// The view (Config.View) is the consumers' copy of the ongoing meetings,
// one key per meeting (events.ViewEntry): the state stays private, with
// its sealed digests and internal keys. Each chunk of changes is written
// to it last, after its events are acknowledged and the state has
// recorded them, so that a key never shows what no event announced, and
// the state's compare-and-set has just proved that this replica leads;
// an ended meeting's key is deleted once its ended event is stored. Each
// write of a key expects, as the state's do, the revision the view last
// read or wrote of it: a replica that wakes from a pause after another
// took over is refused, instead of writing over the newer leader's keys
// (its next write of the state finds it fenced). The view is a cache of
// the state, not a second state: a failed write of it fails no poll,
// loses and doubles no event, and is mended by reconciling, which reads
// every key of the view and writes only those that differ from the
// committed snapshot, and deletes those of meetings not in it. A poll
// reconciles when the view may be wrong, once it has committed and its
// end lookups are out, so that neither its events nor the state wait for
// the view: at the first poll of a term, after a poll that failed past its
// listing (the state is then loaded again), and after a write of the
// view failed. So after any crash or restart the view matches the state
// within one committed poll, while a poll in the steady state writes the
// keys of the meetings that changed, and nothing else.
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

// StateStore holds the last committed snapshot, in the model package
// kvstore describes. A poll hands it its changes a chunk at a time: Intend
// before their events are published, Record once they are acknowledged,
// and Commit once every chunk is recorded.
type StateStore interface {
	// Load returns the committed state, with the intents whose events
	// may not have gone out as Pending.
	Load(ctx context.Context) (State, error)
	// Intend records the started and changed meetings of changes as
	// intents, before their events are published. It sets each started
	// change's Incarnation: the store knows whether the meeting ended
	// before.
	Intend(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error
	// Record records changes whose events are acknowledged, or that get
	// none: the new records, and the ends.
	Record(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error
	// Commit makes the poll's listing the committed one.
	Commit(ctx context.Context, c Commit) error
	// Revision returns the revision of the stored record of a meeting, 0
	// when there is none: the Base of its next change.
	Revision(confUUID string) uint64
	// ReadAhead reads the keys of the meetings it is handed until ctx
	// ends, so that the server holds their blocks in memory when the poll
	// writes them: nats-server lets a block go some seconds after its last
	// use, and writing a key in a block it let go of costs it far more
	// than one it holds. Poll hands it the meetings that changed as the
	// listing reads them, and the vanished ones once it is diffed; a
	// meeting that starts has no key yet.
	ReadAhead(ctx context.Context, meetings <-chan string)
}

// View is the consumers' copy of the ongoing meetings (see the package
// doc). It asks the same guard as the state before every write, so that
// only the replica that leads writes it, and each write expects the
// revision of its key that the view last read or wrote, so that a former
// leader's late write is refused; the watcher then reconciles it, as after
// any failed write of it. A write the guard refuses matches ErrFenced.
type View interface {
	// Write stores writes in their order, and returns once each is
	// acknowledged. It is called only after a Reconcile of the term, whose
	// read told each key's revision.
	Write(ctx context.Context, writes []ViewWrite) error
	// Reconcile makes the view hold exactly the meetings of want: it
	// reads what the view holds, and each key's revision, writes the
	// entry of each meeting of want whose key lacks it or holds another
	// (value returns it), and deletes the keys of meetings not in want.
	Reconcile(ctx context.Context, want []string, value func(meeting string) ([]byte, error)) error
}

// ViewWrite is one write of the view: the entry of a meeting, or, with a
// nil Value, the deletion of its key.
type ViewWrite struct {
	Meeting string
	Value   []byte
}

// Lease tells this replica when it leads. Run calls lead for each term this
// replica holds the lease, with a context that ends as soon as the lease
// may be lost, and returns when ctx ends.
type Lease interface {
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// readAheadQueue bounds the meetings waiting to be read ahead; past it,
// hints are dropped: a read ahead only saves time.
const readAheadQueue = 4096

// readAhead starts the store reading ahead, and returns the hint that
// queues a meeting (it never blocks) and the stop that ends the reading
// and waits for it.
func (w *Watcher) readAhead(ctx context.Context) (hint func(meeting string), stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan string, readAheadQueue)
	var wg sync.WaitGroup
	wg.Go(func() { w.cfg.Store.ReadAhead(ctx, queue) })
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
	// View, when set, is written after the state (see the package doc);
	// its entries are made by Builder.ViewValue.
	View    View
	Builder events.Builder
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
	// viewSynced says that the view matched the committed snapshot after
	// the last reconcile, and every write of it since went through: the
	// poll then writes its changes to it, and otherwise reconciles it
	// after its commit.
	viewSynced bool
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
	// Listing, Deliver (the intents, the events and the records of every
	// chunk of changes) and Commit (the missing meetings' keys and meta) are the steps of Total, from the
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
	res, err := w.pollCommitted(ctx)
	if err != nil {
		return res, err
	}
	return res, w.reconcileView(ctx)
}

// pollCommitted is Poll but for the view's reconcile, which Run does after
// it has said that the poll committed: the events and the state do not
// wait for it, only the next poll does.
func (w *Watcher) pollCommitted(ctx context.Context) (PollResult, error) {
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
		w.viewSynced = false // a term's first poll, or one after a failure
		if err := w.load(ctx, &res); err != nil {
			return res, nil, err
		}
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
	err = w.deliver(ctx, changes, observedAt, listed, false, &res)
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
	w.state = State{Snapshot: next, ObservedAt: observedAt, Committed: true, Missing: missed, Incarnations: w.state.Incarnations}
	res.PendingEnds = len(missed)
	if w.cfg.Health != nil {
		w.cfg.Health.Polled(time.Now())
	}
	res.Total = w.cfg.Now().Sub(start)
	return res, fresh, nil
}

// reconcileView makes the view match the committed snapshot, unless it
// is known to already. A failure is logged, and the next poll tries
// again; only a fenced write, which ends the term, is returned.
func (w *Watcher) reconcileView(ctx context.Context) error {
	if w.cfg.View == nil || w.viewSynced || !w.loaded {
		return nil
	}
	start := w.cfg.Now()
	snap, incarnations := w.state.Snapshot, w.state.Incarnations
	err := w.cfg.View.Reconcile(ctx, slices.Sorted(maps.Keys(snap)), func(meeting string) ([]byte, error) {
		return w.cfg.Builder.ViewValue(snap[meeting], incarnations[meeting])
	})
	switch {
	case errors.Is(err, ErrFenced):
		return fmt.Errorf("reconciling the view: %w", err)
	case err != nil:
		w.logger.Warn("reconciling the view with the state failed; the next poll tries again", "err", err)
		return nil
	}
	w.viewSynced = true
	w.logger.Debug("view reconciled", "meetings", len(snap), "took_ms", w.cfg.Now().Sub(start).Milliseconds())
	return nil
}

// writeView writes the view of changes that the state has recorded: the
// latest record of each meeting started or changed, and the deletion of
// each ended one's key. While the view is not known to be right, it
// writes nothing: the reconcile after the commit writes it all. A write
// that fails leaves the view to that reconcile; only a fenced one is
// returned.
func (w *Watcher) writeView(ctx context.Context, changes []snapshot.Change) error {
	if w.cfg.View == nil || !w.viewSynced || len(changes) == 0 {
		return nil
	}
	writes := make([]ViewWrite, 0, len(changes))
	for _, c := range changes {
		vw := ViewWrite{Meeting: c.Key}
		if c.Kind != snapshot.Ended {
			v, err := w.cfg.Builder.ViewValue(c.New, c.Incarnation)
			if err != nil {
				w.viewSynced = false
				w.logger.Warn("the view of a meeting could not be made; the view is reconciled after the poll's commit", "meeting", c.Key, "err", err)
				return nil
			}
			vw.Value = v
		}
		writes = append(writes, vw)
	}
	err := w.cfg.View.Write(ctx, writes)
	switch {
	case errors.Is(err, ErrFenced):
		return fmt.Errorf("writing the view: %w", err)
	case err != nil:
		w.viewSynced = false
		w.logger.Warn("writing the view failed; it is reconciled with the state after the poll's commit", "err", err)
	}
	return nil
}

// load reads the state, and finishes what a poll that stopped short of its
// commit left: the events of its pending changes go out again, under the
// same ids, so JetStream keeps one copy, and their records are recorded
// and taken into the state. The diff that follows then knows them: it
// reports the end of a meeting announced but not recorded, and diffs a
// changed meeting against the record its last event announced.
// ObservedAt and Committed stay as loaded: the first snapshot's other
// meetings are still initial, and lastSeen stays a true lower bound.
func (w *Watcher) load(ctx context.Context, res *PollResult) error {
	st, err := w.cfg.Store.Load(ctx)
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	w.logger.Info("state loaded", "meetings", len(st.Snapshot), "committed", st.Committed,
		"observed_at", st.ObservedAt, "pending", len(st.Pending))
	pending := st.Pending
	st.Pending = nil
	w.state = st
	if len(pending) > 0 {
		var again PollResult
		err := w.deliver(ctx, pending, st.ObservedAt, w.cfg.Now(), true, &again)
		res.addCounts(again)
		if err != nil {
			return fmt.Errorf("publishing %d pending events: %w", len(pending), err)
		}
		for _, c := range pending {
			w.state.Snapshot[c.Key] = c.New
		}
		w.logger.Info("pending events published again", "started", again.Started, "changed", again.Changed, "duplicates", again.Duplicates)
	}
	w.loaded = true
	return nil
}

// chunkSize is how many changes a step of a delivery takes at a time: the
// events of one chunk are built and held at once.
const chunkSize = 4096

// deliver announces changes, in their order, a chunk at a time: it records
// the intents of the chunk's starts and changes, publishes their events,
// and records what they announced, each step acknowledged before the next
// begins. So each meeting's writes and events keep their order, and no
// more than one window of writes waits for its acknowledgements at once,
// however long the server takes to send them. A change confined to ignored
// fields gets no event, and so no intent: it is recorded after the others.
// The intents of pending changes, which Load returns, are written already,
// and so are their Base and Incarnation.
func (w *Watcher) deliver(ctx context.Context, changes []snapshot.Change, observedAt, listed time.Time, pending bool, res *PollResult) error {
	if !pending {
		w.stamp(changes)
	}
	announce, quiet := w.partition(changes)
	for part := range slices.Chunk(announce, chunkSize) {
		if !pending {
			if err := w.cfg.Store.Intend(ctx, part, observedAt); err != nil {
				return fmt.Errorf("before publishing: %w", err)
			}
		}
		evs, announced, err := w.build(part, listed, res)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			pr, err := w.cfg.Publisher.Send(ctx, evs)
			res.Stored += pr.Stored
			res.Duplicates += pr.Duplicates
			if err != nil {
				return fmt.Errorf("publishing %d events: %w", len(evs), err)
			}
		}
		if err := w.record(ctx, part, observedAt); err != nil {
			return err
		}
		if err := w.writeView(ctx, announced); err != nil {
			return err
		}
	}
	res.Ignored += len(quiet)
	for part := range slices.Chunk(quiet, chunkSize) {
		if err := w.record(ctx, part, observedAt); err != nil {
			return err
		}
		if err := w.writeView(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

// stamp gives the changes and ends among changes what their events' ids
// take from the state: a change's Base, the revision of the record it
// changes, and the meeting's incarnation. A start's incarnation is the
// store's to give (see StateStore.Intend).
func (w *Watcher) stamp(changes []snapshot.Change) {
	for i := range changes {
		c := &changes[i]
		if c.Kind == snapshot.Changed {
			c.Base = w.cfg.Store.Revision(c.Key)
		}
		if c.Kind != snapshot.Started {
			c.Incarnation = max(w.state.Incarnations[c.Key], 1)
		}
	}
}

// partition splits changes into those that get an event and those
// confined to ignored fields, each in their order.
func (w *Watcher) partition(changes []snapshot.Change) (announce, quiet []snapshot.Change) {
	publishes := w.cfg.Builder.Publishes
	if !slices.ContainsFunc(changes, func(c snapshot.Change) bool { return !publishes(c) }) {
		return changes, nil
	}
	for _, c := range changes {
		if publishes(c) {
			announce = append(announce, c)
		} else {
			quiet = append(quiet, c)
		}
	}
	return announce, quiet
}

// record has the store record changes, and keeps the incarnations of the
// meetings that came back after an end.
func (w *Watcher) record(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	if err := w.cfg.Store.Record(ctx, changes, observedAt); err != nil {
		return fmt.Errorf("recording what was announced: %w", err)
	}
	for _, c := range changes {
		switch {
		case c.Kind == snapshot.Ended:
			delete(w.state.Incarnations, c.Key)
		case c.Kind == snapshot.Started && c.Incarnation > 1:
			if w.state.Incarnations == nil {
				w.state.Incarnations = map[string]int{}
			}
			w.state.Incarnations[c.Key] = c.Incarnation
		}
	}
	return nil
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

// build returns the events of changes, encoded, counting them in res, and
// the changes that got one. A change whose event stays too large even
// trimmed gets none: holding every other meeting's events back for it
// would be worse. It is recorded all the same, so that later diffs start
// from it, but the view does not show what no event announced.
//
// A meeting that a committed listing missed, and this one settles as
// ended, was found gone by that listing: its endedAt is that listing's
// time, not this one's.
func (w *Watcher) build(changes []snapshot.Change, observed time.Time, res *PollResult) ([]events.Message, []snapshot.Change, error) {
	st := &w.state
	evs := make([]events.Message, 0, len(changes))
	announced := make([]snapshot.Change, 0, len(changes))
	for _, c := range changes {
		lastSeen, missed := st.ObservedAt, observed
		if t, ok := st.Missing[c.Key]; ok {
			lastSeen, missed = t, st.ObservedAt
		}
		e, err := w.cfg.Builder.Build(c, observed, !st.Committed, lastSeen)
		if errors.Is(err, snapshot.ErrTooLarge) {
			w.logger.Error("event too large to publish even trimmed; skipped", "kind", c.Kind, "meeting", c.Key, "err", err)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if c.Kind == snapshot.Ended {
			e.SetEnd(missed)
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
	if err := w.deliver(ctx, changes, w.state.ObservedAt, w.cfg.Now(), false, &step); err != nil {
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
