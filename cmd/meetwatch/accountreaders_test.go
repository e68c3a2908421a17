package main

// The readers select accounts: ls reads one account's state, notify and
// audit read the subjects of a filter, against events and states written
// by hand as the watcher of each account writes them.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

// commitState writes into the state bucket, under prefix, the state of a
// watcher that announced the meetings ids and committed.
func commitState(t *testing.T, js jetstream.JetStream, prefix string, ids ...string) {
	t.Helper()
	store, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", Prefix: prefix})
	require.NoError(t, err)
	_, err = store.Load(t.Context())
	require.NoError(t, err)
	var changes []snapshot.Change
	for i, id := range ids {
		m, err := snapshot.ParseMeeting(fmt.Appendf(nil, `{"confUUID":%q,"conferenceID":"90%d","subject":"Meeting %s","startTime":"2026-12-01 09:0%d"}`, id, i, id, i))
		require.NoError(t, err)
		changes = append(changes, snapshot.Change{Kind: snapshot.Started, Key: id, New: m})
	}
	now := time.Now()
	require.NoError(t, store.Intend(t.Context(), changes, now))
	require.NoError(t, store.Record(t.Context(), changes, now))
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: now, Meetings: len(ids)}))
}

// TestLsReadsOneAccount: with --account, ls lists that account's
// meetings from the state bucket the accounts share; without it, the
// state of a watcher without accounts; and a meeting two accounts both
// list shows in each.
func TestLsReadsOneAccount(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	commitState(t, js, "", "plain1")
	commitState(t, js, "acme.", "shared", "acme1", "acme2")
	commitState(t, js, "beta.", "shared", "beta1")

	env := map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()}
	ls := func(args ...string) []string {
		t.Helper()
		p := startMeetwatch(t, env, append([]string{"ls", "--json"}, args...)...)
		require.Equal(t, 0, p.wait(t, eventWait), "exit code; stderr: %s", p.stderr)
		var ids []string
		for l := range strings.Lines(p.stdout.String()) {
			var rec struct {
				ConfUUID string `json:"confUUID"`
			}
			require.NoError(t, json.Unmarshal([]byte(l), &rec), "one JSON object a line: %s", l)
			ids = append(ids, rec.ConfUUID)
		}
		return ids
	}
	assert.ElementsMatch(t, []string{"shared", "acme1", "acme2"}, ls("--account", "acme"))
	assert.ElementsMatch(t, []string{"shared", "beta1"}, ls("--account", "beta"))
	assert.Equal(t, []string{"plain1"}, ls(), "without --account, the keys without a prefix")
	assert.Empty(t, ls("--account", "gamma"), "an account with no state yet")

	p := startMeetwatch(t, env, "ls", "--account", "beta")
	require.Equal(t, 0, p.wait(t, eventWait), "exit code; stderr: %s", p.stderr)
	lines := strings.Split(strings.TrimSpace(p.stdout.String()), "\n")
	require.Len(t, lines, 3, "a header and two meetings:\n%s", p.stdout)
	assert.Regexp(t, `^beta1\s+901\s+Meeting beta1\s+2026-12-01 09:01\s+-$`, lines[2])

	assertUsageErrors(t, []usageError{
		{name: "a name no account has", args: []string{"ls", "--account", "Acme"}, want: `--account: name "Acme"`},
		{name: "a name of the state's keys", args: []string{"ls", "--account", "e"}, want: `--account: name "e": reserved`},
	})
}

