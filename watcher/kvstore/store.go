// Package kvstore keeps the watcher's state in a JetStream key-value
// bucket, so that a restarted or newly elected replica diffs against
// exactly what was announced.
//
// The bucket holds one key per ongoing meeting, m.<confUUID>, with the
// record last announced; one per meeting the last committed listing
// missed, e.<confUUID>; and meta, when the committed listing was observed.
// A meeting's key is written before its started or changed event is
// published, marked as an intent, and written again unmarked once the
// event is acknowledged; an ended meeting's key is deleted once its ended
// event is acknowledged, and the delete marker keeps its incarnation. So
// the last write of a key says what was announced: an unmarked record was,
// a marked one may not have been. Load takes the unmarked records as the
// snapshot and the marked ones as pending, whoever wrote them and whenever,
// and the watcher publishes their events again under the same ids before
// its next diff. Every write of a meeting's key, and of meta, expects the
// revision this replica last read or wrote, so a former leader's late
// write never lands over a newer one; an e. key counts only when it names
// the listing that meta names.
package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/jsensure"
	"github.com/meetwatch/meetwatch/internal/pubwindow"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// Store keeps watcher.State in a JetStream key-value bucket, as the
// package's doc says. A snapshot of thousands of meetings is far larger
// than a NATS message may be, so it is never one value, and a poll writes
// only what changed.
type Store struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// subjects is the prefix of the bucket's subjects, "$KV.<bucket>.":
	// a poll's writes are asynchronous publishes to them.
	subjects  string
	stream    string
	markerTTL time.Duration
	guard     func() error
	logger    *slog.Logger

	mu      sync.Mutex
	metaRev uint64
	// revs holds, by a hash of the key (seeded with seed), the revision of
	// each meeting's key this replica last read or wrote, which its next
	// write of the key expects. A hash keeps the map small at 100,000
	// meetings; two keys sharing one would only fail a poll, which loads
	// again.
	revs map[uint64]uint64
	seed maphash.Seed
}

// ErrKeyMoved means a meeting's key was written by someone else since this
// replica read or wrote it: another replica leads, or led after this one.
// It comes wrapped with watcher.ErrFenced, so the term ends; the next term
// loads the state again.
var ErrKeyMoved = errors.New("a meeting's key was written by another replica")

var _ watcher.StateStore = (*Store)(nil)

// Config configures the state bucket.
type Config struct {
	// Bucket is the key-value bucket's name.
	Bucket string
	// Replicas is the bucket's replica count when Open creates it; 0
	// means 1.
	Replicas int
	// DuplicateWindow is the event stream's duplicate window: the delete
	// marker of an ended meeting's key stays that long, so that a meeting
	// listed again within it gets a new incarnation, and events JetStream
	// does not drop. 0 means an hour.
	DuplicateWindow time.Duration
	// Guard, when set, is asked before every write, and an error it
	// returns stops the write: the lease's check that this replica still
	// leads by its own clock.
	Guard func() error
	// Logger hears of loads that stalled and started again; nil discards.
	Logger *slog.Logger
	// Conflict, when set, hears of each setting of an existing bucket
	// that keeps the state from a guarantee and that Open leaves as the
	// operator set it, as a sentence for the readiness probe.
	Conflict func(msg string)
}

const (
	metaKey       = "meta"
	meetingPrefix = "m."
	missingPrefix = "e."
	// intentHeader marks a write of a meeting's key made before its event
	// is published; its value is the event's kind.
	intentHeader  = "Meetwatch-Intent"
	intentStarted = "started"
	intentChanged = "changed"
	// previousHeader carries, on a changed meeting's intent, the record
	// before the change in standard base64, and baseHeader that record's
	// revision (snapshot.Change.Base): what the event's id is made of.
	previousHeader = "Meetwatch-Previous"
	baseHeader     = "Meetwatch-Base"
	// incarnationHeader carries the meeting's incarnation on every write
	// of its key, its delete marker included; a key without one is in its
	// first.
	incarnationHeader = "Meetwatch-Incarnation"
	// observedHeader carries, on every record, when the listing that
	// wrote it was observed: the lastSeen of meetings that no commit has
	// covered yet.
	observedHeader = "Meetwatch-Observed"
	// headroom is what a write's subject and headers other than
	// previousHeader take at most.
	headroom = 1024
	// loadStall bounds each step of a load (the meta key, the consumer,
	// the gap between two keys): a load that starts while the bucket's
	// stream has no leader gets no answer until one is elected, and
	// starts again after it rather than waiting out the poll's deadline.
	loadStall = 2 * time.Second
)

