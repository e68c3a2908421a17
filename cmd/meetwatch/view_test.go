package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// viewBucket is the view's bucket when MEETWATCH_VIEW_BUCKET is not set.
const viewBucket = "meetings-now"

// viewValue is a value of the view as a consumer decodes it, written out
// here rather than borrowed from the events package, so that a change of
// its format fails these tests.
type viewValue struct {
	Conference  map[string]any `json:"conference"`
	StartedAt   *time.Time     `json:"startedAt"`
	Incarnation int            `json:"incarnation"`
	Account     string         `json:"account"`
}

// readViewBucket returns every live key of the bucket with its value, and
// false when there is no such bucket.
func readViewBucket(tb testing.TB, nc *nats.Conn, bucket string) (map[string]viewValue, bool) {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	kv, err := js.KeyValue(tb.Context(), bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, false
	}
	require.NoError(tb, err)
	out := map[string]viewValue{}
	keys, err := kv.ListKeys(tb.Context())
	require.NoError(tb, err)
	for k := range keys.Keys() {
		e, err := kv.Get(tb.Context(), k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since it was listed
		}
		require.NoError(tb, err)
		var v viewValue
		require.NoError(tb, json.Unmarshal(e.Value(), &v), "view key %s: %s", k, e.Value())
		out[k] = v
	}
	return out, true
}

// assertViewIsTheTruth checks the view against the meetings the API lists
// and against the committed state: one key per meeting going on, holding
// its latest record as the state holds it with the secrets removed, and
// when it started.
func assertViewIsTheTruth(t *testing.T, nc *nats.Conn, sim *apisim.Sim, what string) {
	t.Helper()
	got, ok := readViewBucket(t, nc, viewBucket)
	require.True(t, ok, "%s: no view bucket", what)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := kvstore.Read(t.Context(), js, stateBucket, "")
	require.NoError(t, err)
	policy, err := redact.Parse("")
	require.NoError(t, err)

	want := sim.UUIDs()
	assert.ElementsMatch(t, want, slices.Collect(mapKeys(got)), "%s: the view's keys are the meetings going on", what)
	assert.ElementsMatch(t, slices.Collect(mapKeys(st.Snapshot)), slices.Collect(mapKeys(got)), "%s: the view's keys are the state's", what)
	for id, v := range got {
		rec, listed := sim.Get(id)
		m, stored := st.Snapshot[id]
		if !assert.True(t, listed && stored, "%s: %s listed %v, in the state %v", what, id, listed, stored) {
			continue
		}
		stripped, err := policy.Strip(m.Raw())
		require.NoError(t, err)
		conference, err := json.Marshal(v.Conference)
		require.NoError(t, err)
		assert.JSONEq(t, string(stripped), string(conference), "%s: %s holds the state's record, secrets removed", what, id)
		assert.Equal(t, rec["subject"], v.Conference["subject"], "%s: %s", what, id)
		assert.NotContains(t, v.Conference, "chairJoinUri", "%s: %s shows a secret", what, id)
		if assert.NotNil(t, v.StartedAt, "%s: %s", what, id) {
			assert.Equal(t, rec["startTime"], v.StartedAt.UTC().Format("2006-01-02 15:04"), "%s: %s", what, id)
		}
		assert.GreaterOrEqual(t, v.Incarnation, 1)
		assert.Empty(t, v.Account)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestViewMatchesTheState runs the built binary through churn, a kill -9
// while a poll is publishing, with the view then changed behind its back,
// and a NATS restart while a poll is writing: each time the view bucket
// comes to hold exactly the meetings going on, as the state does; after
// the restart, within its first committed poll.
func TestViewMatchesTheState(t *testing.T) {
	t.Parallel()
	const meetings = 30
	r := newOutageRig(t, "view-token", meetings, 11)
	env := r.env()
	env["MEETWATCH_POLL_INTERVAL"] = "200ms"
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, r.nc, crashStream, meetings)

	churn := startChurn(t, r.api.Sim, 30*time.Millisecond, 5)
	waitForCommits(t, r.st, 8)
	churn.halt()
	for _, id := range r.api.Sim.UUIDs()[:2] {
		require.True(t, r.api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = "Renamed " + id }))
	}
	settle(t, r.nc, r.st, r.api.Sim)
	assertViewIsTheTruth(t, r.nc, r.api.Sim, "after churn")

	// kill -9 once the poll's first event is stored: its state and view
	// writes may or may not have followed.
	before := streamLen(r.nc, crashStream)
	for _, id := range r.api.Sim.UUIDs()[:5] {
		r.api.Sim.End(id)
	}
	r.api.Sim.AddN(5)
	require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) > before }, eventWait, time.Millisecond)
	kill9(t, mw)
	// What no poll would write again: a key of no meeting, a meeting's key
	// gone, another's value stale.
	js, err := jetstream.New(r.nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), viewBucket)
	require.NoError(t, err)
	live := r.api.Sim.UUIDs()
	_, err = kv.Put(t.Context(), "ghost", []byte(`{"conference":{"confUUID":"ghost"},"incarnation":1}`))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(t.Context(), live[0]))
	_, err = kv.Put(t.Context(), live[1], []byte(`{"conference":{"confUUID":"stale"},"incarnation":1}`))
	require.NoError(t, err)

	mw = startMeetwatch(t, env, "run")
	// The first poll reconciles once it is over: after its commit and
	// that of its end lookups; the next poll's commit comes after it.
	waitForCommits(t, r.st, 3)
	got, _ := readViewBucket(t, r.nc, viewBucket)
	assert.NotContains(t, got, "ghost", "a key of no meeting, after the first poll of the restart")
	assert.Contains(t, got, live[0], "a meeting's key, after the first poll of the restart")
	assert.Equal(t, live[1], got[live[1]].Conference["confUUID"], "a stale value, after the first poll of the restart")
	settle(t, r.nc, r.st, r.api.Sim)
	assertViewIsTheTruth(t, r.nc, r.api.Sim, "after a kill -9 and a restart")

	// NATS stops while a poll writes 300 starts.
	before = streamLen(r.nc, crashStream)
	r.api.Sim.AddN(300)
	require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) > before }, eventWait, time.Millisecond)
	r.stop()
	r.start(t)
	settle(t, r.nc, r.st, r.api.Sim)
	assertViewIsTheTruth(t, r.nc, r.api.Sim, "after a NATS restart")
	mw.stop(t, syscall.SIGTERM)
}

