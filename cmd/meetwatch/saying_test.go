package main

import (
	"fmt"
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
)

// TestStandbyNamesTheLeader: a standby says at INFO which replica leads
// when it starts standing by, and again when the leader changes, rather
// than nothing for as long as it waits; it does not repeat itself at each
// of its campaigns.
func TestStandbyNamesTheLeader(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	api := startAPI(t, "standby-token", 3)
	replica := func(id string) *process {
		env := runEnv(api.URL, "standby-token", srv.ClientURL())
		env["MEETWATCH_REPLICA_ID"] = id
		return startMeetwatch(t, env, "run")
	}
	logged := func(p *process, re string) func() bool {
		return func() bool { return regexp.MustCompile(re).MatchString(p.stderr.String()) }
	}
	alpha := replica("alpha")
	require.Eventually(t, logged(alpha, `msg=leading`), eventWait, tick, "alpha leads")
	beta := replica("beta")
	require.Eventually(t, logged(beta, `level=INFO msg="standing by" .*leader=alpha`), eventWait, tick, "beta names the leader")
	// alpha renews its lease six times while beta watches it: about
	// ten campaigns of beta's at a lease of 1 s.
	renewals(t, natstest.Connect(t, srv), 6)
	assert.Equal(t, 1, strings.Count(beta.stderr.String(), `msg="standing by"`), "said once while the leader stays:\n%s", beta.stderr)

	alpha.stop(t, syscall.SIGTERM)
	require.Eventually(t, logged(beta, `msg=leading`), eventWait, tick, "beta takes over")
	gamma := replica("gamma")
	require.Eventually(t, logged(gamma, `level=INFO msg="standing by" .*leader=beta`), eventWait, tick, "gamma names the new leader")
	beta.stop(t, syscall.SIGTERM)
	require.Eventually(t, logged(gamma, `msg=leading`), eventWait, tick, "gamma takes over")
	gamma.stop(t, syscall.SIGTERM)
}

// renewals waits until the lease, in the default lease bucket of the
// server nc is connected to, has been written n more times.
func renewals(tb testing.TB, nc *nats.Conn, n int) {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	kv, err := js.KeyValue(tb.Context(), "meetwatch-lease")
	require.NoError(tb, err)
	w, err := kv.WatchAll(tb.Context(), jetstream.UpdatesOnly())
	require.NoError(tb, err)
	defer func() { _ = w.Stop() }()
	timeout := time.After(eventWait)
	for seen := 0; seen < n; {
		select {
		case e := <-w.Updates():
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				seen++
			}
		case <-timeout:
			require.FailNow(tb, "the lease is not renewed", "%d of %d renewals", seen, n)
		}
	}
}

// TestRunBesideADemo: run with the embedded server, beside a demo that
// holds its port, says which variables to set instead of a bare "address
// already in use".
func TestRunBesideADemo(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	demo := startMeetwatch(t, nil, "demo", "--nats-listen", listen, "--interval", "1s")
	require.Eventually(t, func() bool { return strings.Contains(demo.stdout.String(), "NATS nats://"+listen) },
		eventWait, tick, "the demo listens on %s", listen)

	api := startAPI(t, "beside-token", 1)
	env := runEnv(api.URL, "beside-token", "")
	delete(env, "MEETWATCH_NATS_URL")
	env["MEETWATCH_EMBEDDED_NATS_LISTEN"] = listen
	mw := startMeetwatch(t, env, "run")
	assert.Equal(t, exitFailed, mw.wait(t, eventWait), "stderr:\n%s", mw.stderr)
	stderr := mw.stderr.String()
	assert.Contains(t, stderr, "address already in use")
	assert.Contains(t, stderr, "MEETWATCH_NATS_URL=nats://"+listen, "how to use the demo's server")
	assert.Contains(t, stderr, "MEETWATCH_EMBEDDED_NATS_LISTEN", "how to listen elsewhere")
	demo.stop(t, syscall.SIGINT)
}

// TestAFailedPollSaysWhatItPublished: a poll whose commit fails after its
// events went out says so, and how many, instead of "nothing published or
// committed"; the next poll finds them recorded and publishes nothing; the
// NATS permission refused on every try is logged once.
func TestAFailedPollSaysWhatItPublished(t *testing.T) {
	t.Parallel()
	perms := readmePermissions(t)
	perms.Publish.Deny = append(perms.Publish.Deny, "$KV.meetwatch-state.meta")
	srv := startPermissionedNATS(t, perms)
	admin := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
	api := startAPI(t, "commit-token", 3)
	env := runEnv(api.URL, "commit-token", srv.ClientURL())
	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword
	mw := startMeetwatch(t, env, "run")
	failed := regexp.MustCompile(`msg="poll failed after publishing some of its events; nothing committed: the next poll publishes again, under the same ids, those it finds unrecorded" .*published=3 committed=false`)
	require.Eventually(t, func() bool { return strings.Count(mw.stderr.String(), `msg="poll failed`) >= 2 },
		time.Minute, tick, "two polls fail at their commit")
	mw.stop(t, syscall.SIGTERM)

	assert.Equal(t, 3, streamLen(admin, "MEETINGS"), "each event once")
	stderr := mw.stderr.String()
	assert.Len(t, failed.FindAllString(stderr, -1), 1, "the first poll says what it published; the next finds it recorded")
	assert.Equal(t, 1, strings.Count(stderr, `Permissions Violation for Publish to \"$KV.meetwatch-state.meta\"`),
		"the refused permission is logged once:\n%s", stderr)
}
