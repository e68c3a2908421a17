package ha

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// memKV is an in-memory lease bucket for tests inside a synctest bubble,
// where a real NATS connection would stop fake time. It keeps what a Lease
// relies on from a JetStream bucket with History 1 and a TTL:
//
//   - a revision is the bucket's sequence: every accepted write, a delete
//     marker too, takes the next one;
//   - Get reports a deleted key as jetstream.ErrKeyNotFound, as a missing
//     one;
//   - Create succeeds only while the key is absent or deleted, and fails
//     with an error matching jetstream.ErrKeyExists otherwise;
//   - Update, and Delete with jetstream.LastRevision, succeed only at the
//     key's last revision, and fail with the server's "wrong last sequence"
//     wrapped in jetstream.ErrKeyRevisionMismatch otherwise, as the client
//     reports it;
//   - an entry, a delete marker too, expires TTL after it was written, on
//     time.Now(), which is the bubble's clock;
//   - Put writes whatever the key holds, and WatchAll lists the live keys,
//     as a watcher with IgnoreDeletes does, in the order of their
//     revisions, then nil.
//
// Expiry is checked when the key is read, so memKV starts no goroutine.
// TestMemKVActsLikeJetStream holds it to a real bucket.
type memKV struct {
	tb  testing.TB
	ttl time.Duration

	mu      sync.Mutex
	seq     uint64
	entries map[string]memEntry
	writes  []memWrite
	// keys holds the key of each write, in the order of writes.
	keys []string
}

type memEntry struct {
	key     string
	rev     uint64
	deleted bool
	at      time.Time
	value   []byte
}

// Bucket, Key, Value, Revision, Created, Delta and Operation make a
// memEntry the jetstream.KeyValueEntry that Get returns.
func (e memEntry) Bucket() string     { return "test" }
func (e memEntry) Key() string        { return e.key }
func (e memEntry) Value() []byte      { return e.value }
func (e memEntry) Revision() uint64   { return e.rev }
func (e memEntry) Created() time.Time { return e.at }
func (e memEntry) Delta() uint64      { return 0 }
func (e memEntry) Operation() jetstream.KeyValueOp {
	if e.deleted {
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

// memWrite is a write the bucket accepted, for tests to assert on.
type memWrite struct {
	op  string // "create", "update", "put" or "delete"
	by  string
	rev uint64
	at  time.Time
}

// jsDefaultTimeout is how long jetstream waits for an answer when the
// caller's context has no deadline (its DefaultTimeout).
const jsDefaultTimeout = 5 * time.Second

func newMemKV(tb testing.TB, ttl time.Duration) *memKV {
	return &memKV{tb: tb, ttl: ttl, entries: map[string]memEntry{}}
}

// connect returns replica id's connection to the bucket.
func (kv *memKV) connect(id string) *memConn { return &memConn{kv: kv, id: id} }

// Writes returns the writes the bucket accepted, oldest first.
func (kv *memKV) Writes() []memWrite {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return append([]memWrite(nil), kv.writes...)
}

// WritesTo returns the writes of key the bucket accepted, oldest first.
func (kv *memKV) WritesTo(key string) []memWrite {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	var got []memWrite
	for i, w := range kv.writes {
		if kv.keys[i] == key {
			got = append(got, w)
		}
	}
	return got
}

// last returns key's last entry, if it has one that has not expired. The
// caller holds kv.mu.
func (kv *memKV) last(key string) (memEntry, bool) {
	e, ok := kv.entries[key]
	if ok && !time.Now().Before(e.at.Add(kv.ttl)) {
		delete(kv.entries, key)
		return memEntry{}, false
	}
	return e, ok
}

// write appends an entry for key. The caller holds kv.mu.
func (kv *memKV) write(op, by, key string, value []byte) uint64 {
	kv.seq++
	now := time.Now()
	kv.entries[key] = memEntry{key: key, rev: kv.seq, deleted: op == "delete", at: now, value: value}
	kv.writes = append(kv.writes, memWrite{op: op, by: by, rev: kv.seq, at: now})
	kv.keys = append(kv.keys, key)
	return kv.seq
}

// wrongLastSequence is the server's answer to a write that expected
// another last revision, as jetstream's client wraps it.
func wrongLastSequence(last uint64, is error) error {
	return fmt.Errorf("%w: %w", &jetstream.APIError{
		Code:        400,
		ErrorCode:   jetstream.JSErrCodeStreamWrongLastSequence,
		Description: fmt.Sprintf("wrong last sequence: %d", last),
	}, is)
}

// memConn is one replica's connection to a memKV. Cut makes its requests
// go unanswered, as they do for a replica cut off from NATS.
type memConn struct {
	kv   *memKV
	id   string
	cut  atomic.Bool
	fail atomic.Bool
	// lose makes the next Update land, and its answer be lost.
	lose atomic.Bool
}

// Fail makes every request fail at once from now on, as with no server to
// answer it (NATS restarting), or none if fail is false.
func (c *memConn) Fail(fail bool) { c.fail.Store(fail) }

// LoseNextAnswer makes the next Update land and its answer go missing.
func (c *memConn) LoseNextAnswer() { c.lose.Store(true) }

var _ placementBucket = (*memConn)(nil)

// Cut loses every request from now on, or none if cut is false.
func (c *memConn) Cut(cut bool) { c.cut.Store(cut) }

// reach stands for the round trip to the server. While the connection is
// cut the request is lost, and the caller waits out its context, or
// jetstream's default timeout if that has no deadline.
func (c *memConn) reach(ctx context.Context) error {
	if c.fail.Load() {
		return nats.ErrNoResponders
	}
	if !c.cut.Load() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jsDefaultTimeout)
		defer cancel()
	}
	<-ctx.Done()
	return ctx.Err()
}

