package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

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
	ls = startMeetwatch(t, env, "ls")
	assert.Equal(t, 1, ls.wait(t, eventWait))
	assert.Contains(t, ls.stderr.String(), "no-such-bucket")
}