// Open opens the state bucket, creating it when it is missing. An existing
// bucket keeps the settings an operator gave it: only per-message TTLs are
// added when it lacks them, since without them the markers of ended
// meetings would stay for good and every start-up would read them all. A
// TTL, or a discard policy that drops old values at a limit, is kept too,
// but logged at WARN and reported to Conflict: either lets the key of a
// meeting still going on vanish, and the meeting be announced again.
//
// The poll's writes go out as asynchronous publishes through js, at most
// pubwindow.Window unacknowledged: give it the context the events go
// through (publish.Publisher.JetStream), whose cap covers that window and
// whose acknowledgement timeout fails a write that gets no answer.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "state")
	markerTTL := cfg.DuplicateWindow
	if markerTTL <= 0 {
		markerTTL = time.Hour
	}
	kv, bucket, err := jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "meetwatch: the last committed snapshot, one key per meeting",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		LimitMarkerTTL: markerTTL,
	}, func(c *jetstream.StreamConfig) []string {
		if c.AllowMsgTTL {
			return nil
		}
		c.AllowMsgTTL = true
		return []string{"per-message TTLs"}
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("opening state bucket: %w", err)
	}
	for _, c := range stateConflicts(cfg.Bucket, bucket) {
		logger.Warn("the state bucket's settings let a meeting's key vanish; keeping them", "bucket", cfg.Bucket, "conflict", c)
		if cfg.Conflict != nil {
			cfg.Conflict(c)
		}
	}
	s := newStore(js, kv, cfg.Bucket, cfg.Guard, logger)
	if bucket.AllowMsgTTL { // a bucket that refuses per-message TTLs keeps its markers
		s.markerTTL = markerTTL
	}
	return s, nil
}

func newStore(js jetstream.JetStream, kv jetstream.KeyValue, bucket string, guard func() error, logger *slog.Logger) *Store {
	return &Store{kv: kv, js: js, subjects: "$KV." + bucket + ".", stream: "KV_" + bucket, guard: guard, logger: logger, seed: maphash.MakeSeed()}
}

// stateConflicts returns what in the configuration of the state bucket
// lets the key of a meeting still going on vanish, one sentence each.
func stateConflicts(bucket string, c jetstream.StreamConfig) []string {
	var out []string
	if c.MaxAge > 0 {
		out = append(out, fmt.Sprintf("state bucket %s has a TTL of %s: keys not written for that long expire, and meetings still going on are announced as started again", bucket, c.MaxAge))
	}
	if c.Discard == jetstream.DiscardOld && (c.MaxBytes > 0 || c.MaxMsgs > 0) {
		out = append(out, fmt.Sprintf("state bucket %s discards old values at its limits (max bytes %d, max values %d): the keys of meetings still going on may go, and those meetings be announced as started again", bucket, c.MaxBytes, c.MaxMsgs))
	}
	return out
}

// metaValue is the value of the meta key.
type metaValue struct {
	ObservedAt time.Time `json:"observedAt"`
	Meetings   int       `json:"meetings"`
	// Through is set only by earlier versions, whose commits covered the
	// intents written up to that revision: those are records (see
	// loader.meeting).
	Through uint64 `json:"through,omitempty"`
}

// missingValue is the value of a missing meeting's key: when it was last
// seen, and when the listing that missed it was observed.
type missingValue struct {
	ConfUUID   string    `json:"confUUID"`
	LastSeen   time.Time `json:"lastSeen"`
	ObservedAt time.Time `json:"observedAt"`
}

func meetingKey(confUUID string) string { return meetingPrefix + events.Token(confUUID) }

