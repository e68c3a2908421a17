// Package kvstore keeps the watcher's state, the last committed snapshot, in
// a JetStream key-value bucket, one key per meeting, so that a restarted or
// newly elected replica diffs against exactly what was announced.
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

// Store keeps watcher.State in a JetStream key-value bucket, one key per meeting.
//
// A snapshot of thousands of meetings is far larger than a NATS message may
// be, so it is never one value. Keys are "m.<confUUID>" (see events.Token)
// holding the record, "e.<confUUID>" for a meeting whose end waits for the
// next listing, and "meta" holding when the committed snapshot was
// observed. A poll writes only what changed, and meta last.
//
// The key of a started or changed meeting is written before its event is
// published, marked with the intent header (a changed one's also carries
// the record before the change); every other write follows the
// acknowledgement of its event, and a changed meeting's key is written
// again, unmarked, once its event is. A key written after the last commit
// (past the revision its meta names as covered: every write its writer
// had seen acknowledged) is therefore either the record of an acknowledged
// event, or, when marked, a start or a change that may not have been
// announced: Load returns those as Pending, so that the next leader
// announces them again under the same ids instead of diffing past them.
// Without that, a change announced but not stored would be announced a
// second time against the older record, and consumers would see the
// meeting's changes fork.
type Store struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// subjects is the prefix of the bucket's subjects, "$KV.<bucket>.":
	// the bulk writes of a poll are publishes to them.
	subjects  string
	stream    string
	markerTTL time.Duration
	guard     func() error
	logger    *slog.Logger

	// metaRev is the revision of the meta key this replica last read or
	// wrote. The meta key is written with a compare-and-set on it, so a
	// replica that lost the lead cannot commit over a newer leader's state.
	mu         sync.Mutex
	metaRev    uint64
	preparedAt time.Time

	// revs holds, by a hash of the key (seeded with seed), the revision
	// of every meeting key this replica last read or wrote. Each write of a
	// meeting key expects it (Nats-Expected-Last-Subject-Sequence), so the
	// server refuses a write made over another replica's: a former leader
	// that wakes with writes in flight cannot undo a newer leader's state.
	// A hash rather than the key keeps the map small at 100,000 meetings;
	// two keys sharing one would only fail a poll, which loads again.
	revMu sync.Mutex
	revs  map[uint64]uint64
	seed  maphash.Seed
	// seen is the highest revision of the bucket this replica has read or
	// had acknowledged: what its next commit covers.
	seen uint64
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
	preparedKey   = "prepared"
	meetingPrefix = "m."
	// legacyPendingPrefix keyed, in earlier versions, the started meetings
	// of a poll before their events went out. Load still reads any that a
	// crash left behind as pending, turns them into intents and clears
	// them.
	legacyPendingPrefix = "p."
	// missingPrefix keys a meeting that a complete listing lacked and whose
	// end waits for the next one; its value says when it was last seen.
	missingPrefix = "e."
	// intentHeader marks the write of a started or changed meeting's key,
	// made before its event is published; its value is the kind.
	intentHeader  = "Meetwatch-Intent"
	intentStarted = "started"
	intentChanged = "changed"
	// previousHeader carries, on a changed meeting's intent, its record
	// before the change, in standard base64: what the changed event is
	// built from, and so its id.
	previousHeader = "Meetwatch-Previous"
	// baseHeader carries, on a changed meeting's intent, the change's
	// Base (the revision of the record before it), part of its event's id.
	baseHeader = "Meetwatch-Base"
	// headroom is what a write's subject and headers other than
	// previousHeader take at most.
	headroom = 1024
	// tombstoneTTL is how long the marker of an ended meeting's key stays.
	// Without a limit, every meeting that ever ended would leave a marker
	// behind for good, and every start-up would read them all.
	tombstoneTTL = time.Hour
)

