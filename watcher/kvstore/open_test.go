package kvstore_test

import (
	"bytes"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

// An existing state bucket keeps the settings an operator gave it; only
// per-message TTLs are added, so that the markers of ended meetings
// expire.
func TestOpenKeepsAnExistingBucketsSettings(t *testing.T) {
	js := newJetStream(t)
	_, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: "meetwatch-state", Description: "sized by the operator", MaxBytes: 64 << 20, History: 1,
	})
	require.NoError(t, err)
	before, err := js.Stream(t.Context(), "KV_meetwatch-state")
	require.NoError(t, err)
	require.False(t, before.CachedInfo().Config.AllowMsgTTL)

	var logs bytes.Buffer
	var conflicts []string
	store, err := kvstore.Open(t.Context(), js, kvstore.Config{
		Bucket: "meetwatch-state", Replicas: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Conflict: func(msg string) { conflicts = append(conflicts, msg) },
	})
	require.NoError(t, err)
	after, err := js.Stream(t.Context(), "KV_meetwatch-state")
	require.NoError(t, err)
	want := ownSettings(before.CachedInfo().Config)
	want.AllowMsgTTL = true
	assert.Equal(t, want, ownSettings(after.CachedInfo().Config), "only per-message TTLs are added")
	assert.Contains(t, logs.String(), `level=INFO msg="added what meetwatch needs to an existing bucket; its other settings are kept" component=state bucket=meetwatch-state added="[per-message TTLs]"`)
	assert.Empty(t, conflicts)

	// The marker an ended meeting leaves expires.
	_, err = store.Load(t.Context())
	require.NoError(t, err)
	m := record(t, "a", "first")
	announce(t, store, snapshot.Change{Kind: snapshot.Started, Key: "a", New: m})
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 1}))
	announce(t, store, snapshot.Change{Kind: snapshot.Ended, Key: "a", Old: m})
	marker, err := after.GetLastMsgForSubject(t.Context(), "$KV.meetwatch-state.m."+events.Token("a"))
	require.NoError(t, err)
	assert.Equal(t, "PURGE", marker.Header.Get("KV-Operation"))
	assert.Equal(t, "1h0m0s", marker.Header.Get(jetstream.MsgTTLHeader))
}

// ownSettings returns cfg without the metadata the server keeps itself
// (its version, and the API level the settings require).
func ownSettings(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	cfg.Metadata = maps.Clone(cfg.Metadata)
	maps.DeleteFunc(cfg.Metadata, func(k, _ string) bool { return strings.HasPrefix(k, "_nats.") })
	return cfg
}

// Settings that let the key of a meeting still going on vanish are kept,
// but logged at WARN and reported.
func TestOpenReportsABucketThatForgets(t *testing.T) {
	tests := []struct {
		name   string
		change func(*jetstream.StreamConfig)
		says   string
	}{
		{
			name:   "a ttl",
			change: func(c *jetstream.StreamConfig) { c.MaxAge = 24 * time.Hour },
			says:   "state bucket meetwatch-state has a TTL of 24h0m0s: keys not written for that long expire, and meetings still going on are announced as started again",
		},
		{
			name:   "old values discarded at a limit",
			change: func(c *jetstream.StreamConfig) { c.Discard, c.MaxBytes = jetstream.DiscardOld, 1<<20 },
			says:   "state bucket meetwatch-state discards old values at its limits (max bytes 1048576, max values -1): the keys of meetings still going on may go, and those meetings be announced as started again",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := newJetStream(t)
			_, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "meetwatch-state", History: 1, LimitMarkerTTL: time.Hour})
			require.NoError(t, err)
			s, err := js.Stream(t.Context(), "KV_meetwatch-state")
			require.NoError(t, err)
			cfg := s.CachedInfo().Config
			tt.change(&cfg)
			_, err = js.UpdateStream(t.Context(), cfg)
			require.NoError(t, err)
			before, err := js.Stream(t.Context(), "KV_meetwatch-state")
			require.NoError(t, err)

			var logs bytes.Buffer
			var conflicts []string
			_, err = kvstore.Open(t.Context(), js, kvstore.Config{
				Bucket: "meetwatch-state", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				Conflict: func(msg string) { conflicts = append(conflicts, msg) },
			})
			require.NoError(t, err)
			assert.Equal(t, []string{tt.says}, conflicts)
			assert.Contains(t, logs.String(), `level=WARN msg="the state bucket's settings let a meeting's key vanish; keeping them" component=state bucket=meetwatch-state conflict=`)
			after, err := js.Stream(t.Context(), "KV_meetwatch-state")
			require.NoError(t, err)
			assert.Equal(t, before.CachedInfo().Config, after.CachedInfo().Config, "left as it was")
		})
	}
}

// The marker an ended meeting's key leaves stays for the event stream's
// duplicate window: a meeting listed again within it starts its next
// incarnation, under ids the stream has not seen.
func TestAnEndedMeetingsMarkerStaysForTheDuplicateWindow(t *testing.T) {
	js := newJetStream(t)
	store, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", DuplicateWindow: 2 * time.Hour})
	require.NoError(t, err)
	_, err = store.Load(t.Context())
	require.NoError(t, err)
	m := record(t, "a", "first")
	announce(t, store, snapshot.Change{Kind: snapshot.Started, Key: "a", New: m})
	announce(t, store, snapshot.Change{Kind: snapshot.Ended, Key: "a", Old: m, Incarnation: 1})
	stream, err := js.Stream(t.Context(), "KV_meetwatch-state")
	require.NoError(t, err)
	marker, err := stream.GetLastMsgForSubject(t.Context(), "$KV.meetwatch-state.m."+events.Token("a"))
	require.NoError(t, err)
	assert.Equal(t, "2h0m0s", marker.Header.Get(jetstream.MsgTTLHeader))
	assert.Equal(t, "1", marker.Header.Get("Meetwatch-Incarnation"), "the incarnation that ended")
}