// Load reads the state, and tidies the bucket: it clears the e. keys that
// do not count, and writes unmarked the records an earlier version
// committed as intents.
func (s *Store) Load(ctx context.Context) (watcher.State, error) { return s.load(ctx, true) }

// Read returns the state of the bucket named bucket as a replica would
// load it, without writing anything: for tools that only look. The bucket
// must exist.
func Read(ctx context.Context, js jetstream.JetStream, bucket string) (watcher.State, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return watcher.State{}, fmt.Errorf("opening state bucket %s: %w", bucket, err)
	}
	s := newStore(js, kv, bucket, func() error { return errors.New("read only") }, slog.New(slog.DiscardHandler))
	return s.load(ctx, false)
}

// errStalled means a step of a load got no answer within loadStall.
var errStalled = errors.New("no answer from the state bucket's stream")

// load reads the state, starting again while the bucket's stream does not
// answer (its leader lost, a new one not yet elected), until ctx ends.
func (s *Store) load(ctx context.Context, tidy bool) (watcher.State, error) {
	for {
		st, err := s.loadOnce(ctx, tidy)
		if !errors.Is(err, errStalled) || ctx.Err() != nil {
			return st, err
		}
		s.logger.Warn("loading the state stalled; starting it again", "err", err)
		select {
		case <-ctx.Done():
			return watcher.State{}, fmt.Errorf("loading state: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Store) loadOnce(ctx context.Context, tidy bool) (watcher.State, error) {
	e, err := s.get(ctx, metaKey)
	var meta metaValue
	var metaRev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return watcher.State{}, fmt.Errorf("reading state meta: %w", err)
	default:
		if err := json.Unmarshal(e.Value(), &meta); err != nil {
			return watcher.State{}, fmt.Errorf("decoding state meta: %w", err)
		}
		metaRev = e.Revision()
	}
	l := &loader{meta: meta, hash: s.hash, revs: map[uint64]uint64{}, missing: map[string]missingValue{},
		st: watcher.State{Snapshot: snapshot.Snapshot{}, Committed: metaRev != 0, ObservedAt: meta.ObservedAt}}
	if err := s.readAll(ctx, l.take); err != nil {
		return watcher.State{}, err
	}
	l.finish()
	s.mu.Lock()
	s.metaRev, s.revs = metaRev, l.revs
	s.mu.Unlock()
	if tidy {
		if err := s.writeAll(ctx, l.tidy); err != nil {
			return watcher.State{}, fmt.Errorf("tidying the state: %w", err)
		}
	}
	return l.st, nil
}

// get reads key, in loadStall at most.
func (s *Store) get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	gctx, cancel := context.WithTimeout(ctx, loadStall)
	defer cancel()
	e, err := s.kv.Get(gctx, key)
	if err != nil && gctx.Err() != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("reading %s: %w: %w", key, errStalled, err)
	}
	return e, err
}

// loader builds the state from the last message of each key.
type loader struct {
	meta    metaValue
	hash    func(key string) uint64
	st      watcher.State
	revs    map[uint64]uint64
	missing map[string]missingValue
	// oldest is the earliest observedHeader seen: before a first commit,
	// every meeting's lastSeen.
	oldest time.Time
	// tidy holds the writes that put the bucket in order.
	tidy []write
}

func (l *loader) take(key string, h nats.Header, data []byte, rev uint64) error {
	if deleted(h) {
		return nil // a start writes over its marker: see overMarker
	}
	switch {
	case strings.HasPrefix(key, meetingPrefix):
		l.revs[l.hash(key)] = rev
		return l.meeting(key, h, data, rev)
	case strings.HasPrefix(key, missingPrefix):
		var v missingValue
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("decoding state key %s: %w", key, err)
		}
		if v.ObservedAt.IsZero() || !v.ObservedAt.Equal(l.meta.ObservedAt) {
			// Written for a commit that never landed, or late by a
			// former leader: taken as missing, it would end its meeting
			// with one listing.
			l.tidy = append(l.tidy, write{key: key, purge: true})
			return nil
		}
		l.missing[v.ConfUUID] = v
	}
	return nil
}

