package kvstore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/internal/pubwindow"
	"github.com/meetwatch/meetwatch/watcher"
)

// ViewConfig configures the view bucket, the consumers' copy of the
// ongoing meetings (see watcher.View and events.ViewEntry).
type ViewConfig struct {
	// Bucket is the key-value bucket's name.
	Bucket string
	// Account names the account of an accounts file whose meetings this
	// view writes, under the keys events.ViewKey gives them; empty for a
	// single watcher.
	Account string
	// Replicas is the bucket's replica count when OpenView creates it; 0
	// means 1.
	Replicas int
	// Guard, when set, is asked before every write, as the state's is.
	Guard func() error
	// Logger hears of the bucket's creation; nil discards.
	Logger *slog.Logger
	// Conflict, when set, hears of each setting of an existing bucket
	// that lets the key of a meeting going on vanish.
	Conflict func(msg string)
}

// ViewMarkerTTL is how long the marker of a deleted key stays in the view
// bucket: a consumer whose watch resumes within it learns of the ends it
// missed, and the markers of a day's ends do not stay for good. A
// consumer away for longer reads the view anew.
const ViewMarkerTTL = 24 * time.Hour

// viewStall bounds the wait for each key of a reconcile's read of the
// view: a stream without a leader does not answer, and the poll must not
// wait for it.
const viewStall = 5 * time.Second

// View writes the view bucket for one watcher. Every write of a key
// expects the revision this replica last read or wrote of it, as the
// state's do, so that a former leader's late write never lands over what
// a newer leader wrote or deleted.
type View struct {
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	bucket    string
	account   string
	guard     func() error
	logger    *slog.Logger
	markerTTL time.Duration
	seed      maphash.Seed

	mu sync.Mutex
	// revs holds the revision of each key of this watcher's meetings this
	// replica last read or wrote, a delete marker's included (a meeting
	// listed again after its end writes over it); a key it lacks is known
	// to hold nothing, revision 0. Each reconcile reads it anew, so a term
	// starts from what the bucket holds.
	revs map[string]viewRev
	// sweep is when setRev next forgets the markers the server has
	// removed, so that the map does not grow with every meeting that
	// ends in a long term.
	sweep time.Time
}

// viewRev is the revision of a view key, and when the key holds a delete
// marker that expires, when the server removes it: the key then holds
// nothing.
type viewRev struct {
	rev  uint64
	gone time.Time
}

var _ watcher.View = (*View)(nil)

// OpenView opens the view bucket, creating it when it is missing. As for
// the state, an existing bucket keeps the settings an operator gave it,
// but for per-message TTLs, which the markers of ended meetings need; a
// TTL or a discard policy that drops values is kept, logged at WARN and
// reported to Conflict. js should be the context the events go through,
// as for Open.
func OpenView(ctx context.Context, js jetstream.JetStream, cfg ViewConfig) (*View, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "view")
	kv, bucket, err := openMarked(ctx, js, markedBucket{
		use: "view", name: cfg.Bucket, description: "meetwatch: the meetings going on now, one key each, for consumers",
		replicas: cfg.Replicas, markerTTL: ViewMarkerTTL,
		expiry:    "the keys of meetings that did not change for that long expire, until the next reconcile",
		discarded: "the keys of meetings going on may go",
	}, logger, cfg.Conflict)
	if err != nil {
		return nil, err
	}
	v := &View{kv: kv, js: js, bucket: cfg.Bucket, account: cfg.Account, guard: cfg.Guard, logger: logger, seed: maphash.MakeSeed()}
	if bucket.AllowMsgTTL {
		v.markerTTL = ViewMarkerTTL
	}
	return v, nil
}

// WithAccount returns a view of the same bucket for the watcher of
// account, asking guard before every write and writing through js: what
// the runner of many accounts gives each account's watcher.
func (v *View) WithAccount(account string, js jetstream.JetStream, guard func() error, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &View{kv: v.kv, js: js, bucket: v.bucket, account: account, guard: guard, logger: logger.With("component", "view"),
		markerTTL: v.markerTTL, seed: v.seed}
}

// key returns the key of a meeting in the view.
func (v *View) key(meeting string) string { return events.ViewKey(v.account, meeting) }

// Write stores writes, each acknowledged, within pubwindow's window. The
// watcher writes only once a reconcile of its term has read the view, so
// each key's revision is known; a key written by another replica since
// fails the write with ErrKeyMoved and watcher.ErrFenced. writes name each
// meeting once, as a diff's changes do: they go out together, so a second
// write of a key would expect its revision before the first.
func (v *View) Write(ctx context.Context, writes []watcher.ViewWrite) error {
	keys := make([]string, len(writes))
	for i, w := range writes {
		keys[i] = v.key(w.Meeting)
	}
	return v.publish(ctx, keys, func(i int) ([]byte, error) { return writes[i].Value, nil })
}

