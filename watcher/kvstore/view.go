package kvstore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
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
	// replica last read or wrote, and of the delete markers its last
	// reconcile read; a key it lacks is taken to hold nothing. A delete
	// forgets its key, so that the map does not grow with the ends of a
	// long term: a meeting listed again within its marker's life then
	// fails its write once, and the reconcile that follows reads the
	// marker.
	revs map[string]uint64
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
// each key's revision is known; a key written since by another replica (a
// newer leader, which this one's state writes will find too) fails the
// write with ErrKeyMoved, and the watcher reconciles the view after the
// poll, reading the key anew. writes name each
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
				return fmt.Errorf("writing view key %s: %w: %w", keys[i], ErrKeyMoved, err)
			case err != nil:
				return fmt.Errorf("writing view key %s: %w", keys[i], err)
			}
			v.mu.Lock()
			defer v.mu.Unlock()
			switch {
			case purged[i]:
				delete(v.revs, keys[i])
			case v.revs == nil:
				v.revs = map[string]uint64{keys[i]: ack.Sequence}
			default:
				v.revs[keys[i]] = ack.Sequence
			}
			return nil
		})
}

// Reconcile reads every key of this watcher's meetings in the view, one
// hash of each value held and each key's revision, and writes those that
// differ from value, and deletes those of meetings not in want: a view
// already right costs one read of it, and no write. The revisions it read
// are what its writes, and those of Write after it, expect, so that a key
// another replica writes from then on fails this one's next write of it
// with ErrKeyMoved.
func (v *View) Reconcile(ctx context.Context, want []string, value func(meeting string) ([]byte, error)) error {
	have, revs, err := v.read(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.revs = revs
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
	// Each value is made again as it is sent, not kept from the loop
	// above: on a first start every key is stale, and holding them all
	// would take as much memory again as the snapshot.
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
func (v *View) read(ctx context.Context) (map[string]uint64, map[string]uint64, error) {
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
	have, revs := map[string]uint64{}, map[string]uint64{}
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
			revs[e.Key()] = e.Revision()
			if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
				continue
			}
			have[e.Key()] = maphash.Bytes(v.seed, e.Value())
		}
	}
}

// rev returns the revision this replica knows of key: 0, which the server
// reads as "no message on this subject", when it knows none.
func (v *View) rev(key string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.revs[key]
}

// errStalledView means a read of the view got no answer within viewStall.
var errStalledView = errors.New("no answer from the view bucket's stream")