// meeting takes the record of a meeting's key: unmarked, into the
// snapshot; marked, as pending.
func (l *loader) meeting(key string, h nats.Header, data []byte, rev uint64) error {
	rec, err := snapshot.ParseMeeting(data)
	if err != nil {
		return fmt.Errorf("decoding state key %s: %w", key, err)
	}
	inc, err := incarnation(h)
	if err != nil {
		return fmt.Errorf("decoding state key %s: %w", key, err)
	}
	if inc > 1 {
		if l.st.Incarnations == nil {
			l.st.Incarnations = map[string]int{}
		}
		l.st.Incarnations[rec.UUID] = inc
	}
	if !l.st.Committed {
		if at, err := time.Parse(time.RFC3339Nano, h.Get(observedHeader)); err == nil && (l.oldest.IsZero() || at.Before(l.oldest)) {
			l.oldest = at
		}
	}
	intent := h.Get(intentHeader)
	if intent != "" && rev <= l.meta.Through {
		// An earlier version's commit covered it: a record, written
		// unmarked now so that the rule of the package holds for it.
		l.tidy = append(l.tidy, write{key: key, value: rec.Raw(), incarnation: inc, observed: l.meta.ObservedAt})
		intent = ""
	}
	switch intent {
	case "":
		l.st.Snapshot[rec.UUID] = rec
	case intentChanged:
		c, err := pendingChange(rec, h.Get(previousHeader), h.Get(baseHeader))
		if err != nil {
			return fmt.Errorf("decoding state key %s: %w", key, err)
		}
		l.st.Snapshot[rec.UUID] = c.Old
		if c.Kind == snapshot.Changed {
			c.Incarnation = inc
			l.st.Pending = append(l.st.Pending, c)
		}
	default:
		l.st.Pending = append(l.st.Pending, snapshot.Change{Kind: snapshot.Started, Key: rec.UUID, New: rec, Incarnation: inc})
	}
	return nil
}

// finish completes the state once every key is read: the missing meetings
// that are still there, and the lastSeen of a state never committed.
func (l *loader) finish() {
	slices.SortFunc(l.st.Pending, func(a, b snapshot.Change) int { return strings.Compare(a.Key, b.Key) })
	for id, v := range l.missing {
		_, held := l.st.Snapshot[id]
		if !held && !slices.ContainsFunc(l.st.Pending, func(c snapshot.Change) bool { return c.Key == id }) {
			// Its end was announced and its key deleted, and the commit
			// that would have cleared this one was cut short.
			l.tidy = append(l.tidy, write{key: missingPrefix + events.Token(id), purge: true})
			continue
		}
		if l.st.Missing == nil {
			l.st.Missing = map[string]time.Time{}
		}
		l.st.Missing[id] = v.LastSeen
	}
	if !l.st.Committed {
		l.st.ObservedAt = l.oldest
	}
}

// deleted reports whether a key's last message is a delete marker: a
// purge, or the server's marker of a key it removed.
func deleted(h nats.Header) bool {
	return h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// incarnation returns the incarnation a key's message carries; 1 when
// none.
func incarnation(h nats.Header) (int, error) {
	v := h.Get(incarnationHeader)
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("incarnation %q: not a positive integer", v)
	}
	return n, nil
}

