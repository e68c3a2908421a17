// Package kvstore keeps the watcher's state, the last committed snapshot, in
// a JetStream key-value bucket, one key per meeting, so that a restarted or
// newly elected replica diffs against exactly what was announced.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// Store keeps watcher.State in a JetStream key-value bucket, one key per meeting.
//
// A snapshot of thousands of meetings is far larger than a NATS message may
// be, so it is never one value. Keys are "m.<confUUID>" (see events.Token)
// holding the record as the API sent it, and "meta" holding when the
// snapshot was observed. A commit writes only what changed.
type Store struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// subjects is the prefix of the bucket's subjects, "$KV.<bucket>.":
	// the bulk writes of a poll are publishes to them.
	subjects  string
	markerTTL time.Duration

	// metaRev is the revision of the meta key this replica last read or
	// wrote. The meta key is written with a compare-and-set on it, so a
	// replica that lost the lead cannot commit over a newer leader's state.
	mu      sync.Mutex
	metaRev uint64
}

var _ watcher.StateStore = (*Store)(nil)

// Config configures the state bucket.
type Config struct {
	// Bucket is the key-value bucket's name.
	Bucket string
	// Replicas is the bucket's replica count; 0 means 1.
	Replicas int
}

const (
	metaKey       = "meta"
	preparedKey   = "prepared"
	meetingPrefix = "m."
	pendingPrefix = "p."
	// missingPrefix keys a meeting that a complete listing lacked and whose
	// end waits for the next one; its value says when it was last seen.
	missingPrefix = "e."
	// tombstoneTTL is how long the marker of an ended meeting's key stays.
	// Without a limit, every meeting that ever ended would leave a marker
	// behind for good, and every start-up would read them all.
	tombstoneTTL = time.Hour
)

// Open creates or updates the state bucket.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	replicas := max(cfg.Replicas, 1)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "meetwatch: the last committed snapshot, one key per meeting",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: tombstoneTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("creating or updating state bucket %s: %w", cfg.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading state bucket %s: %w", cfg.Bucket, err)
	}
	s := &Store{kv: kv, js: js, subjects: "$KV." + cfg.Bucket + "."}
	if st.LimitMarkerTTL() > 0 { // a bucket made without it cannot expire markers
		s.markerTTL = tombstoneTTL
	}
	return s, nil
}

type metaValue struct {
	ObservedAt time.Time `json:"observedAt"`
	Meetings   int       `json:"meetings"`
}

func meetingKey(confUUID string) string { return meetingPrefix + events.Token(confUUID) }

// Load reads the committed state.
func (s *Store) Load(ctx context.Context) (watcher.State, error) {
	st := watcher.State{Snapshot: snapshot.Snapshot{}}
	e, err := s.kv.Get(ctx, metaKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		s.setMetaRev(0)
		// No snapshot was ever committed, but a first poll may have got as
		// far as preparing: its observation time is then every pending
		// meeting's lastSeen.
		if p, err := s.kv.Get(ctx, preparedKey); err == nil {
			var m metaValue
			if err := json.Unmarshal(p.Value(), &m); err != nil {
				return watcher.State{}, fmt.Errorf("decoding prepared time: %w", err)
			}
			st.ObservedAt = m.ObservedAt
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
	}

	// A watch delivers the last revision of every key in one pass, far
	// faster than a Get per key. Its "initial values done" marker may come
	// early on large buckets, so the end is taken from each entry's Delta,
	// the number of entries still to come.
	//
	// It watches every key rather than filtering by prefix: nats-server
	// serves a watch over several filters slowly once many delete markers
	// have expired, and the few other keys cost nothing to skip.
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return watcher.State{}, fmt.Errorf("watching state: %w", err)
	}
	defer w.Stop()
	pending := snapshot.Snapshot{}
	missing := map[string]time.Time{}
	for seen := 0; ; {
		var e jetstream.KeyValueEntry
		var open bool
		select {
		case <-ctx.Done():
			return watcher.State{}, fmt.Errorf("loading state: %w", context.Cause(ctx))
		case e, open = <-w.Updates():
		}
		if !open {
			return watcher.State{}, errors.New("loading state: the watch ended before every key was read")
		}
		if e == nil {
			if seen == 0 {
				break
			}
			continue
		}
		seen++
		if e.Operation() == jetstream.KeyValuePut {
			if err := load(e, &st, pending, missing); err != nil {
				return watcher.State{}, fmt.Errorf("decoding state key %s: %w", e.Key(), err)
			}
		}
		if e.Delta() == 0 {
			break
		}
	}
	for id, m := range pending {
		if _, committed := st.Snapshot[id]; !committed {
			st.Pending = append(st.Pending, m)
		} else if err := s.purge(ctx, pendingPrefix+events.Token(id)); err != nil {
			return watcher.State{}, fmt.Errorf("clearing the pending record of committed %s: %w", id, err)
		}
	}
	slices.SortFunc(st.Pending, func(a, b snapshot.Meeting) int { return strings.Compare(a.UUID, b.UUID) })
	for id, lastSeen := range missing {
		if _, held := st.Snapshot[id]; !held {
			// Its end was committed, and the commit was cut short before
			// this record went: it is done with.
			if err := s.purge(ctx, missingPrefix+events.Token(id)); err != nil {
				return watcher.State{}, fmt.Errorf("clearing the missing record of ended %s: %w", id, err)
			}
			continue
		}
		if st.Missing == nil {
			st.Missing = map[string]time.Time{}
		}
		st.Missing[id] = lastSeen
	}
	return st, nil
}

// missingValue is the value of a missing meeting's key.
type missingValue struct {
	ConfUUID string    `json:"confUUID"`
	LastSeen time.Time `json:"lastSeen"`
}

