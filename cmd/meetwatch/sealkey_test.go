package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// digestKinds returns, over every meeting record in the state bucket, the
// distinct kinds of digest in them: "sha256" for unkeyed ones, and
// "hmac-sha256:<key id>" for keyed ones.
func digestKinds(t *testing.T, nc *nats.Conn, secrets []string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, "meetwatch-state")
	require.NoError(t, err)
	keys, err := kv.ListKeysFiltered(ctx, "m.>")
	require.NoError(t, err)
	kinds := map[string]bool{}
	digest := regexp.MustCompile(`"redacted:(sha256|hmac-sha256:[0-9a-f]{8}):[0-9a-f]{24}"`)
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(t, err)
		for _, m := range digest.FindAllStringSubmatch(string(e.Value()), -1) {
			kinds[m[1]] = true
		}
		for _, s := range secrets {
			assert.NotContains(t, string(e.Value()), s, "a secret in the state")
		}
	}
	return kinds
}

// TestSealKeyRotationPublishesNothing: without a key, digests are plain
// SHA-256 and a warning says so; setting a key, then rotating it (from a
// file), reseals every secret under it without publishing a thing; a
// secret that really changes afterwards is a changed event, redacted.
func TestSealKeyRotationPublishesNothing(t *testing.T) {
	t.Parallel()
	const token, meetings = "seal-token", 4
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, meetings)
	var secrets []string
	for _, rec := range api.Sim.Meetings() {
		secrets = append(secrets, rec["guestJoinUri"].(string))
	}
	env := runEnv(api.URL, token, srv.ClientURL())
	st := newStateView(t, nc)
	run := func(want int) *process {
		t.Helper()
		mw := startMeetwatch(t, env, "run")
		waitForMessages(t, nc, "MEETINGS", want)
		from, _ := st.meta()
		require.Eventually(t, func() bool { rev, _ := st.meta(); return rev != from }, eventWait, tick, "waiting for a commit")
		waitForPolls(t, api.Sim, 2)
		mw.stop(t, syscall.SIGTERM)
		return mw
	}

	first := run(meetings)
	assert.Contains(t, first.stderr.String(), "are not keyed")
	assert.Equal(t, map[string]bool{"sha256": true}, digestKinds(t, nc, secrets))

	env["MEETWATCH_SEAL_KEY"] = "the-first-seal-key-0123"
	second := run(meetings)
	assert.NotContains(t, second.stderr.String(), "are not keyed")
	assert.NotContains(t, second.stderr.String(), env["MEETWATCH_SEAL_KEY"], "the key is never logged")
	kinds := digestKinds(t, nc, secrets)
	require.Len(t, kinds, 1, "every secret sealed anew under the key: %v", kinds)
	var firstKey string
	for k := range kinds {
		firstKey = k
	}
	assert.True(t, strings.HasPrefix(firstKey, "hmac-sha256:"))

	delete(env, "MEETWATCH_SEAL_KEY")
	keyFile := filepath.Join(t.TempDir(), "seal-key")
	require.NoError(t, os.WriteFile(keyFile, []byte("the-second-seal-key-4567\n"), 0o600))
	env["MEETWATCH_SEAL_KEY_FILE"] = keyFile
	run(meetings)
	kinds = digestKinds(t, nc, secrets)
	require.Len(t, kinds, 1, "%v", kinds)
	assert.NotContains(t, kinds, firstKey, "a rotated key reseals every secret")
	assert.Equal(t, meetings, streamLen(nc, "MEETINGS"), "no event for a key's rotation")

	id := api.Sim.UUIDs()[0]
	require.True(t, api.Sim.Update(id, func(rec apisim.Record) { rec["guestJoinUri"] = "https://join.example/changed-secret" }))
	run(meetings + 1)
	msgs := storedMessages(t, nc, "MEETINGS")
	last := msgs[len(msgs)-1]
	assert.Equal(t, "changed", last.Event.kind())
	assert.Equal(t, id, last.Event.Subject)
	assert.Equal(t, []string{"guestJoinUri"}, last.Event.changedFields(), "a real change of a secret is still announced")
	assert.NotContains(t, string(last.Body), "changed-secret")
}

func TestSealKeyConfiguration(t *testing.T) {
	t.Parallel()
	short := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(short, []byte("tooshort\n"), 0o600))
	tests := []struct {
		name     string
		env      map[string]string
		variable string
		says     string
	}{
		{name: "short key", env: map[string]string{"MEETWATCH_SEAL_KEY": "short"}, variable: "MEETWATCH_SEAL_KEY", says: "at least 16 bytes"},
		{name: "short key file", env: map[string]string{"MEETWATCH_SEAL_KEY_FILE": short}, variable: "MEETWATCH_SEAL_KEY_FILE", says: "at least 16 bytes"},
		{name: "missing key file", env: map[string]string{"MEETWATCH_SEAL_KEY_FILE": "/nonexistent/seal-key"}, variable: "MEETWATCH_SEAL_KEY_FILE", says: "no such file"},
		{name: "both", env: map[string]string{"MEETWATCH_SEAL_KEY": "a-key-of-enough-bytes", "MEETWATCH_SEAL_KEY_FILE": short}, variable: "MEETWATCH_SEAL_KEY_FILE", says: "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_DATA_DIR": t.TempDir(),
				"MEETWATCH_API_URL": "http://127.0.0.1:9", "MEETWATCH_EMBEDDED_NATS_LISTEN": "127.0.0.1:0",
			}
			for k, v := range tt.env {
				env[k] = v
			}
			stderr := rejectsConfiguration(t, env, "run").stderr.String()
			assert.Contains(t, stderr, tt.variable)
			assert.Contains(t, stderr, tt.says)
			assert.NotContains(t, stderr, "a-key-of-enough-bytes")
		})
	}
}