// pendingChange returns the change a changed meeting's intent records:
// from the record before it, carried base64 in prev, to rec. An intent
// whose record before was too large to carry has none: it is returned as
// no change, rec standing as written.
func pendingChange(rec snapshot.Meeting, prev, base string) (snapshot.Change, error) {
	if prev == "" {
		return snapshot.Change{Key: rec.UUID, Old: rec}, nil
	}
	b, err := strconv.ParseUint(base, 10, 64)
	if err != nil && base != "" {
		return snapshot.Change{}, fmt.Errorf("decoding the base of the change: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(prev)
	if err != nil {
		return snapshot.Change{}, fmt.Errorf("decoding the record before the change: %w", err)
	}
	old, err := snapshot.ParseMeeting(raw)
	if err != nil {
		return snapshot.Change{}, fmt.Errorf("decoding the record before the change: %w", err)
	}
	return snapshot.Change{Kind: snapshot.Changed, Key: rec.UUID, Old: old, New: rec,
		Fields: snapshot.CompareRecords(old.Raw(), rec.Raw()), Base: b}, nil
}

// readAll hands fn the last message of every key of the bucket, with its
// revision, and returns once each was handed over: one pass of an ordered
// consumer, far faster than a Get per key, and unlike a key-value watch it
// sees each write's headers. It reads every key rather than filtering by
// prefix: nats-server serves a consumer over several filters slowly once
// many delete markers have expired.
func (s *Store) readAll(ctx context.Context, fn func(key string, h nats.Header, data []byte, rev uint64) error) error {
	legacy, err := s.js.Conn().JetStream()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	msgs, done := make(chan *nats.Msg, 1024), make(chan struct{})
	defer close(done) // after the unsubscribe below: a callback still running returns
	// The subscription lives as long as the context given to it, so that
	// context lives as long as the load; only a timer that stops once the
	// consumer is made bounds its creation.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	creating := time.AfterFunc(loadStall, cancel)
	sub, err := legacy.Subscribe(s.subjects+">", func(m *nats.Msg) {
		select {
		case msgs <- m:
		case <-done:
		case <-ctx.Done():
		}
	}, nats.BindStream(s.stream), nats.OrderedConsumer(), nats.DeliverLastPerSubject(), nats.Context(sctx))
	late := !creating.Stop() && ctx.Err() == nil // the timer fired: sctx is done
	switch {
	case late && err == nil:
		_ = sub.Unsubscribe()
		return fmt.Errorf("loading state: its consumer came after %s: %w", loadStall, errStalled)
	case late:
		return fmt.Errorf("loading state: %w: %w", errStalled, err)
	case err != nil:
		return fmt.Errorf("loading state: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	left, err := sub.InitialConsumerPending()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	stall := time.NewTimer(loadStall)
	defer stall.Stop()
	for left > 0 {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return fmt.Errorf("loading state: %w", context.Cause(ctx))
		case <-stall.C:
			return fmt.Errorf("loading state: %d keys still to come: %w", left, errStalled)
		case m = <-msgs:
			stall.Reset(loadStall)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("loading state: %w", err)
		}
		if err := fn(strings.TrimPrefix(m.Subject, s.subjects), m.Header, m.Data, md.Sequence.Stream); err != nil {
			return err
		}
		left = md.NumPending // keys written while the state loads are not waited for
	}
	return nil
}

// Intend writes the keys of the started and changed meetings among
// changes, marked as intents, before their events are published: Load
// returns them as pending until Record writes them unmarked. It sets each
// started change's Incarnation: 1, or one more than the end whose delete
// marker its key holds.
func (s *Store) Intend(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	writes := make([]write, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		w := write{key: meetingKey(c.Key), value: c.New.Raw(), incarnation: max(c.Incarnation, 1), observed: observedAt}
		switch c.Kind {
		case snapshot.Started:
			c.Incarnation, w.incarnation = 1, 1
			w.intent, w.started = intentStarted, c
		case snapshot.Changed:
			w.intent, w.base = intentChanged, c.Base
			// A record near the size limit cannot carry another: its
			// intent says only that a change was under way.
			if len(w.value)+base64.StdEncoding.EncodedLen(len(c.Old.Raw()))+headroom <= int(s.js.Conn().MaxPayload()) {
				w.previous = c.Old.Raw()
			}
		default:
			continue
		}
		writes = append(writes, w)
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("recording meetings about to be announced: %w", err)
	}
	return nil
}

// Record writes what changes announced, once their events are
// acknowledged (or once they are known to need none): the record of each
// started or changed meeting, unmarked, and the delete marker of each
// ended one.
func (s *Store) Record(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	writes := make([]write, 0, len(changes))
	for _, c := range changes {
		w := write{key: meetingKey(c.Key), incarnation: max(c.Incarnation, 1), purge: c.Kind == snapshot.Ended}
		if !w.purge {
			w.value, w.observed = c.New.Raw(), observedAt
		}
		writes = append(writes, w)
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("writing meeting keys: %w", err)
	}
	return nil
}

// ReadAhead reads the key of each meeting from meetings, a few at a time,
// until ctx ends, and drops what it read: nats-server writes a key far
// faster once it holds the key's block in memory again (see
// watcher.StateStore). The reads are direct gets, the requests Load makes
// already; one that fails is of no consequence.
func (s *Store) ReadAhead(ctx context.Context, meetings <-chan string) {
	const concurrency = 8
	api := "$JS.API.DIRECT.GET." + s.stream + "." + s.subjects
	slots := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var id string
		select {
		case <-ctx.Done():
			return
		case id = <-meetings:
		}
		select {
		case <-ctx.Done():
			return
		case slots <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-slots }()
			_, _ = s.js.Conn().RequestWithContext(ctx, api+meetingKey(id), nil)
		})
	}
}