// Open opens the state bucket, creating it when it is missing. An
// existing bucket keeps the settings an operator gave it (its size,
// replicas, placement, description): only per-message TTLs are added when
// it lacks them, since without them the markers of ended meetings would
// stay for good and every start-up would read them all. A TTL, or a
// discard policy that drops old values at a limit, is kept too, but logged
// at WARN and reported to Conflict: either lets the key of a meeting still
// going on vanish, and the meeting be announced as started again.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "state")
	kv, bucket, err := jsensure.Bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "meetwatch: the last committed snapshot, one key per meeting",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		LimitMarkerTTL: tombstoneTTL,
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
	// The poll's writes get an acknowledgement deadline of their own: one
	// lost with a connection must fail the poll, not hang it. Its two
	// streams of writes (the starts' keys, and the other changes' intents
	// and keys beside them) share the client, each with up to writeWindow
	// unacknowledged: with room for one window only, the client failed a
	// write outright once acknowledgements came slowly.
	wjs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncTimeout(writeAckWait), jetstream.WithPublishAsyncMaxPending(2*writeWindow))
	if err != nil {
		return nil, fmt.Errorf("opening jetstream for state writes: %w", err)
	}
	s := &Store{kv: kv, js: wjs, subjects: "$KV." + cfg.Bucket + ".", stream: "KV_" + cfg.Bucket, guard: cfg.Guard,
		logger: logger, seed: maphash.MakeSeed()}
	if bucket.AllowMsgTTL { // a bucket that refuses per-message TTLs keeps its markers
		s.markerTTL = tombstoneTTL
	}
	return s, nil
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

type metaValue struct {
	ObservedAt time.Time `json:"observedAt"`
	Meetings   int       `json:"meetings"`
	// Through is the highest revision the commit covers: an intent
	// written past it was not covered. Without it (a meta written by an
	// earlier version), the meta's own revision is the bound; but a
	// former leader's commit that lands late, after a new leader loaded
	// and wrote intents, would then cover those, unannounced as they may
	// be.
	Through uint64 `json:"through,omitempty"`
}

func meetingKey(confUUID string) string { return meetingPrefix + events.Token(confUUID) }

// Load reads the committed state, and tidies what a poll cut short left:
// pending keys of earlier versions become intents, and the missing
// records of meetings whose end was committed go.
func (s *Store) Load(ctx context.Context) (watcher.State, error) { return s.load(ctx, true) }

// Read returns the committed state of the bucket named bucket as a
// replica would load it, without writing anything: for tools that only
// look. The bucket must exist.
func Read(ctx context.Context, js jetstream.JetStream, bucket string) (watcher.State, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return watcher.State{}, fmt.Errorf("opening state bucket %s: %w", bucket, err)
	}
	s := &Store{kv: kv, js: js, subjects: "$KV." + bucket + ".", stream: "KV_" + bucket,
		guard: func() error { return errors.New("read only") }, logger: slog.New(slog.DiscardHandler), seed: maphash.MakeSeed()}
	return s.load(ctx, false)
}

// errStalled means a step of a load got no answer within loadStall.
var errStalled = errors.New("no answer from the state bucket's stream")

