package kvstore_test

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

// The stores of two accounts and a store without a prefix share one
// bucket and never see each other's keys: not the meetings they both list
// under one confUUID, nor their missing meetings, their commits, or the
// marker of an end.
func TestPrefixesKeepStatesApart(t *testing.T) {
	js := newJetStream(t)
	open := func(prefix string) *kvstore.Store {
		t.Helper()
		s, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", Prefix: prefix})
		require.NoError(t, err)
		st, err := s.Load(t.Context())
		require.NoError(t, err)
		assert.False(t, st.Committed, "%q: a new state, whatever the others committed", prefix)
		assert.Empty(t, st.Snapshot, "%q", prefix)
		return s
	}
	at := func(minute int) time.Time { return time.Date(2026, 12, 1, 9, minute, 0, 0, time.UTC) }

	plain := open("")
	announce(t, plain, started(t, "u1", "p1")...)
	require.NoError(t, plain.Commit(t.Context(), watcher.Commit{ObservedAt: at(1), Meetings: 2}))

	acme := open("acme.")
	announce(t, acme, started(t, "u1", "a1", "a2")...)
	require.NoError(t, acme.Commit(t.Context(), watcher.Commit{ObservedAt: at(2), Meetings: 3,
		Missed: map[string]time.Time{"a2": at(1)}}))

	m := open("me.")
	announce(t, m, started(t, "u1", "m1")...)
	require.NoError(t, m.Commit(t.Context(), watcher.Commit{ObservedAt: at(3), Meetings: 2}))

	// acme ends u1 and lists it again: its next incarnation, over acme's
	// marker; the others' u1 stay in their first.
	announce(t, acme, snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: record(t, "u1", "u1")})
	again := started(t, "u1")
	announce(t, acme, again...)
	assert.Equal(t, 2, again[0].Incarnation)
	require.NoError(t, acme.Commit(t.Context(), watcher.Commit{ObservedAt: at(4), Meetings: 3,
		Missed: map[string]time.Time{"a2": at(1)}}))
	require.NoError(t, plain.Commit(t.Context(), watcher.Commit{ObservedAt: at(5), Meetings: 2}), "each store's commit fences only its own")

	tests := []struct {
		prefix       string
		meetings     []string
		observed     time.Time
		missing      []string
		incarnations map[string]int
	}{
		{prefix: "", meetings: []string{"p1", "u1"}, observed: at(5)},
		{prefix: "acme.", meetings: []string{"a1", "a2", "u1"}, observed: at(4), missing: []string{"a2"}, incarnations: map[string]int{"u1": 2}},
		{prefix: "me.", meetings: []string{"m1", "u1"}, observed: at(3)},
	}
	for _, tt := range tests {
		s, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", Prefix: tt.prefix})
		require.NoError(t, err)
		loaded, err := s.Load(t.Context())
		require.NoError(t, err)
		read, err := kvstore.Read(t.Context(), js, "meetwatch-state", tt.prefix)
		require.NoError(t, err)
		for how, st := range map[string]watcher.State{"loaded": loaded, "read": read} {
			assert.True(t, st.Committed, "%q %s", tt.prefix, how)
			assert.Equal(t, tt.observed, st.ObservedAt, "%q %s", tt.prefix, how)
			assert.Equal(t, tt.meetings, slices.Sorted(maps.Keys(st.Snapshot)), "%q %s", tt.prefix, how)
			assert.Equal(t, tt.missing, slices.Sorted(maps.Keys(st.Missing)), "%q %s", tt.prefix, how)
			assert.Equal(t, tt.incarnations, st.Incarnations, "%q %s", tt.prefix, how)
			assert.Empty(t, st.Pending, "%q %s", tt.prefix, how)
		}
	}

	kv, err := js.KeyValue(t.Context(), "meetwatch-state")
	require.NoError(t, err)
	keys, err := kv.ListKeys(t.Context())
	require.NoError(t, err)
	var got []string
	for k := range keys.Keys() {
		got = append(got, k)
	}
	assert.ElementsMatch(t, []string{
		"meta", "m.u1", "m.p1",
		"acme.meta", "acme.m.u1", "acme.m.a1", "acme.m.a2", "acme.e.a2",
		"me.meta", "me.m.u1", "me.m.m1",
	}, got, "every key under its store's prefix")
}

// A prefix is one token followed by a dot, not a wildcard, so that it can
// neither widen the filter a load reads with nor run into another; nor
// "m." or "e.", whose keys a store without a prefix would take for its
// own.
func TestABadPrefixIsRefused(t *testing.T) {
	js := newJetStream(t)
	for _, prefix := range []string{"acme", "acme.>.", ".", "a..", "a b.", "*.", "sp-1.acme.", "m.", "e."} {
		_, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", Prefix: prefix})
		assert.ErrorContains(t, err, "state key prefix", "Open %q", prefix)
		_, err = kvstore.Read(t.Context(), js, "meetwatch-state", prefix)
		assert.ErrorContains(t, err, "state key prefix", "Read %q", prefix)
	}
	for _, prefix := range []string{"", "acme.", "sp-1.", "meta.", "em."} {
		assert.NoError(t, kvstore.ValidPrefix(prefix), "%q", prefix)
	}
}

// A store made WithPrefix from an open one keeps its account's keys under
// its own prefix in the same bucket, asks its own guard before it writes,
// and reads back what it committed; a bad prefix is refused as Open
// refuses it.
func TestWithPrefixSharesTheBucket(t *testing.T) {
	js := newJetStream(t)
	base, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state"})
	require.NoError(t, err)
	fenced := errors.New("fenced")
	var guard error
	acme, err := base.WithPrefix("acme.", js, func() error { return guard }, nil)
	require.NoError(t, err)
	_, err = acme.Load(t.Context())
	require.NoError(t, err)
	announce(t, acme, started(t, "a1")...)
	require.NoError(t, acme.Commit(t.Context(), watcher.Commit{ObservedAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), Meetings: 1}))

	read, err := kvstore.Read(t.Context(), js, "meetwatch-state", "acme.")
	require.NoError(t, err)
	assert.Equal(t, []string{"a1"}, slices.Sorted(maps.Keys(read.Snapshot)))
	plain, err := kvstore.Read(t.Context(), js, "meetwatch-state", "")
	require.NoError(t, err)
	assert.Empty(t, plain.Snapshot, "nothing under no prefix")

	guard = fenced
	err = acme.Commit(t.Context(), watcher.Commit{ObservedAt: time.Date(2026, 12, 1, 9, 1, 0, 0, time.UTC), Meetings: 1})
	assert.ErrorIs(t, err, fenced, "the derived store's own guard")

	_, err = base.WithPrefix("m.", js, nil, nil)
	assert.ErrorContains(t, err, "state key prefix")
}
