package watcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

const testViewBucket = "meetings-now"

// flakyView fails every write and reconcile while fail is set, as a view bucket whose
// stream is away would.
type flakyView struct {
	watcher.View
	fail   atomic.Bool
	writes atomic.Int32
}

func (v *flakyView) Write(ctx context.Context, writes []watcher.ViewWrite) error {
	v.writes.Add(int32(len(writes)))
	if v.fail.Load() {
		return errors.New("view away")
	}
	return v.View.Write(ctx, writes)
}

func (v *flakyView) Reconcile(ctx context.Context, want []string, value func(string) ([]byte, error)) error {
	if v.fail.Load() {
		return errors.New("view away")
	}
	return v.View.Reconcile(ctx, want, value)
}

// viewEntry is a value of the view, decoded here rather than with the
// events package, so that a change of its format fails this test.
type viewEntry struct {
	Conference  map[string]any `json:"conference"`
	StartedAt   *time.Time     `json:"startedAt"`
	Incarnation int            `json:"incarnation"`
}

// readView returns every key of the view with its entry and revision.
func readView(t *testing.T, js jetstream.JetStream) (map[string]viewEntry, map[string]uint64) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), testViewBucket)
	require.NoError(t, err)
	entries, revs := map[string]viewEntry{}, map[string]uint64{}
	keys, err := kv.ListKeys(t.Context())
	require.NoError(t, err)
	for k := range keys.Keys() {
		e, err := kv.Get(t.Context(), k)
		require.NoError(t, err)
		var v viewEntry
		require.NoError(t, json.Unmarshal(e.Value(), &v), "key %s", k)
		entries[k], revs[k] = v, e.Revision()
	}
	return entries, revs
}

// TestTheViewFollowsThePolls: each poll writes the view of the meetings
// it changed, and of no other, after their events; a view write that
// fails fails no poll and doubles no event, and the next poll reconciles
// the view; a new term reconciles a view someone else changed.
func TestTheViewFollowsThePolls(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(5)
	policy, err := redact.Parse("")
	require.NoError(t, err)
	view, err := kvstore.OpenView(t.Context(), r.js, kvstore.ViewConfig{Bucket: testViewBucket})
	require.NoError(t, err)
	flaky := &flakyView{View: view}
	newWatcher := func() *watcher.Watcher {
		return r.newWatcherWith(t, nil, func(c *watcher.Config) {
			c.View, c.Redact, c.Builder.Redact = flaky, policy, policy
		})
	}
	w := newWatcher()
	check := func(what string) map[string]uint64 {
		t.Helper()
		got, revs := readView(t, r.js)
		assert.ElementsMatch(t, r.api.Sim.UUIDs(), slices.Collect(maps.Keys(got)), "%s: the view's keys", what)
		for id, e := range got {
			rec, ok := r.api.Sim.Get(id)
			if !assert.True(t, ok, "%s: %s is not going on", what, id) {
				continue
			}
			assert.Equal(t, id, e.Conference["confUUID"], what)
			assert.Equal(t, rec["subject"], e.Conference["subject"], "%s: the latest record", what)
			assert.NotContains(t, e.Conference, "chairJoinUri", "%s: a secret", what)
			if assert.NotNil(t, e.StartedAt, what) {
				assert.Equal(t, rec["startTime"], e.StartedAt.Format("2006-01-02 15:04"), what)
			}
			assert.Equal(t, 1, e.Incarnation, what)
		}
		return revs
	}

	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	before := check("the first poll")

	require.True(t, r.api.Sim.Update(ids[1], func(rec apisim.Record) { rec["subject"] = "Renamed" }))
	require.True(t, r.api.Sim.End(ids[2]))
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	after := check("a poll that changed one meeting and ended one")
	for _, id := range []string{ids[0], ids[3], ids[4]} {
		assert.Equal(t, before[id], after[id], "the key of %s, which did not change, was written", id)
	}
	assert.NotEqual(t, before[ids[1]], after[ids[1]])

	flaky.fail.Store(true)
	require.True(t, r.api.Sim.Update(ids[3], func(rec apisim.Record) { rec["subject"] = "Renamed too" }))
	events := len(r.published(t))
	res, err := w.Poll(t.Context())
	require.NoError(t, err, "a failed write of the view fails no poll")
	assert.Equal(t, 1, res.Changed)
	assert.Len(t, r.published(t), events+1)
	assert.Positive(t, flaky.writes.Load())
	got, _ := readView(t, r.js)
	assert.NotEqual(t, "Renamed too", got[ids[3]].Conference["subject"], "the write failed")

	flaky.fail.Store(false)
	res, err = w.Poll(t.Context())
	require.NoError(t, err)
	assert.Zero(t, res.Started+res.Changed+res.Ended, "nothing announced again")
	check("the poll after a failed write")
	assert.Len(t, r.published(t), events+1, "no event doubled")
	assert.Contains(t, r.logs.String(), `msg="writing the view failed; it is reconciled with the state after the poll's commit"`)

	// Another writer changes the view between two terms: the new term's
	// first poll puts it right, and writes no key already right.
	kv, err := r.js.KeyValue(t.Context(), testViewBucket)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "ghost", []byte(`{"conference":{}}`))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(t.Context(), ids[0]))
	_, revs := readView(t, r.js)
	w = newWatcher()
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	final := check("a new term's first poll")
	assert.Equal(t, revs[ids[4]], final[ids[4]], "a key already right is not written again")
}