// publishAccountEvent publishes an event of kind about the meeting uuid
// of account, as that account's watcher would: on
// meetings.<account>.<kind>.<uuid>, with its account attribute and a
// source that names it. It returns the body.
func publishAccountEvent(t *testing.T, js jetstream.JetStream, account, kind, uuid string) []byte {
	t.Helper()
	data := map[string]any{"conference": map[string]any{"confUUID": uuid, "subject": account + " " + uuid, "conferenceID": "1"}, "incarnation": 1}
	switch kind {
	case "changed":
		data["previous"] = data["conference"]
	case "ended":
		data["endedAt"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	_, body := publishHandMade(t, js, account, kind, uuid, "", data)
	return body
}

// TestNotifyFilterSelectsAnAccount: notify --filter 'meetings.acme.>'
// sends the events of acme and no other account's.
func TestNotifyFilterSelectsAnAccount(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	createMeetingsStream(t, js)
	hook := startHook(t, func(int, *http.Request, []byte) *reply {
		return &reply{status: http.StatusOK, body: "ok", accepted: true}
	})
	p := startNotify(t, map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()},
		"--webhook", hook.URL+"/services/T1/B2/x", "--format", "slack", "--filter", "meetings.acme.>")
	assert.Contains(t, p.stderr.String(), "filter=meetings.acme.>")

	publishAccountEvent(t, js, "beta", "started", "u1")
	publishAccountEvent(t, js, "acme", "started", "u1")
	publishAccountEvent(t, js, "beta", "ended", "u1")
	publishAccountEvent(t, js, "acme-2", "started", "u2")
	publishAccountEvent(t, js, "acme", "ended", "u1")
	hook.waitAccepted(t, 2)
	waitSettled(t, js, "meetwatch-notify")
	p.stop(t, syscall.SIGTERM)

	var got []string
	for _, b := range hook.accepted() {
		got = append(got, slackText(t, b))
	}
	assert.Equal(t, []string{`Meeting started: "acme u1" (conference ID 1)`, `Meeting ended: "acme u1" (conference ID 1)`}, got)
	c, err := js.Consumer(t.Context(), "MEETINGS", "meetwatch-notify")
	require.NoError(t, err)
	assert.Equal(t, "meetings.acme.>", c.CachedInfo().Config.FilterSubject)

	assertUsageErrors(t, []usageError{
		{name: "a filter with an empty token", args: []string{"notify", "--webhook", "http://127.0.0.1:9/x", "--format", "slack", "--filter", "meetings..>"}, want: `--filter "meetings..>": an empty token`},
	})
}

// TestAuditFilterSelectsAccounts: audit --filter 'meetings.*.ended.>'
// logs every account's ends and nothing else, each once and in stream
// order, across a restart; its durable keeps its filter, and another
// durable logs one account. It runs as a user with the permissions
// docs/security.md lists for audit with a filter.
func TestAuditFilterSelectsAccounts(t *testing.T) {
	t.Parallel()
	const (
		user     = "filtered-auditor"
		password = "Filter-pw-7a31e4"
	)
	var allow []string
	for _, durable := range []string{"ends", "acme"} {
		allow = append(allow,
			"$JS.API.CONSUMER.INFO."+auditStream+"."+durable,
			"$JS.API.CONSUMER.CREATE."+auditStream+"."+durable+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+auditStream+"."+durable,
			"$JS.ACK."+auditStream+"."+durable+".>")
	}
	srv := startPermissionedNATS(t, nil, readerUser(user, password,
		append(allow, "$JS.API.STREAM.INFO."+auditStream, "$JS.API.STREAM.MSG.GET."+auditStream)...))
	r := newStreamRigOn(t, srv, connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword)), 13)
	env := map[string]string{"MEETWATCH_NATS_URL": r.url(), "MEETWATCH_NATS_USER": user, "MEETWATCH_NATS_PASSWORD": password}
	startAudit := func(args ...string) *process { return startMeetwatch(t, env, append([]string{"audit"}, args...)...) }
	path := filepath.Join(t.TempDir(), "ends.jsonl")
	var ends, acme [][]byte
	publish := func(account, kind, uuid string) {
		body := publishAccountEvent(t, r.js, account, kind, uuid)
		if kind == "ended" {
			ends = append(ends, body)
		}
		if account == "acme" {
			acme = append(acme, body)
		}
	}
	r.publish(t, 6) // events without an account, ends among them: meetings.ended.<uuid>
	publish("acme", "started", "u1")
	publish("beta", "started", "u1")
	publish("acme", "ended", "u1")
	publish("beta", "changed", "u1")

	args := []string{"--out", path, "--durable", "ends", "--filter", "meetings.*.ended.>"}
	p := startAudit(args...)
	waitForLines(t, path, 1)
	publish("beta", "ended", "u1")
	publish("gamma", "ended", "u2")
	waitForLines(t, path, 3)
	p.stop(t, syscall.SIGTERM)
	assert.Contains(t, p.stderr.String(), "filter=meetings.*.ended.>")

	r.publish(t, 3)
	publish("acme", "started", "u3")
	publish("acme", "ended", "u3")
	p = startAudit(args...)
	waitForLines(t, path, 4)
	p.stop(t, syscall.SIGTERM)
	assert.Equal(t, ends, readAuditFile(t, path).lines, "every account's ends, once, in stream order, and nothing else")

	q := startAudit("--out", filepath.Join(t.TempDir(), "other.jsonl"), "--durable", "ends", "--filter", "meetings.acme.>")
	assert.Equal(t, 1, q.wait(t, exitWait), "exit code; stderr:\n%s", q.stderr)
	assert.Contains(t, q.stderr.String(), "it filters the subjects meetings.*.ended.>, not meetings.acme.>")

	acmePath := filepath.Join(t.TempDir(), "acme.jsonl")
	q = startAudit("--out", acmePath, "--durable", "acme", "--filter", "meetings.acme.>")
	waitForLines(t, acmePath, len(acme))
	q.stop(t, syscall.SIGTERM)
	assert.Equal(t, acme, readAuditFile(t, acmePath).lines, "one account's events")
	assert.True(t, slices.ContainsFunc(natstest.Messages(t, r.nc, auditStream), func(m *jetstream.RawStreamMsg) bool {
		return strings.HasPrefix(m.Subject, "meetings.ended.")
	}), "the stream holds ends without an account, which the filter leaves out")
	for _, p := range []*process{p, q} {
		assert.NotContains(t, p.stderr.String(), "Permissions Violation")
	}
}