// TestViewCanBeTurnedOff: with MEETWATCH_VIEW_BUCKET empty, meetwatch
// makes no view bucket, and ls reads the state; with another name, the
// view is kept there, and ls reads it.
func TestViewCanBeTurnedOff(t *testing.T) {
	t.Parallel()
	const token = "no-view-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 4)
	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_VIEW_BUCKET"] = ""
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, crashStream, 4)
	waitForCommits(t, newStateView(t, nc), 2)
	mw.stop(t, syscall.SIGTERM)
	_, ok := readViewBucket(t, nc, viewBucket)
	assert.False(t, ok, "a view bucket was made")
	ls := startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	assert.Len(t, strings.Split(strings.TrimSpace(ls.stdout.String()), "\n"), 4, "ls reads the state:\n%s", ls.stdout)

	env["MEETWATCH_VIEW_BUCKET"] = "elsewhere-now"
	mw = startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool {
		got, _ := readViewBucket(t, nc, "elsewhere-now")
		return len(got) == 4
	}, eventWait, tick, "the view in the bucket named")
	api.Sim.End(api.Sim.UUIDs()[0])
	require.Eventually(t, func() bool {
		got, _ := readViewBucket(t, nc, "elsewhere-now")
		return len(got) == 3
	}, eventWait, tick, "an end in the view")
	mw.stop(t, syscall.SIGTERM)
	_, ok = readViewBucket(t, nc, viewBucket)
	assert.False(t, ok, "the default bucket was made all the same")
	ls = startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	var ids []string
	for l := range strings.Lines(ls.stdout.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "one JSON object a line: %s", l)
		ids = append(ids, rec["confUUID"].(string))
	}
	assert.ElementsMatch(t, api.Sim.UUIDs(), ids)
}

