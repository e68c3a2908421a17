package view_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/view"
)

// Watch returns the meetings going on as the bucket holds them, leaving
// out those that ended and the keys of other accounts, and then sends each
// change in order: a start, a change, an end, and a value that is not an
// entry, which it says is not.
func TestWatchHoldsTheCurrentSetAndItsChanges(t *testing.T) {
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "meetings-now"})
	require.NoError(t, err)
	put := func(key, value string) {
		t.Helper()
		_, err := kv.Put(t.Context(), key, []byte(value))
		require.NoError(t, err)
	}
	put("acme.a", `{"conference":{"confUUID":"a","subject":"Standup"},"startedAt":"2026-12-07T09:00:00Z","incarnation":1,"account":"acme"}`)
	put("acme.b", `{"conference":{"confUUID":"b"},"incarnation":2,"account":"acme"}`)
	put("acme.gone", `{"conference":{"confUUID":"gone"},"incarnation":1,"account":"acme"}`)
	require.NoError(t, kv.Purge(t.Context(), "acme.gone"))
	put("beta.c", `{"conference":{"confUUID":"c"},"incarnation":1,"account":"beta"}`)

	ctx, cancel := context.WithCancel(t.Context())
	current, updates, err := view.Watch(ctx, kv, "acme.*")
	require.NoError(t, err)
	require.Len(t, current, 2, "the live keys of acme: %v", current)
	a := current["acme.a"]
	assert.JSONEq(t, `{"confUUID":"a","subject":"Standup"}`, string(a.Conference))
	require.NotNil(t, a.StartedAt)
	assert.Equal(t, time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), *a.StartedAt)
	assert.Equal(t, 1, a.Incarnation)
	assert.Equal(t, "acme", a.Account)
	assert.Equal(t, 2, current["acme.b"].Incarnation)

	put("acme.d", `{"conference":{"confUUID":"d"},"incarnation":1,"account":"acme"}`)
	put("beta.e", `{"conference":{"confUUID":"e"},"incarnation":1,"account":"beta"}`)
	put("acme.a", `{"conference":{"confUUID":"a","subject":"Retro"},"incarnation":1,"account":"acme"}`)
	require.NoError(t, kv.Delete(t.Context(), "acme.b"))
	put("acme.bad", `not json`)
	next := func() view.Update {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(5 * time.Second):
			require.FailNow(t, "no update")
			return view.Update{}
		}
	}
	u := next()
	assert.Equal(t, "acme.d", u.Key)
	assert.JSONEq(t, `{"confUUID":"d"}`, string(u.Entry.Conference))
	u = next()
	assert.Equal(t, "acme.a", u.Key, "beta's change is not acme's")
	assert.JSONEq(t, `{"confUUID":"a","subject":"Retro"}`, string(u.Entry.Conference))
	u = next()
	assert.Equal(t, view.Update{Key: "acme.b", Deleted: true, Revision: u.Revision}, u)
	u = next()
	assert.Equal(t, "acme.bad", u.Key)
	assert.Error(t, u.Err)

	cancel()
	for range updates { // closed once ctx ends
	}

	none, _, err := view.Watch(t.Context(), kv, "gamma.*")
	require.NoError(t, err, "a filter no key matches")
	assert.Empty(t, none)

	all, updates, err := view.Watch(t.Context(), kv)
	require.NoError(t, err)
	assert.Len(t, all, 4, "every account's live keys, less the one that is no entry: %v", all)
	assert.NotNil(t, updates)
}
