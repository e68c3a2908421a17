package events_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
)

// EnsureStream leaves an operator's settings on an existing stream as they
// are: its size and discard policy, its retention, its description. A
// duplicate window shorter than meetwatch's is kept too, but logged at
// WARN and reported; a longer one is fine.
func TestEnsureStreamKeepsTheOperatorsSettings(t *testing.T) {
	tests := []struct {
		name       string
		duplicates time.Duration
		conflict   bool
	}{
		{name: "longer duplicate window", duplicates: 2 * time.Hour},
		{name: "shorter duplicate window", duplicates: 20 * time.Minute, conflict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := natstest.Connect(t, natstest.Start(t))
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{
				Name: "MEETINGS", Subjects: []string{"meetings.>"}, Description: "sized by the operator",
				MaxBytes: 64 << 20, Discard: jetstream.DiscardNew, MaxAge: 1000 * time.Hour, Duplicates: tt.duplicates,
			})
			require.NoError(t, err)
			before, err := js.Stream(t.Context(), "MEETINGS")
			require.NoError(t, err)

			var logs bytes.Buffer
			var conflicts []string
			pub, err := publish.New(nc, publish.Config{
				Stream: "MEETINGS", Prefix: "meetings", Duplicates: time.Hour, MaxAge: 720 * time.Hour,
				Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
				Conflict: func(msg string) { conflicts = append(conflicts, msg) },
			})
			require.NoError(t, err)
			require.NoError(t, pub.EnsureStream(t.Context()))

			after, err := js.Stream(t.Context(), "MEETINGS")
			require.NoError(t, err)
			assert.Equal(t, before.CachedInfo().Config, after.CachedInfo().Config, "the stream's settings")
			assert.Contains(t, logs.String(), `msg="the stream's own settings differ from the configured ones; keeping them" component=publisher stream=MEETINGS max_age=1000h0m0s configured_max_age=720h0m0s`)
			if tt.conflict {
				assert.Contains(t, logs.String(), `level=WARN msg="the stream's duplicate window is shorter than configured; keeping it, so an event published again after it is stored twice" component=publisher stream=MEETINGS duplicate_window=20m0s configured_duplicate_window=1h0m0s`)
				assert.Equal(t, []string{"stream MEETINGS has a duplicate window of 20m0s, shorter than the 1h0m0s configured: an event published again more than 20m0s after it was first (after a restart or an outage) is stored twice"}, conflicts)
			} else {
				assert.NotContains(t, logs.String(), "duplicate")
				assert.Empty(t, conflicts)
			}

			res, err := pub.Publish(t.Context(), []events.Event{build(t, changes(t)[0])})
			require.NoError(t, err)
			assert.Equal(t, 1, res.Stored, "events still go to the stream")
		})
	}
}

// A stream that lacks meetwatch's subjects gets them, beside its own.
func TestEnsureStreamAddsItsSubjects(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "MEETINGS", Subjects: []string{"calls.>"}, Duplicates: time.Hour, MaxBytes: 1 << 20})
	require.NoError(t, err)
	var logs bytes.Buffer
	pub, err := publish.New(nc, publish.Config{
		Stream: "MEETINGS", Prefix: "meetings", Duplicates: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, pub.EnsureStream(t.Context()))

	st, err := js.Stream(t.Context(), "MEETINGS")
	require.NoError(t, err)
	assert.Equal(t, []string{"calls.>", "meetings.>"}, st.CachedInfo().Config.Subjects)
	assert.Equal(t, int64(1<<20), st.CachedInfo().Config.MaxBytes)
	assert.Contains(t, logs.String(), `level=INFO msg="added what meetwatch needs to an existing stream; its other settings are kept" component=publisher stream=MEETINGS added="[subjects meetings.>]"`)

	e := build(t, snapshot.Change{Kind: snapshot.Started, Key: "u1", New: meeting(t, `{"confUUID":"u1"}`)})
	res, err := pub.Publish(t.Context(), []events.Event{e})
	require.NoError(t, err)
	assert.Equal(t, 1, res.Stored)
}

// A publisher made for one term of an account and closed leaves nothing
// on the connection: the subscription its acknowledgements came back on
// goes with it, so that the terms of a long-lived process add none up.
func TestPublisherCloseLeavesNoSubscription(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	for term := range 3 {
		pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: "meetings", Account: "acme", Duplicates: time.Hour})
		require.NoError(t, err)
		require.NoError(t, pub.EnsureStream(t.Context()))
		before := nc.NumSubscriptions() // the connection's own, for requests
		res, err := pub.Send(t.Context(), []events.Message{{ID: fmt.Sprint("id-", term), Kind: snapshot.Started, Meeting: "u1", Body: []byte(`{}`)}})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Stored)
		assert.Equal(t, before+1, nc.NumSubscriptions(), "term %d: the acknowledgements' subscription", term)
		pub.Close()
		assert.Equal(t, before, nc.NumSubscriptions(), "term %d: closed", term)
	}
}