func (c *memConn) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if err := c.reach(ctx); err != nil {
		return nil, err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	e, ok := c.kv.last(key)
	if !ok || e.deleted {
		return nil, jetstream.ErrKeyNotFound
	}
	return e, nil
}

func (c *memConn) Create(ctx context.Context, key string, value []byte, _ ...jetstream.KVCreateOpt) (uint64, error) {
	if err := c.reach(ctx); err != nil {
		return 0, err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	if e, ok := c.kv.last(key); ok && !e.deleted {
		return 0, wrongLastSequence(e.rev, jetstream.ErrKeyExists)
	}
	return c.kv.write("create", c.id, key, value), nil
}

func (c *memConn) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if err := c.reach(ctx); err != nil {
		return 0, err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	if e, _ := c.kv.last(key); e.rev != revision {
		return 0, wrongLastSequence(e.rev, jetstream.ErrKeyRevisionMismatch)
	}
	rev := c.kv.write("update", c.id, key, value)
	if c.lose.CompareAndSwap(true, false) {
		c.kv.mu.Unlock()
		defer c.kv.mu.Lock()
		c.cut.Store(true)
		defer c.cut.Store(false)
		return 0, c.reach(ctx)
	}
	return rev, nil
}

func (c *memConn) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	var revision uint64
	for _, opt := range opts {
		rev, err := lastRevision(opt)
		if err != nil {
			c.kv.tb.Errorf("memKV: %v", err)
			return err
		}
		revision = max(revision, rev)
	}
	if err := c.reach(ctx); err != nil {
		return err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	if e, _ := c.kv.last(key); revision != 0 && e.rev != revision {
		return wrongLastSequence(e.rev, jetstream.ErrKeyRevisionMismatch)
	}
	c.kv.write("delete", c.id, key, nil)
	return nil
}

func (c *memConn) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := c.reach(ctx); err != nil {
		return 0, err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	return c.kv.write("put", c.id, key, value), nil
}

// Live returns every live key with its value, as one batched read.
func (c *memConn) Live(ctx context.Context) (map[string][]byte, error) {
	if err := c.reach(ctx); err != nil {
		return nil, err
	}
	c.kv.mu.Lock()
	defer c.kv.mu.Unlock()
	live := map[string][]byte{}
	for key := range c.kv.entries {
		if e, ok := c.kv.last(key); ok && !e.deleted {
			live[key] = e.Value()
		}
	}
	return live, nil
}

// lastRevision reads the revision that a jetstream.LastRevision option
// carries, 0 for another option. The option's type and method are
// unexported: it is a func(*deleteOpts) error, so it is called through
// reflection on a fresh deleteOpts, and its revision field read back.
func lastRevision(opt jetstream.KVDeleteOpt) (uint64, error) {
	fn := reflect.ValueOf(opt)
	if fn.Kind() != reflect.Func || fn.Type().NumIn() != 1 || fn.Type().NumOut() != 1 ||
		fn.Type().In(0).Kind() != reflect.Pointer || fn.Type().In(0).Elem().Kind() != reflect.Struct {
		return 0, fmt.Errorf("cannot read delete option of type %T", opt)
	}
	opts := reflect.New(fn.Type().In(0).Elem())
	if err, _ := fn.Call([]reflect.Value{opts})[0].Interface().(error); err != nil {
		return 0, fmt.Errorf("delete option: %w", err)
	}
	rev := opts.Elem().FieldByName("revision")
	if rev.Kind() != reflect.Uint64 {
		return 0, fmt.Errorf("delete options %s have no revision field", opts.Elem().Type())
	}
	return rev.Uint(), nil
}

// kvTranscript runs the requests a Lease makes against kv and describes what
// each returned, so that memKV can be compared with a real bucket.
func kvTranscript(ctx context.Context, kv keyValue) []string {
	outcome := func(ok string, err error) string {
		switch {
		case err == nil:
			return ok
		// A revision mismatch carries the code of ErrKeyExists too.
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return "revision mismatch"
		case errors.Is(err, jetstream.ErrKeyExists):
			return "key exists"
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return "not found"
		default:
			return "error: " + err.Error()
		}
	}
	var got []string
	log := func(op string, rev uint64, err error) {
		got = append(got, op+": "+outcome(fmt.Sprintf("rev %d", rev), err))
	}
	logDelete := func(op string, err error) { got = append(got, op+": "+outcome("deleted", err)) }
	v := []byte(`{"id":"a"}`)

	rev, err := kv.Create(ctx, leaseKey, v)
	log("create", rev, err)
	rev, err = kv.Create(ctx, leaseKey, v)
	log("create again", rev, err)
	rev, err = kv.Update(ctx, leaseKey, v, 1)
	log("update at 1", rev, err)
	rev, err = kv.Update(ctx, leaseKey, v, 1)
	log("update at 1 again", rev, err)
	logDelete("delete at 1", kv.Delete(ctx, leaseKey, jetstream.LastRevision(1)))
	logDelete("delete at 2", kv.Delete(ctx, leaseKey, jetstream.LastRevision(2)))
	rev, err = kv.Update(ctx, leaseKey, v, 2)
	log("update at 2 after delete", rev, err)
	_, err = kv.Get(ctx, leaseKey)
	logDelete("get after delete", err)
	rev, err = kv.Create(ctx, leaseKey, v)
	log("create after delete", rev, err)
	e, err := kv.Get(ctx, leaseKey)
	if err == nil {
		rev = e.Revision()
	}
	log("get", rev, err)
	return got
}

func TestMemKVActsLikeJetStream(t *testing.T) {
	want := []string{
		"create: rev 1",
		"create again: key exists",
		"update at 1: rev 2",
		"update at 1 again: revision mismatch",
		"delete at 1: revision mismatch",
		"delete at 2: deleted",
		"update at 2 after delete: revision mismatch",
		"get after delete: not found",
		"create after delete: rev 4",
		"get: rev 4",
	}

	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	bucket, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "contract", History: 1, TTL: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, want, kvTranscript(t.Context(), bucket), "a JetStream bucket")
	assert.Equal(t, want, kvTranscript(t.Context(), newMemKV(t, time.Minute).connect("a")), "memKV")
}

func TestMemKVExpiresAndTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		kv := newMemKV(t, time.Minute)
		a, b := kv.connect("a"), kv.connect("b")
		rev, err := a.Create(t.Context(), leaseKey, nil)
		require.NoError(t, err)

		time.Sleep(time.Minute - time.Nanosecond)
		_, err = b.Create(t.Context(), leaseKey, nil)
		require.ErrorIs(t, err, jetstream.ErrKeyExists, "the key lives one TTL")
		time.Sleep(time.Nanosecond)
		_, err = a.Update(t.Context(), leaseKey, nil, rev)
		require.ErrorIs(t, err, jetstream.ErrKeyRevisionMismatch, "the key expired")
		_, err = b.Create(t.Context(), leaseKey, nil)
		require.NoError(t, err)

		b.Cut(true)
		before := time.Now()
		_, err = b.Create(t.Context(), leaseKey, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, jsDefaultTimeout, time.Since(before), "without a deadline, jetstream's default timeout")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		before = time.Now()
		require.ErrorIs(t, b.Delete(ctx, leaseKey), context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(before), "the caller's deadline")
		assert.Len(t, kv.Writes(), 2, "a cut connection writes nothing")
		assert.Equal(t, time.Minute, kv.Writes()[1].at.Sub(start))
	})
}

// kvListing writes keys as a Placement does, and lists them between the
// writes as it does, so that memKV's listing can be compared with a real
// bucket's.
func kvListing(ctx context.Context, kv placementBucket) ([]string, error) {
	var got []string
	list := func() error {
		live, err := kv.Live(ctx)
		if err != nil {
			return err
		}
		var keys []string
		for _, key := range slices.Sorted(maps.Keys(live)) {
			keys = append(keys, fmt.Sprintf("%s=%s", key, live[key]))
		}
		got = append(got, fmt.Sprint(keys))
		return nil
	}
	steps := []func() error{
		list,
		func() error { _, err := kv.Create(ctx, "unit.a", []byte("1")); return err },
		func() error { _, err := kv.Put(ctx, "member.x", []byte("2")); return err },
		func() error { _, err := kv.Create(ctx, "unit.b", []byte("3")); return err },
		list,
		func() error { return kv.Delete(ctx, "unit.a", jetstream.LastRevision(1)) },
		func() error { _, err := kv.Put(ctx, "member.x", []byte("5")); return err },
		list,
		func() error { _, err := kv.Create(ctx, "unit.a", []byte("6")); return err },
		list,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return got, err
		}
	}
	return got, nil
}

func TestMemKVListsLikeJetStream(t *testing.T) {
	want := []string{
		"[]",
		"[member.x=2 unit.a=1 unit.b=3]",
		"[member.x=5 unit.b=3]",
		"[member.x=5 unit.a=6 unit.b=3]",
	}

	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	bucket, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "contract", History: 1, TTL: time.Minute})
	require.NoError(t, err)
	got, err := kvListing(t.Context(), jsBucket{KeyValue: bucket, nc: js.Conn(), bucket: "contract"})
	require.NoError(t, err)
	assert.Equal(t, want, got, "a JetStream bucket")
	got, err = kvListing(t.Context(), newMemKV(t, time.Minute).connect("a"))
	require.NoError(t, err)
	assert.Equal(t, want, got, "memKV")
}