// publish writes the value of each key (nil: a delete marker), each
// expecting the key's revision this replica knows.
func (v *View) publish(ctx context.Context, keys []string, value func(i int) ([]byte, error)) error {
	purged := make([]bool, len(keys))
	return pubwindow.Publish(ctx, v.js, len(keys), pubwindow.Window,
		func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
			if v.guard != nil {
				if err := v.guard(); err != nil {
					return nil, nil, err
				}
			}
			val, err := value(i)
			if err != nil {
				return nil, nil, err
			}
			msg := nats.NewMsg("$KV." + v.bucket + "." + keys[i])
			opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(v.rev(keys[i]))}
			if val != nil {
				msg.Data = val
				return msg, opts, nil
			}
			purged[i] = true
			msg.Header.Set("KV-Operation", "PURGE")
			msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
			if v.markerTTL > 0 {
				opts = append(opts, jetstream.WithMsgTTL(v.markerTTL))
			}
			return msg, opts, nil
		},
		func(i int, ack *jetstream.PubAck, err error) error {
			switch {
			case wrongLastSequence(err):
				return fmt.Errorf("writing view key %s: %w: %w: %w", keys[i], watcher.ErrFenced, ErrKeyMoved, err)
			case err != nil:
				return fmt.Errorf("writing view key %s: %w", keys[i], err)
			}
			r := viewRev{rev: ack.Sequence}
			if purged[i] {
				r.gone = v.markerGone(time.Now())
			}
			v.setRev(keys[i], r)
			return nil
		})
}

// Reconcile reads every key of this watcher's meetings in the view, one
// hash of each value held and each key's revision, and writes those that
// differ from value, and deletes those of meetings not in want: a view
// already right costs one read of it, and no write. The revisions it read
// are what its writes, and those of Write after it, expect, so that a key
// another replica writes from then on fails this one's next write of it
// with ErrKeyMoved and watcher.ErrFenced.
func (v *View) Reconcile(ctx context.Context, want []string, value func(meeting string) ([]byte, error)) error {
	have, revs, err := v.read(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.revs, v.sweep = revs, time.Now().Add(v.markerTTL)
	v.mu.Unlock()
	var stale []string // meetings whose key lacks its entry or holds another
	for _, id := range want {
		val, err := value(id)
		if err != nil {
			return err
		}
		k := v.key(id)
		if h, ok := have[k]; !ok || h != maphash.Bytes(v.seed, val) {
			stale = append(stale, id)
		}
		delete(have, k)
	}
	keys := make([]string, 0, len(stale)+len(have))
	for _, id := range stale {
		keys = append(keys, v.key(id))
	}
	for k := range have {
		keys = append(keys, k)
	}
	if len(keys) > 0 {
		v.logger.Info("reconciling the view with the state", "written", len(stale), "deleted", len(have))
	}
	return v.publish(ctx, keys, func(i int) ([]byte, error) {
		if i >= len(stale) {
			return nil, nil
		}
		return value(stale[i])
	})
}

// read returns the keys of this watcher's meetings in the view, each with
// a hash of its value, and the revision of each key that holds a value or
// a delete marker.
func (v *View) read(ctx context.Context) (map[string]uint64, map[string]viewRev, error) {
	filter := "*"
	if v.account != "" {
		filter = v.account + ".*"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := v.kv.WatchFiltered(ctx, []string{filter})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the view: %w", err)
	}
	defer func() { _ = w.Stop() }()
	have, revs := map[string]uint64{}, map[string]viewRev{}
	stall := time.NewTimer(viewStall)
	defer stall.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("reading the view: %w", context.Cause(ctx))
		case <-stall.C:
			return nil, nil, fmt.Errorf("reading the view: %w", errStalledView)
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, fmt.Errorf("reading the view: %w", errStalledView)
			}
			if e == nil { // the end of the values there were
				return have, revs, nil
			}
			stall.Reset(viewStall)
			if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
				revs[e.Key()] = viewRev{rev: e.Revision(), gone: v.markerGone(e.Created())}
				continue
			}
			revs[e.Key()] = viewRev{rev: e.Revision()}
			have[e.Key()] = maphash.Bytes(v.seed, e.Value())
		}
	}
}

// rev returns the revision this replica knows of key: 0, which the server
// reads as "no message yet", when it knows none, or the key's marker has
// expired.
func (v *View) rev(key string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.revs[key]
	if !r.gone.IsZero() && !time.Now().Before(r.gone) {
		delete(v.revs, key)
		return 0
	}
	return r.rev
}

// setRev records the revision of key after a write.
func (v *View) setRev(key string, r viewRev) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.revs == nil {
		v.revs = map[string]viewRev{}
	}
	v.revs[key] = r
	if now := time.Now(); v.markerTTL > 0 && !now.Before(v.sweep) {
		maps.DeleteFunc(v.revs, func(_ string, r viewRev) bool { return !r.gone.IsZero() && !now.Before(r.gone) })
		v.sweep = now.Add(v.markerTTL)
	}
}

// markerGone returns when the server removes a delete marker written at
// created: zero when markers stay, or when it should have gone already
// and has not (one written without a TTL), so that the key's revision
// stays that of the marker there.
func (v *View) markerGone(created time.Time) time.Time {
	if v.markerTTL <= 0 {
		return time.Time{}
	}
	gone := created.Add(v.markerTTL)
	if !gone.After(time.Now()) {
		return time.Time{}
	}
	return gone
}

// errStalledView means a read of the view got no answer within viewStall.
var errStalledView = errors.New("no answer from the view bucket's stream")
