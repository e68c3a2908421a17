package kvstore_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