// load files one key of the bucket where Load wants it.
func load(e jetstream.KeyValueEntry, st *watcher.State, pending snapshot.Snapshot, missing map[string]time.Time) error {
	key := e.Key()
	switch {
	case strings.HasPrefix(key, meetingPrefix), strings.HasPrefix(key, pendingPrefix):
		m, err := snapshot.ParseMeeting(e.Value())
		if err != nil {
			return err
		}
		if strings.HasPrefix(key, pendingPrefix) {
			pending[m.UUID] = m
		} else {
			st.Snapshot[m.UUID] = m
		}
	case strings.HasPrefix(key, missingPrefix):
		var v missingValue
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return err
		}
		missing[v.ConfUUID] = v.LastSeen
	}
	return nil // meta and prepared were read before the watch
}

// Prepare records the meetings whose started events are about to be
// published, before they are. If the poll stops short of its commit, the
// next Load returns them as Pending: without that, a meeting announced but
// not committed that ended before the next poll would look as if it had
// never been there, and its ended event would be lost.
func (s *Store) Prepare(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	at, err := json.Marshal(metaValue{ObservedAt: observedAt.UTC()})
	if err != nil {
		return fmt.Errorf("encoding prepared time: %w", err)
	}
	if _, err := s.kv.Put(ctx, preparedKey, at); err != nil {
		return fmt.Errorf("recording prepared time: %w", err)
	}
	var writes []write
	for _, c := range changes {
		if c.Kind == snapshot.Started {
			writes = append(writes, write{key: pendingPrefix + events.Token(c.Key), value: c.New.Raw()})
		}
	}
	if err := s.writeAll(ctx, writes); err != nil {
		return fmt.Errorf("recording pending starts: %w", err)
	}
	return nil
}

// Commit records that the snapshot observed at observedAt, which differs
// from the previous one by changes, is now the committed state.
//
// Keys are written first and meta last. A commit cut short leaves some keys
// new and some old; that is safe, because the next poll reads the store
// again, diffs against what is really there, and re-publishes only the
// rest, with the same deterministic ids, which JetStream drops as
// duplicates if they were already stored; then it writes the keys again.
//
// The meta key is written with a compare-and-set on the revision this
// replica last saw, so a replica that lost the lead gets watcher.ErrFenced instead
// of committing over a newer leader's state.
func (s *Store) Commit(ctx context.Context, commit watcher.Commit) error {
	// Meeting keys first, and the pending records they make redundant only
	// once those are stored: a pending record must not go before the key
	// that replaces it. One left behind by a crash between is cleared by
	// Load.
	var keys, done []write
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
	for _, c := range commit.Changes {
		keys = append(keys, write{key: meetingKey(c.Key), value: c.New.Raw(), purge: c.Kind == snapshot.Ended})
		if c.Kind != snapshot.Changed {
			done = append(done, write{key: pendingPrefix + events.Token(c.Key), purge: true})
		}
	}
	if err := s.writeAll(ctx, keys); err != nil {
		return fmt.Errorf("committing meeting keys: %w", err)
	}
	if err := s.writeAll(ctx, done); err != nil {
		return fmt.Errorf("clearing pending records: %w", err)
	}
	meta, err := json.Marshal(metaValue{ObservedAt: commit.ObservedAt.UTC(), Meetings: commit.Meetings})
	if err != nil {
		return fmt.Errorf("encoding state meta: %w", err)
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

// write is one key write of a poll: value, or a purge of the key.
type write struct {
	key   string
	value []byte
	purge bool
}

const (
	// writeBatch bounds the writes awaiting their acknowledgement at once.
	writeBatch = 256
	// writeAckWait bounds the wait for a batch's acknowledgements: an
	// acknowledgement lost with a connection must fail the poll, not hang
	// it.
	writeAckWait = 30 * time.Second
)

// writeAll stores writes and returns once every one is acknowledged, or
// with the first that failed. It publishes them to the bucket's subjects
// asynchronously, a batch at a time, with the headers a put or a purge of
// jetstream.KeyValue carries: one acknowledged request per key, even 64 at
// a time, made the first commit of 100,000 meetings take seven seconds.
func (s *Store) writeAll(ctx context.Context, writes []write) error {
	for start := 0; start < len(writes); start += writeBatch {
		batch := writes[start:min(start+writeBatch, len(writes))]
		futures := make([]jetstream.PubAckFuture, 0, len(batch))
		for _, w := range batch {
			msg := nats.NewMsg(s.subjects + w.key)
			var opts []jetstream.PublishOpt
			if w.purge {
				msg.Header.Set("KV-Operation", "PURGE")
				msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
				if s.markerTTL > 0 {
					opts = append(opts, jetstream.WithMsgTTL(s.markerTTL))
				}
			} else {
				msg.Data = w.value
			}
			f, err := s.js.PublishMsgAsync(msg, opts...)
			if err != nil {
				return fmt.Errorf("writing %s: %w", w.key, err)
			}
			futures = append(futures, f)
		}
		wctx, cancel := context.WithTimeout(ctx, writeAckWait)
		for i, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				cancel()
				return fmt.Errorf("writing %s: %w", batch[i].key, err)
			case <-wctx.Done():
				cancel()
				return fmt.Errorf("writing %s: no acknowledgement: %w", batch[i].key, context.Cause(wctx))
			}
		}
		cancel()
	}
	return nil
}

// purge removes key, leaving a marker that expires when the bucket allows.
func (s *Store) purge(ctx context.Context, key string) error {
	if s.markerTTL > 0 {
		return s.kv.Purge(ctx, key, jetstream.PurgeTTL(s.markerTTL))
	}
	return s.kv.Purge(ctx, key)
}

func (s *Store) setMetaRev(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metaRev = rev
}
