package kvstore_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

// viewKeys returns the live keys of the view bucket with their values.
func viewKeys(t *testing.T, kv jetstream.KeyValue) map[string]string {
	t.Helper()
	out := map[string]string{}
	keys, err := kv.ListKeys(t.Context())
	require.NoError(t, err)
	for k := range keys.Keys() {
		e, err := kv.Get(t.Context(), k)
		require.NoError(t, err)
		out[k] = string(e.Value())
	}
	return out
}

// The views of a single watcher and of accounts share one bucket, each
// under its own keys: a reconcile of one leaves the others' keys alone,
// writes only what differs, and deletes with a marker that expires.
func TestViewsOfAccountsShareTheBucket(t *testing.T) {
	js := newJetStream(t)
	plain, err := kvstore.OpenView(t.Context(), js, kvstore.ViewConfig{Bucket: "meetings-now"})
	require.NoError(t, err)
	acme := plain.WithAccount("acme", js, nil, nil)
	beta := plain.WithAccount("beta", js, nil, nil)
	value := func(id string) ([]byte, error) { return fmt.Appendf(nil, `{"conference":{"confUUID":%q}}`, id), nil }
	put := func(ids ...string) []watcher.ViewWrite {
		var out []watcher.ViewWrite
		for _, id := range ids {
			v, _ := value(id)
			out = append(out, watcher.ViewWrite{Meeting: id, Value: v})
		}
		return out
	}
	require.NoError(t, plain.Write(t.Context(), put("a", "b")))
	require.NoError(t, acme.Write(t.Context(), put("a", "c")))
	require.NoError(t, beta.Write(t.Context(), put("d")))
	require.NoError(t, acme.Write(t.Context(), []watcher.ViewWrite{{Meeting: "c"}}))

	kv, err := js.KeyValue(t.Context(), "meetings-now")
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "acme.a", "b", "beta.d"}, sortedKeys(viewKeys(t, kv)))
	stream, err := js.Stream(t.Context(), "KV_meetings-now")
	require.NoError(t, err)
	marker, err := stream.GetLastMsgForSubject(t.Context(), "$KV.meetings-now.acme.c")
	require.NoError(t, err)
	assert.Equal(t, "PURGE", marker.Header.Get("KV-Operation"))
	assert.Equal(t, kvstore.ViewMarkerTTL.String(), marker.Header.Get(jetstream.MsgTTLHeader))

	// acme's view is wrong: a key of a meeting that ended, one that
	// lacks, one that holds another value.
	_, err = kv.Put(t.Context(), "acme.x", []byte(`{}`))
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "acme.a", []byte(`{"conference":{"confUUID":"old"}}`))
	require.NoError(t, err)
	before, err := kv.Get(t.Context(), "beta.d")
	require.NoError(t, err)
	require.NoError(t, acme.Reconcile(t.Context(), []string{"a", "e"}, value))
	got := viewKeys(t, kv)
	assert.Equal(t, []string{"a", "acme.a", "acme.e", "b", "beta.d"}, sortedKeys(got))
	assert.JSONEq(t, `{"conference":{"confUUID":"a"}}`, got["acme.a"])
	after, err := kv.Get(t.Context(), "beta.d")
	require.NoError(t, err)
	assert.Equal(t, before.Revision(), after.Revision(), "another account's key")

	// A reconcile of a view already right writes nothing.
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	require.NoError(t, acme.Reconcile(t.Context(), []string{"a", "e"}, value))
	require.NoError(t, plain.Reconcile(t.Context(), []string{"a", "b"}, value))
	again, err := stream.Info(t.Context())
	require.NoError(t, err)
	assert.Equal(t, info.State.LastSeq, again.State.LastSeq, "no write")

	// The guard is asked before every write.
	fenced := plain.WithAccount("", js, func() error { return fmt.Errorf("lease lost: %w", watcher.ErrFenced) }, nil)
	err = fenced.Write(t.Context(), put("z"))
	assert.True(t, errors.Is(err, watcher.ErrFenced), "%v", err)
	assert.NotContains(t, viewKeys(t, kv), "z")
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Each replica's writes of the view expect the revision of the key it last
// read or wrote: a replica that wakes after another took over and
// reconciled is refused, and the bucket keeps the newer leader's keys, as
// for the state; the newer leader writes on, over the delete markers it
// read too.
func TestViewOfAFormerLeaderIsRefused(t *testing.T) {
	for _, account := range []string{"", "acme"} {
		t.Run("account="+account, func(t *testing.T) {
			js := newJetStream(t)
			// Two replicas' views, made as the runner of accounts makes
			// them: each has its own revisions.
			base, err := kvstore.OpenView(t.Context(), js, kvstore.ViewConfig{Bucket: "meetings-now"})
			require.NoError(t, err)
			open := func() *kvstore.View { return base.WithAccount(account, js, nil, nil) }
			key := func(id string) string { return events.ViewKey(account, id) }
			valueOf := func(by string) func(string) ([]byte, error) {
				return func(id string) ([]byte, error) { return fmt.Appendf(nil, `{"id":%q,"by":%q}`, id, by), nil }
			}
			put := func(by, id string) watcher.ViewWrite {
				v, _ := valueOf(by)(id)
				return watcher.ViewWrite{Meeting: id, Value: v}
			}
			gone := func(id string) watcher.ViewWrite { return watcher.ViewWrite{Meeting: id} }

			// The old leader's term: a reconcile, then writes, a key
			// written again over its own delete marker among them.
			old := open()
			kv, err := js.KeyValue(t.Context(), "meetings-now")
			require.NoError(t, err)
			require.NoError(t, old.Reconcile(t.Context(), []string{"a", "b", "c", "d"}, valueOf("old")))
			require.NoError(t, old.Write(t.Context(), []watcher.ViewWrite{put("old", "a"), gone("d")}))
			// d is listed again within its marker's life: a delete
			// forgets the key's revision, so the write finds the marker
			// and is refused; the reconcile after the poll reads the
			// marker and writes d over it.
			err = old.Write(t.Context(), []watcher.ViewWrite{put("old", "d")})
			require.ErrorIs(t, err, kvstore.ErrKeyMoved)
			require.NotErrorIs(t, err, watcher.ErrFenced, "the view is read anew, the term goes on")
			require.NoError(t, old.Reconcile(t.Context(), []string{"a", "b", "c", "d"}, valueOf("old")))
			require.NoError(t, old.Write(t.Context(), []watcher.ViewWrite{gone("d")}))

			// A new leader reconciles (b ended, a changed) and writes c,
			// and d over the marker it read.
			newer := open()
			require.NoError(t, newer.Reconcile(t.Context(), []string{"a", "c"}, valueOf("new")))
			require.NoError(t, newer.Write(t.Context(), []watcher.ViewWrite{put("new", "c"), put("new", "d")}))
			want := map[string]string{key("a"): `{"id":"a","by":"new"}`, key("c"): `{"id":"c","by":"new"}`, key("d"): `{"id":"d","by":"new"}`}
			require.Equal(t, want, viewKeys(t, kv))

			// The old leader wakes: none of its writes lands.
			for name, w := range map[string]watcher.ViewWrite{
				"over a key the new leader wrote":   put("old", "a"),
				"a key the new leader deleted":      put("old", "b"),
				"a delete of a key it wrote":        gone("c"),
				"over a key written over a marker":  put("old", "d"),
				"a delete of a key it last deleted": gone("d"),
			} {
				err := old.Write(t.Context(), []watcher.ViewWrite{w})
				assert.ErrorIs(t, err, kvstore.ErrKeyMoved, name)
			}
			assert.Equal(t, want, viewKeys(t, kv), "the new leader's keys")

			// The new leader's writes go on.
			require.NoError(t, newer.Write(t.Context(), []watcher.ViewWrite{put("newer", "a"), gone("c")}))
			assert.Equal(t, map[string]string{key("a"): `{"id":"a","by":"newer"}`, key("d"): `{"id":"d","by":"new"}`},
				viewKeys(t, kv))
		})
	}
}
