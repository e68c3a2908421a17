package main

import (
	"maps"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// settingsOf returns the configuration of stream as the server holds it,
// without the metadata the server keeps itself (its version, and the API
// level the settings require).
func settingsOf(tb testing.TB, js jetstream.JetStream, stream string) jetstream.StreamConfig {
	tb.Helper()
	s, err := js.Stream(tb.Context(), stream)
	require.NoError(tb, err, "stream %s", stream)
	cfg := s.CachedInfo().Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	maps.DeleteFunc(cfg.Metadata, func(k, _ string) bool { return strings.HasPrefix(k, "_nats.") })
	return cfg
}

// An operator's settings on the stream and the buckets stay as they are
// across a start and a restart: size, discard policy, retention,
// description. Events still flow.
func TestOperatorsSettingsStay(t *testing.T) {
	t.Parallel()
	const token = "settings-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "MEETINGS", Subjects: []string{"meetings.>"}, Description: "sized by the operator", Storage: jetstream.FileStorage,
		MaxBytes: 64 << 20, Discard: jetstream.DiscardNew, MaxAge: 1000 * time.Hour, Duplicates: 2 * time.Hour,
	})
	require.NoError(t, err)
	_, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: "meetwatch-state", Description: "the operator's state", MaxBytes: 32 << 20, History: 1, LimitMarkerTTL: time.Hour,
	})
	require.NoError(t, err)
	_, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: "meetwatch-lease", Description: "the operator's lease", MaxBytes: 1 << 20, History: 1, TTL: time.Second, LimitMarkerTTL: time.Second,
	})
	require.NoError(t, err)
	names := []string{"MEETINGS", "KV_meetwatch-state", "KV_meetwatch-lease"}
	want := map[string]jetstream.StreamConfig{}
	for _, name := range names {
		want[name] = settingsOf(t, js, name)
	}
	assertKept := func(when string) {
		t.Helper()
		for _, name := range names {
			assert.Equal(t, want[name], settingsOf(t, js, name), "%s %s", name, when)
		}
	}

	api := startAPI(t, token, 3)
	env := runEnv(api.URL, token, srv.ClientURL())
	first := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, "MEETINGS", 3)
	assertKept("after a start")
	first.stop(t, syscall.SIGTERM)
	assert.NotContains(t, first.stderr.String(), "duplicate window", "a longer window is no concern")

	api.Sim.AddN(1)
	second := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, "MEETINGS", 4)
	assertKept("after a restart")
	second.stop(t, syscall.SIGTERM)
}

// A stream with a shorter duplicate window than MEETWATCH_DUPLICATE_WINDOW
// keeps it, and a lease bucket with another TTL than MEETWATCH_LEASE_TTL
// keeps its: each is logged at WARN and shown on /readyz, which stays
// ready, and the lease runs on the bucket's TTL.
func TestConflictingSettingsAreReported(t *testing.T) {
	t.Parallel()
	const token = "conflict-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "MEETINGS", Subjects: []string{"meetings.>"}, Duplicates: 15 * time.Minute})
	require.NoError(t, err)
	_, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "meetwatch-lease", History: 1, TTL: 2 * time.Second, LimitMarkerTTL: 2 * time.Second})
	require.NoError(t, err)

	api := startAPI(t, token, 2)
	p := startMeetwatch(t, runEnv(api.URL, token, srv.ClientURL()), "run")
	waitForMessages(t, nc, "MEETINGS", 2)
	wantWarnings := []string{
		"stream MEETINGS has a duplicate window of 15m0s, shorter than the 1h0m0s configured: an event published again more than 15m0s after it was first (after a restart or an outage) is stored twice",
		"lease bucket meetwatch-lease has a TTL of 2s, not the 1s configured: this replica leases with the bucket's, as every replica must",
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, rep, err := askProbe(hc, p, "/readyz")
		if !assert.NoError(c, err) {
			return
		}
		assert.Equal(c, http.StatusOK, code, "a warning does not make the replica unready: %+v", rep)
		assert.Equal(c, wantWarnings, rep.Warnings)
	}, eventWait, tick)

	logs := p.stderr.String()
	assert.Contains(t, logs, `level=WARN msg="the stream's duplicate window is shorter than configured; keeping it, so an event published again after it is stored twice" component=publisher stream=MEETINGS duplicate_window=15m0s configured_duplicate_window=1h0m0s`)
	assert.Contains(t, logs, `level=WARN msg="the lease bucket's TTL differs from the configured lease TTL; leasing with the bucket's, as the other replicas do" component=lease`)
	assert.Regexp(t, `msg=watching .* lease_ttl=2s`, logs)
	assert.Equal(t, 15*time.Minute, settingsOf(t, js, "MEETINGS").Duplicates, "the stream's window is left as it is")
	assert.Equal(t, 2*time.Second, settingsOf(t, js, "KV_meetwatch-lease").MaxAge, "the bucket's TTL is left as it is")
	p.stop(t, syscall.SIGTERM)
}

// A stream that lacks meetwatch's subjects gets them added, beside its
// own, and the addition is logged; nothing else about it changes.
func TestMissingSubjectsAreAdded(t *testing.T) {
	t.Parallel()
	const token = "subjects-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: "MEETINGS", Subjects: []string{"calls.>"}, Storage: jetstream.FileStorage, Duplicates: time.Hour, MaxBytes: 64 << 20,
	})
	require.NoError(t, err)
	want := settingsOf(t, js, "MEETINGS")
	want.Subjects = []string{"calls.>", "meetings.>"}

	api := startAPI(t, token, 2)
	p := startMeetwatch(t, runEnv(api.URL, token, srv.ClientURL()), "run")
	msgs := waitForMessages(t, nc, "MEETINGS", 2)
	for _, m := range msgs {
		assertEnvelope(t, m, "meetings", api.URL)
	}
	assert.Equal(t, want, settingsOf(t, js, "MEETINGS"))
	assert.Contains(t, p.stderr.String(), `level=INFO msg="added what meetwatch needs to an existing stream; its other settings are kept" component=publisher stream=MEETINGS added="[subjects meetings.>]"`)
	p.stop(t, syscall.SIGTERM)
}
