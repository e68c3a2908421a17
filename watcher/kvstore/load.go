package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// Load reads the state, and tidies the bucket: it clears the e. keys that
// do not count, and writes unmarked the records an earlier version
// committed as intents.
func (s *Store) Load(ctx context.Context) (watcher.State, error) { return s.load(ctx, true) }

// Read returns the state under prefix (see Config.Prefix; "" for a
// single watcher's) of the bucket named bucket, as a replica would load
// it, without writing anything: for tools that only look. The bucket must
// exist.
func Read(ctx context.Context, js jetstream.JetStream, bucket, prefix string) (watcher.State, error) {
	if err := ValidPrefix(prefix); err != nil {
		return watcher.State{}, err
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return watcher.State{}, fmt.Errorf("opening state bucket %s: %w", bucket, err)
	}
	s := newStore(js, kv, bucket, prefix, func() error { return errors.New("read only") }, slog.New(slog.DiscardHandler))
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
	e, err := s.get(ctx, s.meta)
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

// readAll hands fn the last message of every key under the store's
// prefix, the prefix cut off, with its revision, and returns once each was
// handed over: one pass of an ordered consumer, far faster than a Get per
// key, and unlike a key-value watch it sees each write's headers. It reads
// all the prefix's keys with one filter rather than one filter per kind of
// key: nats-server serves a consumer over several filters slowly once many
// delete markers have expired.
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