// Commit makes the listing observed at commit.ObservedAt the committed
// one: the e. keys of the meetings it missed, and those of the meetings
// settled cleared, then meta, by compare-and-set on the revision this
// replica last saw, so that a replica that lost the lead gets
// watcher.ErrFenced instead of committing over a newer leader's state.
func (s *Store) Commit(ctx context.Context, commit watcher.Commit) error {
	at := commit.ObservedAt.UTC()
	writes := make([]write, 0, len(commit.Missed)+len(commit.Settled))
	for id, lastSeen := range commit.Missed {
		v, err := json.Marshal(missingValue{ConfUUID: id, LastSeen: lastSeen.UTC(), ObservedAt: at})
		if err != nil {
			return fmt.Errorf("recording %s as missing: %w", id, err)
		}
		writes = append(writes, write{key: missingPrefix + events.Token(id), value: v})
	}
	for _, id := range commit.Settled {
		writes = append(writes, write{key: missingPrefix + events.Token(id), purge: true})
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("committing missing meetings: %w", err)
	}
	meta, err := json.Marshal(metaValue{ObservedAt: at, Meetings: commit.Meetings})
	if err != nil {
		return fmt.Errorf("encoding state meta: %w", err)
	}
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	rev := s.metaRev
	s.mu.Unlock()
	if rev == 0 {
		rev, err = s.kv.Create(ctx, metaKey, meta)
	} else {
		rev, err = s.kv.Update(ctx, metaKey, meta, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("committing state meta: %w: %w", watcher.ErrFenced, err)
	case err != nil:
		return fmt.Errorf("committing state meta: %w", err)
	}
	s.mu.Lock()
	s.metaRev = rev
	s.mu.Unlock()
	return nil
}

// write is one key write: value, or a delete marker (purge). A meeting's
// key carries its incarnation; a record, when it was observed; an intent,
// its kind, and a change's record before and base.
type write struct {
	key         string
	value       []byte
	purge       bool
	incarnation int
	observed    time.Time
	intent      string
	previous    []byte
	base        uint64
	// started is a started meeting's change, whose Incarnation overMarker
	// sets.
	started *snapshot.Change
}

// writeAll stores writes and returns once every one is acknowledged, or
// with the first that failed: asynchronous publishes with the headers a
// put or a purge of jetstream.KeyValue carries, within pubwindow's window.
func (s *Store) writeAll(ctx context.Context, writes []write) error {
	return pubwindow.Publish(ctx, s.js, len(writes), pubwindow.Window,
		func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
			if err := s.check(); err != nil {
				return nil, nil, err
			}
			msg, opts := s.message(writes[i])
			return msg, opts, nil
		},
		func(i int, ack *jetstream.PubAck, err error) error {
			w := &writes[i]
			if wrongLastSequence(err) && w.started != nil {
				ack, err = s.overMarker(ctx, w, err)
			}
			switch {
			case wrongLastSequence(err):
				return fmt.Errorf("writing %s: %w: %w: %w", w.key, watcher.ErrFenced, ErrKeyMoved, err)
			case err != nil:
				return fmt.Errorf("writing %s: %w", w.key, err)
			case strings.HasPrefix(w.key, meetingPrefix):
				s.setRev(w.key, ack.Sequence, w.purge)
			}
			return nil
		})
}

