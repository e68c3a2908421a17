package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// TestLsListsTheMeetingsGoingOnNow runs the watcher, ends a meeting, and
// asks `meetwatch ls` for the table and for the records: every meeting
// going on, none that ended, and not one secret.
func TestLsListsTheMeetingsGoingOnNow(t *testing.T) {
	t.Parallel()
	const token = "ls-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 6)
	ids := api.Sim.UUIDs()
	api.Sim.End(ids[0])
	env := runEnv(api.URL, token, srv.ClientURL())
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, "MEETINGS", 5)
	mw.stop(t, syscall.SIGTERM) // ls reads the state whether or not a watcher runs

	var secrets []string
	for _, rec := range api.Sim.Meetings() {
		for _, k := range []string{"chairJoinUri", "guestJoinUri", "audienceJoinUri"} {
			if v, ok := rec[k].(string); ok {
				secrets = append(secrets, v)
			}
		}
	}
	require.NotEmpty(t, secrets)

	ls := startMeetwatch(t, env, "ls")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	lines := strings.Split(strings.TrimSpace(ls.stdout.String()), "\n")
	require.Len(t, lines, 6, "a header and five meetings:\n%s", ls.stdout)
	assert.Regexp(t, `^CONFUUID\s+CONFERENCE ID\s+SUBJECT\s+START\s+ONLINE$`, lines[0])
	for _, rec := range api.Sim.Meetings() {
		row := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, rec["confUUID"].(string)+" ") })
		if assert.Positive(t, row, "no row for %s", rec["confUUID"]) {
			for _, field := range []string{"conferenceID", "subject", "startTime", "onlineAttendeeAmount"} {
				assert.Contains(t, lines[row], fmt.Sprint(rec[field]), "%s of %s", field, rec["confUUID"])
			}
		}
	}
	assert.NotContains(t, ls.stdout.String(), ids[0], "an ended meeting")
	t.Logf("meetwatch ls:\n%s", ls.stdout)

	ls = startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	var got []string
	for l := range strings.Lines(ls.stdout.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "one JSON object a line: %s", l)
		got = append(got, rec["confUUID"].(string))
		assert.NotContains(t, rec, "chairJoinUri", "a secret field")
	}
	assert.ElementsMatch(t, ids[1:], got)
	for _, s := range secrets {
		assert.NotContains(t, ls.stdout.String(), s)
	}

	env["MEETWATCH_STATE_BUCKET"] = "no-such-bucket"
	env["MEETWATCH_VIEW_BUCKET"] = "" // no view: ls reads the state
	ls = startMeetwatch(t, env, "ls")
	assert.Equal(t, 1, ls.wait(t, eventWait))
	assert.Contains(t, ls.stderr.String(), "no-such-bucket")
}

// TestLsNATSUser runs `meetwatch ls`, reading the state
// (MEETWATCH_VIEW_BUCKET empty), as a user with exactly the
// permissions docs/security.md lists for it: the state bucket's stream
// info, its consumer create and delete API and direct gets, and replies
// on _INBOX.>. It writes nothing, and is refused nothing. Without the
// direct gets, it fails within its --timeout and says why.
func TestLsNATSUser(t *testing.T) {
	t.Parallel()
	const (
		token    = "ls-user-token"
		user     = "lister"
		password = "List-pw-3c81e0"
		stream   = "KV_meetwatch-state"
	)
	allow := []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.DIRECT.GET." + stream + ".>",
	}
	srv := startPermissionedNATS(t, nil, readerUser(user, password, allow...), readerUser("no-gets", password, allow[:3]...))
	admin := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
	api := startAPI(t, token, 4)
	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, admin, "MEETINGS", 4)
	mw.stop(t, syscall.SIGTERM)

	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = user, password
	env["MEETWATCH_VIEW_BUCKET"] = "" // the state, not the view (TestLsReadsTheViewOnly)
	ls := startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	assert.Len(t, strings.Split(strings.TrimSpace(ls.stdout.String()), "\n"), 4, "one record a meeting:\n%s", ls.stdout)
	assert.NotContains(t, ls.stderr.String(), "Permissions Violation")
	assert.NotContains(t, ls.stderr.String(), password)

	// With the view on, as by default, the same user is refused the view
	// bucket: ls says so, and reads the state.
	delete(env, "MEETWATCH_VIEW_BUCKET")
	ls = startMeetwatch(t, env, "ls", "--json")
	require.Equal(t, 0, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	assert.Len(t, strings.Split(strings.TrimSpace(ls.stdout.String()), "\n"), 4, "one record a meeting:\n%s", ls.stdout)
	assert.Contains(t, ls.stderr.String(), "reading the state bucket instead of the view")
	assert.Contains(t, ls.stderr.String(), "view bucket meetings-now gave no answer within 3s")
	env["MEETWATCH_VIEW_BUCKET"] = ""

	env["MEETWATCH_NATS_USER"] = "no-gets"
	ls = startMeetwatch(t, env, "ls", "--timeout", "3s")
	assert.Equal(t, 1, ls.wait(t, eventWait), "exit code; stderr: %s", ls.stderr)
	t.Logf("meetwatch ls without direct gets:\n%s", ls.stderr)
	assert.Contains(t, ls.stderr.String(), "Permissions Violation")
	assert.Contains(t, ls.stderr.String(), "no answer within 3s")
	assert.Empty(t, ls.stdout.String())
}
