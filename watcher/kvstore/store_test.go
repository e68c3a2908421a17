package kvstore_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

func TestCommitIsFencedByTheMetaRevision(t *testing.T) {
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	open := func() *kvstore.Store {
		s, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state"})
		require.NoError(t, err)
		return s
	}
	stale := open()
	_, err = stale.Load(t.Context())
	require.NoError(t, err)

	fresh := open()
	_, err = fresh.Load(t.Context())
	require.NoError(t, err)
	m, err := snapshot.ParseMeeting([]byte(`{"confUUID":"u1"}`))
	require.NoError(t, err)
	require.NoError(t, fresh.Commit(t.Context(), watcher.Commit{Changes: []snapshot.Change{{Kind: snapshot.Started, Key: "u1", New: m}}, ObservedAt: time.Now(), Meetings: 1}))

	err = stale.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now()})
	require.ErrorIs(t, err, watcher.ErrFenced, "a replica that read the state before another committed cannot commit over it")
	st, err := fresh.Load(t.Context())
	require.NoError(t, err)
	assert.Contains(t, st.Snapshot, "u1")
	assert.Equal(t, 1, len(st.Snapshot))
}
