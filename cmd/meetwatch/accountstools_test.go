package main

// demo and check with many accounts: the demo's lines name their
// accounts; check takes one account of the file at a time.

import (
	"os"
	"regexp"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// TestDemoOfManyAccounts runs demo --accounts 2: each printed line names
// its account.
func TestDemoOfManyAccounts(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	mw := startMeetwatch(t, map[string]string{"TMPDIR": tmp},
		"demo", "--accounts", "2", "--meetings", "2", "--nats-listen", "127.0.0.1:0", "--interval", "300ms", "--churn", "0")
	started := regexp.MustCompile(`(?m)^\S+  (acct-0[12])  started  `)
	require.Eventually(t, func() bool { return len(started.FindAllString(mw.stdout.String(), -1)) >= 4 },
		eventWait, tick, "waiting for each account's started events")
	mw.stop(t, syscall.SIGINT)
	names := map[string]int{}
	for _, m := range started.FindAllStringSubmatch(mw.stdout.String(), -1) {
		names[m[1]]++
	}
	assert.Equal(t, map[string]int{"acct-01": 2, "acct-02": 2}, names)
	assert.Contains(t, mw.stdout.String(), "for 2 accounts")
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, entries, "demo removes its data dir, and the accounts file in it, on exit")
}

// TestCheckTakesOneAccount: with an accounts file, check wants --account
// and says so in one line; with it, it checks that account's API as run
// polls it, and NATS.
func TestCheckTakesOneAccount(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	s := startAccountsSim(t, 2, 3, 17)
	env := map[string]string{"MEETWATCH_ACCOUNTS_FILE": s.file, "MEETWATCH_NATS_URL": srv.ClientURL()}

	mw := runInProcess(t, env, "check")
	assert.Equal(t, 2, mw.code)
	assert.Equal(t, "meetwatch check: check takes one account: with MEETWATCH_ACCOUNTS_FILE, name one of its 2 with --account NAME (acct-01, acct-02)\n", mw.stderr.String())
	mw = runInProcess(t, env, "check", "--account", "acct-09")
	assert.Equal(t, 2, mw.code)
	assert.Contains(t, mw.stderr.String(), "--account acct-09: no such account in "+s.file)

	mw = runInProcess(t, env, "check", "--account", "acct-02")
	assert.Equal(t, 0, mw.code, "stdout:\n%s\nstderr:\n%s", mw.stdout, mw.stderr)
	assert.Contains(t, mw.stdout.String(), "ok    meetings: 3 going on now")
	assert.Contains(t, mw.stdout.String(), "ok    state_bucket:")
	assert.Equal(t, 1, s.sim("acct-02").Requests(), "one page of acct-02")
	assert.Zero(t, s.sim("acct-01").Requests(), "nothing of acct-01")

	delete(env, "MEETWATCH_ACCOUNTS_FILE")
	env["MEETWATCH_ACCESS_TOKEN"] = "multi-acct-01"
	mw = runInProcess(t, env, "check", "--account", "acct-01")
	assert.Equal(t, 2, mw.code)
	assert.Equal(t, "meetwatch check: --account acct-01: names an account of MEETWATCH_ACCOUNTS_FILE, which is not set\n", mw.stderr.String())
}