// viewReaderPermissions returns the permissions docs/security.md gives a
// consumer of the view, parsed by nats-server itself.
func viewReaderPermissions(tb testing.TB) *server.Permissions {
	tb.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	require.NoError(tb, err)
	_, section, ok := strings.Cut(string(doc), "\n### A consumer of the view\n")
	require.True(tb, ok, "docs/security.md has no section on a consumer of the view")
	_, block, ok := strings.Cut(section, "```text\n")
	require.True(tb, ok)
	block, _, ok = strings.Cut(block, "```")
	require.True(tb, ok)
	opts, err := server.ProcessConfigFile(writeFile(tb, tb.TempDir(), "nats.conf", []byte("authorization {\n users: [\n"+block+"\n ]\n}\n")))
	require.NoError(tb, err, "the documented user")
	require.Len(tb, opts.Users, 1)
	require.NotNil(tb, opts.Users[0].Permissions)
	return opts.Users[0].Permissions
}

// TestLsReadsTheViewOnly runs `meetwatch ls` as a user with exactly the
// permissions docs/security.md gives a consumer of the view: it lists the
// meetings, is refused nothing, and that user cannot read the state.
func TestLsReadsTheViewOnly(t *testing.T) {
	t.Parallel()
	const (
		token    = "view-user-token"
		user     = "viewer"
		password = "View-pw-51d0a2"
	)
	srv := startPermissionedNATS(t, nil, &server.User{Username: user, Password: password, Permissions: viewReaderPermissions(t)})
	admin := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
	api := startAPI(t, token, 4)
	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword
	mw := startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool {
		got, _ := readViewBucket(t, admin, viewBucket)
		return len(got) == 4
	}, eventWait, tick, "the view")
	mw.stop(t, syscall.SIGTERM)

	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = user, password
	ls := startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	var ids []string
	for l := range strings.Lines(ls.stdout.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "one JSON object a line: %s", l)
		ids = append(ids, rec["confUUID"].(string))
		assert.NotContains(t, rec, "chairJoinUri", "a secret field")
	}
	assert.ElementsMatch(t, api.Sim.UUIDs(), ids)
	assert.NotContains(t, ls.stderr.String(), "Permissions Violation")

	ls = startMeetwatch(t, env, "ls")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	assert.Len(t, strings.Split(strings.TrimSpace(ls.stdout.String()), "\n"), 5, "a header and four meetings:\n%s", ls.stdout)

	env["MEETWATCH_VIEW_BUCKET"] = ""
	ls = startMeetwatch(t, env, "ls", "--timeout", "3s")
	assert.Equal(t, 1, ls.wait(t, eventWait), "the state is not the view reader's to read; stderr: %s", ls.stderr)
	assert.Contains(t, ls.stderr.String(), "Permissions Violation")
	assert.Empty(t, ls.stdout.String())
}

// TestViewBucketBadNames: a view bucket whose name no bucket can have, or
// that is the state's or the lease's, is a configuration error, exit 2,
// naming MEETWATCH_VIEW_BUCKET.
func TestViewBucketBadNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, value, command string }{
		{name: "not a bucket name", value: "meetings.now", command: "run"},
		{name: "not a bucket name, for ls", value: "meetings now", command: "ls"},
		{name: "the state bucket", value: stateBucket, command: "run"},
		{name: "the lease bucket", value: "meetwatch-lease", command: "run"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"MEETWATCH_API_URL":      "http://127.0.0.1:9",
				"MEETWATCH_ACCESS_TOKEN": "view-config-token",
				"MEETWATCH_NATS_URL":     "nats://127.0.0.1:9",
				"MEETWATCH_VIEW_BUCKET":  tt.value,
			}
			stderr := rejectsConfiguration(t, env, tt.command).stderr.String()
			assert.Contains(t, stderr, "MEETWATCH_VIEW_BUCKET")
		})
	}
}