// message returns the message and options that store w: a meeting key's
// with a compare-and-set on the revision this replica knows of it.
func (s *Store) message(w write) (*nats.Msg, []jetstream.PublishOpt) {
	msg := nats.NewMsg(s.subjects + w.key)
	var opts []jetstream.PublishOpt
	if strings.HasPrefix(w.key, meetingPrefix) {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(s.rev(w.key)))
		msg.Header.Set(incarnationHeader, strconv.Itoa(w.incarnation))
	}
	if w.purge {
		msg.Header.Set("KV-Operation", "PURGE")
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		if s.markerTTL > 0 {
			opts = append(opts, jetstream.WithMsgTTL(s.markerTTL))
		}
		return msg, opts
	}
	msg.Data = w.value
	if !w.observed.IsZero() {
		msg.Header.Set(observedHeader, w.observed.UTC().Format(time.RFC3339Nano))
	}
	if w.intent != "" {
		msg.Header.Set(intentHeader, w.intent)
	}
	if w.previous != nil {
		msg.Header.Set(previousHeader, base64.StdEncoding.EncodeToString(w.previous))
		msg.Header.Set(baseHeader, strconv.FormatUint(w.base, 10))
	}
	return msg, opts
}

// wrongLastSequence reports whether err is the server's refusal of a write
// whose compare-and-set found another revision.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// overMarker writes again the intent of a started meeting that the server
// refused with refused: this replica forgets a key once it deletes it, and
// Load ignores delete markers, so a meeting listed again after its end
// finds the marker there. When the key's last message is such a marker, or
// there is none, the intent goes again at that revision, as the next
// incarnation after the marker's; when it is a record, another replica
// wrote it, and refused stands.
func (s *Store) overMarker(ctx context.Context, w *write, refused error) (*jetstream.PubAck, error) {
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return nil, fmt.Errorf("%w (reading the stream to look at the key: %w)", refused, err)
	}
	rev, inc := uint64(0), 1
	last, err := stream.GetLastMsgForSubject(ctx, s.subjects+w.key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return nil, fmt.Errorf("%w (looking at the key: %w)", refused, err)
	case last.Header.Get("KV-Operation") != "":
		ended, err := incarnation(last.Header)
		if err != nil {
			return nil, fmt.Errorf("%w (reading the key's marker: %w)", refused, err)
		}
		rev, inc = last.Sequence, ended+1
	case deleted(last.Header): // the server's, of a record it removed: nothing known of it
		rev = last.Sequence
	default:
		return nil, refused
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	s.setRev(w.key, rev, false)
	w.incarnation, w.started.Incarnation = inc, inc
	msg, opts := s.message(*w)
	s.logger.Debug("writing a started meeting's key over the marker of its earlier end", "key", w.key, "revision", rev, "incarnation", inc)
	return s.js.PublishMsg(ctx, msg, opts...)
}

// Revision returns the revision of the stored record of the meeting with
// confUUID, as this replica knows it; 0 when it knows none.
func (s *Store) Revision(confUUID string) uint64 { return s.rev(meetingKey(confUUID)) }

func (s *Store) hash(key string) uint64 { return maphash.String(s.seed, key) }

// rev returns the revision this replica knows of a meeting key; 0, which
// the server reads as "no message yet", when it knows none.
func (s *Store) rev(key string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[s.hash(key)]
}

// setRev records a meeting key's revision after a write; a deleted key's
// meeting ended, and is forgotten, so that the map does not grow with
// every meeting that ever ended.
func (s *Store) setRev(key string, rev uint64, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revs == nil {
		s.revs = map[uint64]uint64{}
	}
	if deleted {
		delete(s.revs, s.hash(key))
		return
	}
	s.revs[s.hash(key)] = rev
}

// check asks the guard, when there is one, whether this replica may write.
func (s *Store) check() error {
	if s.guard == nil {
		return nil
	}
	return s.guard()
}
