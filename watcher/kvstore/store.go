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
//
// Several watchers share one bucket, each under a key prefix of its own
// (Config.Prefix): the watcher of the account acme keeps acme.m.<confUUID>,
// acme.e.<confUUID> and acme.meta, reads and writes nothing outside
// acme., and loads with a subject filter on it. Without a prefix the keys
// are those above; a load then reads every prefix's keys too, and passes
// over them, since none starts with m. or e. (see ValidPrefix).
//
// View keeps the consumers' view of the meetings going on in a bucket of
// its own, one key per meeting (events.ViewKey), written after this
// store's records and reconciled with them as the watcher's package doc
// says: it holds no intent, digest or header of the state's, so that a
// consumer's credentials need reach nothing else. Its writes expect each
// key's revision as the state's do.
package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
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
	// subjects is the prefix of the subjects of this store's keys,
	// "$KV.<bucket>.<prefix>": a poll's writes are asynchronous publishes
	// to them, and a load reads them alone.
	subjects string
	// meta is the meta key, under the prefix.
	meta      string
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

// ErrKeyMoved means a meeting's key, in the state or in the view, was
// written by someone else since this replica read or wrote it: another
// replica leads, or led after this one. In the state it comes wrapped
// with watcher.ErrFenced, so the term ends and the next one loads the
// state again; in the view, the watcher reconciles the view after the
// poll.
var ErrKeyMoved = errors.New("a meeting's key was written by another replica")

var _ watcher.StateStore = (*Store)(nil)

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
		rev, err = s.kv.Create(ctx, s.meta, meta)
	} else {
		rev, err = s.kv.Update(ctx, s.meta, meta, rev)
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