// load reads the state, starting again while the bucket's stream does not
// answer (its leader lost, a new one not yet elected), until ctx ends.
func (s *Store) load(ctx context.Context, repair bool) (watcher.State, error) {
	for {
		st, err := s.loadOnce(ctx, repair)
		if !errors.Is(err, errStalled) || ctx.Err() != nil {
			return st, err
		}
		// A stream leader elected meanwhile answers the next try; a slow
		// load should show why it was slow.
		s.logger.Warn("loading the state stalled; starting it again", "err", err)
		select {
		case <-ctx.Done():
			return watcher.State{}, fmt.Errorf("loading state: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
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

func (s *Store) loadOnce(ctx context.Context, repair bool) (watcher.State, error) {
	st := watcher.State{Snapshot: snapshot.Snapshot{}}
	var committedRev uint64 // the last commit covers the keys up to it
	e, err := s.get(ctx, metaKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		s.setMetaRev(0)
		// No snapshot was ever committed, but a first poll may have got as
		// far as preparing: its observation time is then every pending
		// meeting's lastSeen.
		if p, err := s.get(ctx, preparedKey); err == nil {
			var m metaValue
			if err := json.Unmarshal(p.Value(), &m); err != nil {
				return watcher.State{}, fmt.Errorf("decoding prepared time: %w", err)
			}
			st.ObservedAt = m.ObservedAt
			s.mu.Lock()
			s.preparedAt = m.ObservedAt
			s.mu.Unlock()
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return watcher.State{}, fmt.Errorf("reading prepared time: %w", err)
		}
	case err != nil:
		return watcher.State{}, fmt.Errorf("reading state meta: %w", err)
	default:
		s.setMetaRev(e.Revision())
		var m metaValue
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			return watcher.State{}, fmt.Errorf("decoding state meta: %w", err)
		}
		st.ObservedAt, st.Committed = m.ObservedAt, true
		committedRev = e.Revision()
		if m.Through > 0 {
			committedRev = m.Through
		}
	}

	pending := map[string]snapshot.Change{}
	legacy := snapshot.Snapshot{}
	missing := map[string]time.Time{}
	revs := map[uint64]uint64{}
	var seen uint64
	var uncommitted []string // missing meetings' keys past the commit
	err = s.readAll(ctx, func(m *nats.Msg, rev uint64) error {
		key := strings.TrimPrefix(m.Subject, s.subjects)
		seen = max(seen, rev)
		if strings.HasPrefix(key, meetingPrefix) {
			revs[s.hash(key)] = rev
		}
		if m.Header.Get("KV-Operation") != "" {
			return nil // deleted or purged
		}
		switch {
		case strings.HasPrefix(key, meetingPrefix), strings.HasPrefix(key, legacyPendingPrefix):
			rec, err := snapshot.ParseMeeting(m.Data)
			if err != nil {
				return fmt.Errorf("decoding state key %s: %w", key, err)
			}
			switch intent := m.Header.Get(intentHeader); {
			case strings.HasPrefix(key, legacyPendingPrefix):
				legacy[rec.UUID] = rec
			case rev <= committedRev || intent == "":
				st.Snapshot[rec.UUID] = rec
			case intent == intentChanged:
				c, err := pendingChange(rec, m.Header.Get(previousHeader), m.Header.Get(baseHeader))
				if err != nil {
					return fmt.Errorf("decoding state key %s: %w", key, err)
				}
				if c.Kind == snapshot.Changed {
					pending[rec.UUID] = c
				}
				st.Snapshot[rec.UUID] = c.Old
			default:
				pending[rec.UUID] = snapshot.Change{Kind: snapshot.Started, Key: rec.UUID, New: rec}
			}
		case strings.HasPrefix(key, missingPrefix):
			if rev > committedRev {
				// Written for a commit that never landed (or a former
				// leader's, sent late): not part of the state. Taken as
				// missing, it would end its meeting with one listing.
				uncommitted = append(uncommitted, key)
				return nil
			}
			var v missingValue
			if err := json.Unmarshal(m.Data, &v); err != nil {
				return fmt.Errorf("decoding state key %s: %w", key, err)
			}
			missing[v.ConfUUID] = v.LastSeen
		}
		return nil // meta and prepared were read before
	})
	if err != nil {
		return watcher.State{}, err
	}
	s.revMu.Lock()
	s.revs, s.seen = revs, seen
	s.revMu.Unlock()
	if len(legacy) > 0 && repair {
		// Each becomes an intent of today's kind before it goes.
		var moved []write
		for id, m := range legacy {
			if _, committed := st.Snapshot[id]; !committed {
				pending[id] = snapshot.Change{Kind: snapshot.Started, Key: id, New: m}
				moved = append(moved, write{key: meetingKey(id), value: m.Raw(), intent: intentStarted})
			}
		}
		if err := s.writeAll(ctx, moved); err != nil {
			return watcher.State{}, fmt.Errorf("moving pending records: %w", err)
		}
		var cleared []write
		for id := range legacy {
			cleared = append(cleared, write{key: legacyPendingPrefix + events.Token(id), purge: true})
		}
		if err := s.writeAll(ctx, cleared); err != nil {
			return watcher.State{}, fmt.Errorf("clearing pending records: %w", err)
		}
	}
	for _, c := range pending {
		st.Pending = append(st.Pending, c)
	}
	slices.SortFunc(st.Pending, func(a, b snapshot.Change) int { return strings.Compare(a.Key, b.Key) })
	var done []write
	for _, key := range uncommitted {
		done = append(done, write{key: key, purge: true})
	}
	for id, lastSeen := range missing {
		_, held := st.Snapshot[id]
		if _, announcing := pending[id]; !held && !announcing {
			// Its end was committed, and the commit was cut short before
			// this record went: it is done with.
			done = append(done, write{key: missingPrefix + events.Token(id), purge: true})
			continue
		}
		if st.Missing == nil {
			st.Missing = map[string]time.Time{}
		}
		st.Missing[id] = lastSeen
	}
	if !repair {
		return st, nil
	}
	if err := s.writeAll(ctx, done); err != nil {
		return watcher.State{}, fmt.Errorf("clearing the missing records of ended meetings: %w", err)
	}
	return st, nil
}

// pendingChange returns the change a changed meeting's intent records:
// from the record before it, carried base64 in prev, to rec. An intent
// whose record before was too large to carry has none: it is returned as
// no change, rec standing as written.
func pendingChange(rec snapshot.Meeting, prev, base string) (snapshot.Change, error) {
	if prev == "" {
		return snapshot.Change{Key: rec.UUID, Old: rec}, nil
	}
	var b uint64
	if base != "" { // an intent of an earlier version has none
		var err error
		if b, err = strconv.ParseUint(base, 10, 64); err != nil {
			return snapshot.Change{}, fmt.Errorf("decoding the base of the change: %w", err)
		}
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
// consumer, far faster than a Get per key. Unlike a key-value watch, it
// sees each write's headers.
//
// It reads every key rather than filtering by prefix: nats-server serves a
// consumer over several filters slowly once many delete markers have
// expired, and the few other keys cost nothing to skip.
func (s *Store) readAll(ctx context.Context, fn func(m *nats.Msg, rev uint64) error) error {
	legacy, err := s.js.Conn().JetStream()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	msgs, done := make(chan *nats.Msg, 1024), make(chan struct{})
	defer close(done) // after the unsubscribe below: a callback still running returns
	// The subscription ends when the context given to it does, so that
	// context lives as long as the load; only a timer that stops once the
	// consumer is made bounds its creation. (A context with a deadline
	// ended every load that took longer than loadStall at that point: it
	// stalled there, and started again.)
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
	case late && err != nil:
		return fmt.Errorf("loading state: %w: %w", errStalled, err)
	case late:
		// Made, but only as the timer fired, which ends it.
		_ = sub.Unsubscribe()
		return fmt.Errorf("loading state: its consumer came after %s: %w", loadStall, errStalled)
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
		if err := fn(m, md.Sequence.Stream); err != nil {
			return err
		}
		// The count still to come, as the consumer saw it: keys written
		// while the state loads are not waited for.
		left = md.NumPending
	}
	return nil
}

// missingValue is the value of a missing meeting's key.
type missingValue struct {
	ConfUUID string    `json:"confUUID"`
	LastSeen time.Time `json:"lastSeen"`
}

// Prepare writes the keys of the started and changed meetings among
// changes before their events are published, marked as intents. If the
// poll stops short of its commit, the next Load returns them as Pending:
// without that, a meeting announced but not committed that ended before
// the next poll would look as if it had never been there, and its ended
// event would be lost; and a change announced but not stored would be
// announced again against the record before it. Until a first snapshot is
// committed, it also records the observedAt of the first poll that got
// this far, which every pending meeting's lastSeen is then: a later poll
// may have missed a meeting the first one prepared.
func (s *Store) Prepare(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	s.mu.Lock()
	// The first poll's time stands for every later one until a commit:
	// a meeting it prepared and a later poll missed was last seen then.
	first := s.metaRev == 0 && s.preparedAt.IsZero()
	s.mu.Unlock()
	if first {
		if err := s.check(); err != nil {
			return err
		}
		at, err := json.Marshal(metaValue{ObservedAt: observedAt.UTC()})
		if err != nil {
			return fmt.Errorf("encoding prepared time: %w", err)
		}
		if _, err := s.kv.Put(ctx, preparedKey, at); err != nil {
			return fmt.Errorf("recording prepared time: %w", err)
		}
		s.mu.Lock()
		s.preparedAt = observedAt
		s.mu.Unlock()
	}
	writes := make([]write, 0, len(changes)) // a first poll's are 100,000
	for _, c := range changes {
		switch c.Kind {
		case snapshot.Started:
			writes = append(writes, write{key: meetingKey(c.Key), value: c.New.Raw(), intent: intentStarted})
		case snapshot.Changed:
			w := write{key: meetingKey(c.Key), value: c.New.Raw(), intent: intentChanged, base: c.Base}
			// A record near the size limit cannot carry another: its
			// intent says only that a change was under way.
			if len(w.value)+base64.StdEncoding.EncodedLen(len(c.Old.Raw()))+headroom <= int(s.js.Conn().MaxPayload()) {
				w.previous = c.Old.Raw()
			}
			writes = append(writes, w)
		}
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("recording meetings about to be announced: %w", err)
	}
	return nil
}

// Write stores the records of the changed and ended meetings among
// changes, whose events are acknowledged; Prepare wrote the started ones,
// and the changed ones as intents, which Write replaces.
//
// A poll cut short between Write and Commit leaves some keys new and some
// old; that is safe, because the next poll reads the store again, diffs
// against what is really there, and re-publishes only the rest, with the
// same deterministic ids, which JetStream drops as duplicates.
func (s *Store) Write(ctx context.Context, changes []snapshot.Change) error {
	writes := make([]write, 0, len(changes))
	for _, c := range changes {
		if c.Kind != snapshot.Started {
			writes = append(writes, write{key: meetingKey(c.Key), value: c.New.Raw(), purge: c.Kind == snapshot.Ended})
		}
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("writing meeting keys: %w", err)
	}
	return nil
}

// ReadAhead reads the key of each meeting from meetings, a few at a time,
// until ctx ends, and drops what it read: the poll is about to write those
// keys, and nats-server writes a key far faster once it holds the key's
// block in memory again (see watcher.Poll). The reads are direct gets, the
// requests Load already makes, so the daemon's NATS user needs nothing
// more. A read that fails is of no consequence: the write that follows
// reports any real trouble.
func (s *Store) ReadAhead(ctx context.Context, meetings <-chan string) {
	api := "$JS.API.DIRECT.GET." + s.stream + "." + s.subjects
	slots := make(chan struct{}, readAheadConcurrency)
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

// Commit records that the snapshot observed at commit.ObservedAt, whose
// keys Prepare and Write stored, is now the committed state: the records
// of missing meetings first, then meta.
//
// The meta key is written with a compare-and-set on the revision this
// replica last saw, so a replica that lost the lead gets watcher.ErrFenced instead
// of committing over a newer leader's state.
func (s *Store) Commit(ctx context.Context, commit watcher.Commit) error {
	var keys []write
	for id, lastSeen := range commit.Missed {
		v, err := json.Marshal(missingValue{ConfUUID: id, LastSeen: lastSeen.UTC()})
		if err != nil {
			return fmt.Errorf("recording %s as missing: %w", id, err)
		}
		keys = append(keys, write{key: missingPrefix + events.Token(id), value: v})
	}
	for _, id := range commit.Settled {
		keys = append(keys, write{key: missingPrefix + events.Token(id), purge: true})
	}
	if err := s.writeAll(ctx, keys); err != nil {
		return fmt.Errorf("committing missing meetings: %w", err)
	}
	s.revMu.Lock()
	through := s.seen
	s.revMu.Unlock()
	meta, err := json.Marshal(metaValue{ObservedAt: commit.ObservedAt.UTC(), Meetings: commit.Meetings, Through: through})
	if err != nil {
		return fmt.Errorf("encoding state meta: %w", err)
	}
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var rev uint64
	if s.metaRev == 0 {
		rev, err = s.kv.Create(ctx, metaKey, meta)
	} else {
		rev, err = s.kv.Update(ctx, metaKey, meta, s.metaRev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("committing state meta: %w: %w", watcher.ErrFenced, err)
	case err != nil:
		return fmt.Errorf("committing state meta: %w", err)
	}
	s.metaRev = rev
	return nil
}

// write is one key write of a poll: value, or a purge of the key; intent,
// when set, marks a write made before its event (see intentHeader), and
// previous is the record before a change.
type write struct {
	key      string
	value    []byte
	purge    bool
	intent   string
	previous []byte
	base     uint64
}

const (
	// writeWindow bounds the writes awaiting their acknowledgement at
	// once: enough to keep the connection and the server busy (a first
	// poll records 100,000 starts), few enough that a lease renewal sent
	// meanwhile queues behind a couple of megabytes at most.
	writeWindow = 1024
	// readAheadConcurrency bounds the reads ReadAhead has in flight.
	readAheadConcurrency = 8
	// writeAckWait bounds the wait for one write's acknowledgement: an
	// acknowledgement lost with a connection, or with a stream leader that
	// died, must fail the poll soon, not hang it; a live server answers
	// within milliseconds even with a thousand writes in flight.
	writeAckWait = 5 * time.Second
	// loadStall bounds each step of a load (the meta key, the consumer,
	// the gap between two keys): a load that starts while the bucket's
	// stream has lost its leader gets no answer until a new one is
	// elected, and starts again after it rather than waiting out the
	// poll's deadline.
	loadStall = 2 * time.Second
)

// writeAll stores writes and returns once every one is acknowledged, or
// with the first that failed. It publishes them to the bucket's subjects
// asynchronously (see pubwindow.Publish), with the headers a put or a
// purge of jetstream.KeyValue carries: one acknowledged request per key,
// even 64 at a time, made the first commit of 100,000 meetings take seven
// seconds.
func (s *Store) writeAll(ctx context.Context, writes []write) error {
	return pubwindow.Publish(ctx, s.js, len(writes), writeWindow,
		func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
			if err := s.check(); err != nil {
				return nil, nil, err
			}
			msg, opts := s.message(writes[i])
			return msg, opts, nil
		},
		func(i int, ack *jetstream.PubAck, err error) error {
			w := writes[i]
			if wrongLastSequence(err) && w.intent == intentStarted {
				ack, err = s.overMarker(ctx, w, err)
			}
			switch {
			case wrongLastSequence(err):
				return fmt.Errorf("writing %s: %w: %w: %w", w.key, watcher.ErrFenced, ErrKeyMoved, err)
			case err != nil:
				return fmt.Errorf("writing %s: %w", w.key, err)
			case strings.HasPrefix(w.key, meetingPrefix):
				s.setRev(w.key, ack.Sequence, w.purge)
			default:
				s.saw(ack.Sequence)
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
	}
	switch {
	case w.purge:
		msg.Header.Set("KV-Operation", "PURGE")
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		if s.markerTTL > 0 {
			opts = append(opts, jetstream.WithMsgTTL(s.markerTTL))
		}
	case w.intent != "":
		msg.Header.Set(intentHeader, w.intent)
		if w.previous != nil {
			msg.Header.Set(previousHeader, base64.StdEncoding.EncodeToString(w.previous))
		}
		if w.base != 0 {
			msg.Header.Set(baseHeader, strconv.FormatUint(w.base, 10))
		}
		msg.Data = w.value
	default:
		msg.Data = w.value
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

// overMarker writes again the key of a started meeting that the server
// refused with refused: the key this replica took for empty holds the
// marker of an earlier end of the same meeting (listed again after it),
// forgotten at the purge, or one that expired since Load read it. When its
// last message is such a marker, or there is none, the write goes again at
// that revision; when it is a record, another replica wrote it, and
// refused stands.
func (s *Store) overMarker(ctx context.Context, w write, refused error) (*jetstream.PubAck, error) {
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return nil, fmt.Errorf("%w (reading the stream to look at the key: %w)", refused, err)
	}
	var rev uint64
	last, err := stream.GetLastMsgForSubject(ctx, s.subjects+w.key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return nil, fmt.Errorf("%w (looking at the key: %w)", refused, err)
	case last.Header.Get("KV-Operation") == "" && last.Header.Get(jetstream.MarkerReasonHeader) == "":
		return nil, refused
	default:
		rev = last.Sequence
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	s.setRev(w.key, rev, false)
	msg, opts := s.message(w)
	s.logger.Debug("writing a started meeting's key over the marker of its earlier end", "key", w.key, "revision", rev)
	return s.js.PublishMsg(ctx, msg, opts...)
}

// Revision returns the revision of the stored record of the meeting with
// confUUID, as this replica knows it; 0 when it knows none.
func (s *Store) Revision(confUUID string) uint64 { return s.rev(meetingKey(confUUID)) }

func (s *Store) hash(key string) uint64 { return maphash.String(s.seed, key) }

// rev returns the revision this replica knows of a meeting key; 0, which
// the server reads as "no message yet", when it knows none.
func (s *Store) rev(key string) uint64 {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	return s.revs[s.hash(key)]
}

// saw records that the bucket holds rev: see Store.seen.
func (s *Store) saw(rev uint64) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	s.seen = max(s.seen, rev)
}

// setRev records a meeting key's revision after a write; a purged key's
// meeting ended for good, and is forgotten, so that the map does not grow
// with every meeting that ever ended.
func (s *Store) setRev(key string, rev uint64, purged bool) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	s.seen = max(s.seen, rev)
	if s.revs == nil {
		s.revs = map[uint64]uint64{}
	}
	if purged {
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

func (s *Store) setMetaRev(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metaRev = rev
}
