package main

// meetwatch run with an accounts file, driven as a process: each account's
// events, state, probes, metrics and logs; the accounts shared out among
// replicas and taken over after a kill; the file read again on SIGHUP;
// and one account's failures leaving the others' polls on time.

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// simAccounts is a simulator of numbered accounts behind one listener,
// and an accounts file that names some of them.
type simAccounts struct {
	api   *apisim.MultiServer
	names []string
	file  string
}

// startSimAccounts serves n accounts, acct-01 to acct-n, each with meetings
// ongoing, and writes an accounts file naming them all.
func startAccountsSim(tb testing.TB, n, meetings int, seed int64) *simAccounts {
	tb.Helper()
	accts := apisim.NumberedAccounts(n, apisim.Options{Token: "multi", Seed: seed})
	api, err := apisim.NewMultiServer(accts)
	require.NoError(tb, err)
	tb.Cleanup(api.Close)
	s := &simAccounts{api: api, file: filepath.Join(tb.TempDir(), "accounts.yaml")}
	for _, a := range accts {
		s.names = append(s.names, a.Name)
		api.Multi.Sim(a.Name).AddN(meetings)
	}
	s.write(tb, s.names...)
	return s
}

func (s *simAccounts) sim(name string) *apisim.Sim { return s.api.Multi.Sim(name) }

// write makes the accounts file name the accounts names, each with its
// token.
func (s *simAccounts) write(tb testing.TB, names ...string) {
	tb.Helper()
	entries := make([]simAccountEntry, len(names))
	for i, name := range names {
		entries[i] = simAccountEntry{Name: name, APIURL: s.api.URL, AccessToken: "multi-" + name}
	}
	require.NoError(tb, writeAccountsFile(s.file, entries))
}

// manyEnv is the environment of one replica watching the accounts file.
// The request budget is off, as for the replicas of one account: the
// churn's ends are each looked up.
func manyEnv(file, natsURL, id string, leaseTTL time.Duration) map[string]string {
	return map[string]string{
		"MEETWATCH_ACCOUNTS_FILE": file,
		"MEETWATCH_NATS_URL":      natsURL,
		"MEETWATCH_POLL_INTERVAL": pollInterval,
		"MEETWATCH_POLL_TIMEOUT":  "5s",
		"MEETWATCH_HTTP_ADDR":     "127.0.0.1:0",
		"MEETWATCH_LEASE_TTL":     leaseTTL.String(),
		"MEETWATCH_REPLICA_ID":    id,
		"MEETWATCH_API_RATE":      "0",
		"MEETWATCH_LOG_LEVEL":     "debug",
	}
}

// accountsOf asks a process's /readyz and returns its status code and the
// accounts it lists; nil when the report has no "accounts".
func accountsOf(hc *http.Client, p *process) (int, string, []string, error) {
	b, err := getProbe(hc, p, "/readyz")
	if err != nil {
		return 0, "", nil, err
	}
	var r struct {
		Accounts []string `json:"accounts"`
	}
	if err := json.Unmarshal([]byte(b.raw), &r); err != nil {
		return 0, "", nil, err
	}
	return b.Code, b.Role, r.Accounts, nil
}

// ofAccount returns the messages of one account, by their subject.
func ofAccount(msgs []message, name string) []message {
	var out []message
	for _, m := range msgs {
		if strings.HasPrefix(m.Subject, "meetings."+name+".") {
			out = append(out, m)
		}
	}
	return out
}

// TestRunWatchesManyAccounts runs one replica over an accounts file of
// three accounts: each account's events go to meetings.<account>.<kind>.<confUUID>
// with its name in the account attribute and the source, its state lies
// under its own prefix (ls --account reads it), /readyz lists the three,
// the metrics of each account's work carry its name, and its log lines
// say account=<name>.
func TestRunWatchesManyAccounts(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	s := startAccountsSim(t, 3, 4, 3)
	mw := startMeetwatch(t, manyEnv(s.file, srv.ClientURL(), "solo", 2*time.Second), "run")
	hc := &http.Client{Timeout: 2 * time.Second}

	msgs := waitForMessages(t, nc, "MEETINGS", 12)
	host := strings.TrimPrefix(s.api.URL, "http://")
	for _, name := range s.names {
		mine := ofAccount(msgs, name)
		var ids []string
		for _, m := range mine {
			var attrs struct {
				Account string `json:"account"`
			}
			require.NoError(t, json.Unmarshal(m.Body, &attrs))
			assert.Equal(t, name, attrs.Account, "the account attribute")
			assert.Equal(t, "meetwatch://"+host+"/"+name, m.Event.Source, "the source names the account")
			assert.Equal(t, "meetings."+name+".started."+m.Event.Subject, m.Subject)
			assert.True(t, m.Event.Data.Initial)
			ids = append(ids, m.Event.Subject)
		}
		assert.ElementsMatch(t, s.sim(name).UUIDs(), ids, "%s: one started event per meeting", name)
	}

	// One account's meeting ends: its end alone, on its subject.
	gone := s.sim("acct-02").UUIDs()[1]
	require.True(t, s.sim("acct-02").End(gone))
	msgs = waitForMessages(t, nc, "MEETINGS", 13)
	assert.Equal(t, "meetings.acct-02.ended."+gone, msgs[12].Subject)

	var ready []string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, role, accts, err := accountsOf(hc, mw)
		if assert.NoError(c, err) {
			assert.Equal(c, http.StatusOK, code)
			assert.Equal(c, "leader", role)
			assert.Equal(c, s.names, accts)
			ready = accts
		}
	}, eventWait, tick, "readyz lists the three accounts")

	// The view keeps each account's meetings under <account>.<confUUID>,
	// each value naming its account; the end leaves it once stored.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, _ := readViewBucket(t, nc, viewBucket)
		want, have := map[string]string{}, map[string]string{}
		for _, name := range s.names {
			for _, id := range s.sim(name).UUIDs() {
				want[name+"."+id] = name
			}
		}
		for k, v := range got {
			have[k] = v.Account
		}
		assert.Equal(c, want, have)
	}, eventWait, tick, "the view of the accounts")

	for _, name := range s.names {
		ls := runInProcess(t, map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()}, "ls", "--account", name, "--json")
		require.Equal(t, 0, ls.code, "ls --account %s: %s", name, ls.stderr)
		var listed []string
		for _, l := range ls.stdout.Lines() {
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &rec))
			listed = append(listed, rec["confUUID"].(string))
		}
		assert.ElementsMatch(t, s.sim(name).UUIDs(), listed, "ls --account %s: the account's view", name)
	}

	var online map[string]float64
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		families := scrape(t, mw)
		online = map[string]float64{}
		for _, name := range s.names {
			online[name], _ = value(families, "meetwatch_meetings_online", "account", name)
		}
		assert.Equal(c, map[string]float64{"acct-01": 4, "acct-02": 3, "acct-03": 4}, online)
	}, eventWait, tick, "the meetings online of each account")
	families := scrape(t, mw)
	for _, name := range s.names {
		started, ok := value(families, "meetwatch_events_published_total", "account", name, "type", "started")
		assert.True(t, ok, "%s: published", name)
		assert.Equal(t, 4.0, started, "%s: started events", name)
		polls, _ := value(families, "meetwatch_polls_total", "account", name, "result", "ok")
		assert.Positive(t, polls, "%s: polls", name)
		requests, _ := value(families, "meetwatch_api_requests_total", "account", name, "endpoint", meetingapi.OnlinePath, "code", "200")
		assert.Positive(t, requests, "%s: requests", name)
		for _, series := range []string{"meetwatch_last_successful_poll_timestamp_seconds", "meetwatch_pending_ends", "meetwatch_poll_duration_seconds",
			"meetwatch_api_request_duration_seconds", "meetwatch_token_expiry_timestamp_seconds"} {
			_, ok := value(families, series, "account", name)
			assert.True(t, ok, "%s of %s", series, name)
		}
	}
	for _, series := range []string{"meetwatch_meetings_online", "meetwatch_polls_total", "meetwatch_events_published_total"} {
		for _, m := range families[series].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			assert.Contains(t, s.names, labels["account"], "every series of %s names its account", series)
		}
	}
	for name, want := range map[string]float64{"meetwatch_accounts_held": 3, "meetwatch_config_reload_success": 1, "meetwatch_leader": 1} {
		got, _ := value(families, name)
		assert.Equal(t, want, got, name)
	}

	mw.stop(t, syscall.SIGTERM)
	for _, name := range s.names {
		assert.Regexp(t, `msg="poll committed" account=`+name+` `, mw.stderr.String(), "%s's polls are logged with its name", name)
		assert.Regexp(t, `msg=watching account=`+name+` unit=`+name+` `, mw.stderr.String())
	}
	for _, l := range mw.stderr.Lines() {
		if strings.Contains(l, "component=watcher") {
			assert.Contains(t, l, " account=acct-0", "a watcher's line names its account: %s", l)
		}
	}
	t.Logf("many accounts: %d events over %d accounts, readyz %v, online %v", len(msgs), len(s.names), ready, online)
}

// TestAccountsShareOutAndFailOver runs two replicas over six accounts
// whose meetings start and end all along: each replica polls three, and
// after a kill -9 of one, the other polls its three within a lease TTL and
// two intervals, and each account's stream holds every transition once.
func TestAccountsShareOutAndFailOver(t *testing.T) {
	t.Parallel()
	// An interval of 500 ms, as in the thirty-account test: the bound is
	// the issue's, a lease and two intervals, with the room a busy
	// machine needs beside the lease's own 2 s.
	const (
		leaseTTL = 2 * time.Second
		n        = 6
		interval = 500 * time.Millisecond
	)
	bound := leaseTTL + 2*interval
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	s := startAccountsSim(t, n, 10, int64(simtest.Seed(t, 5)))
	hc := &http.Client{Timeout: 2 * time.Second}

	env := func(id string) map[string]string {
		e := manyEnv(s.file, srv.ClientURL(), id, leaseTTL)
		e["MEETWATCH_POLL_INTERVAL"] = interval.String()
		return e
	}
	reps := []*haReplica{
		{id: "r1", env: env("r1")},
		{id: "r2", env: env("r2")},
	}
	for _, r := range reps {
		r.start(t)
	}
	held := make([][]string, len(reps))
	started := time.Now()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var all []string
		for i, r := range reps {
			code, role, accts, err := accountsOf(hc, r.current().p)
			if !assert.NoError(c, err) {
				return
			}
			assert.Equal(c, http.StatusOK, code, "%s ready", r.id)
			assert.Equal(c, "leader", role, "%s", r.id)
			assert.Len(c, accts, n/2, "%s polls its share", r.id)
			held[i] = accts
			all = append(all, accts...)
		}
		slices.Sort(all)
		assert.Equal(c, s.names, all, "every account polled by one replica")
	}, 30*time.Second, 100*time.Millisecond, "waiting for the accounts to be shared out")
	settled := time.Since(started)

	churns := map[string]*meetingChurn{}
	seed := simtest.Seed(t, 6)
	for i, name := range s.names {
		churns[name] = startChurn(t, s.sim(name), 150*time.Millisecond, seed+uint64(i))
	}
	for _, name := range s.names {
		waitForPolls(t, s.sim(name), 3)
	}

	killed := held[0]
	from := map[string]int{}
	for _, name := range killed {
		from[name] = s.sim(name).Requests()
	}
	killedAt := reps[0].kill(t)
	for _, name := range killed {
		from[name] = max(from[name], s.sim(name).Requests()) // the dead replica's last requests
	}
	took := map[string]time.Duration{}
	require.Eventually(t, func() bool {
		for _, name := range killed {
			if _, ok := took[name]; !ok && s.sim(name).Requests() > from[name] {
				took[name] = time.Since(killedAt)
			}
		}
		return len(took) == len(killed)
	}, 5*bound, 10*time.Millisecond, "waiting for the survivor to poll %v", killed)
	for name, d := range took {
		assert.Less(t, d, bound, "from the kill to %s's next listing", name)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, _, accts, err := accountsOf(hc, reps[1].current().p)
		if assert.NoError(c, err) {
			assert.Equal(c, http.StatusOK, code)
			assert.Equal(c, s.names, accts)
		}
	}, eventWait, tick, "the survivor polls every account")

	for _, c := range churns {
		c.halt()
	}
	check := func() map[string]streamCheck {
		msgs := storedMessages(t, nc, "MEETINGS")
		out := map[string]streamCheck{}
		for _, name := range s.names {
			added, ended := churns[name].truth()
			out[name] = checkStream(ofAccount(msgs, name), added, ended)
		}
		return out
	}
	// The final check says what is wrong if this gives up.
	assert.Eventually(t, func() bool {
		for _, res := range check() {
			if res.lost > 0 {
				return false
			}
		}
		return true
	}, eventWait, 100*time.Millisecond, "waiting for every transition of every account")
	// Three more listings of each account: the polls in flight when the
	// stream settled have published what they saw.
	polled := map[string]int{}
	for _, name := range s.names {
		polled[name] = s.sim(name).Requests()
	}
	require.Eventually(t, func() bool {
		for _, name := range s.names {
			if s.sim(name).Requests() < polled[name]+3 {
				return false
			}
		}
		return true
	}, eventWait, tick, "waiting for three more polls of each account")
	var totals streamCheck
	for name, res := range check() {
		assert.Empty(t, res.problems, "%s against its ground truth", name)
		assert.Zero(t, res.duplicates, "%s: transitions stored twice", name)
		totals.events += res.events
		totals.started += res.started
		totals.ended += res.ended
	}
	reps[1].current().p.stop(t, syscall.SIGTERM)
	rounded := map[string]time.Duration{}
	for name, d := range took {
		rounded[name] = d.Round(10 * time.Millisecond)
	}
	t.Logf("two replicas, %d accounts: settled %d+%d in %s; killed r1 (%v): next listing of each after %v, bound %s; events %d (started %d, ended %d), none lost or doubled",
		n, len(held[0]), len(held[1]), settled.Round(10*time.Millisecond), killed, rounded, bound, totals.events, totals.started, totals.ended)
}

// TestReloadAccounts reads the accounts file again at each SIGHUP: an
// added account is polled within an interval, a removed one stops, a bad
// file is logged at ERROR and changes nothing (meetwatch_config_reload_success
// says 0), and a removed account added back resumes from its state,
// announcing only what changed while it was away.
func TestReloadAccounts(t *testing.T) {
	t.Parallel()
	const (
		leaseTTL = time.Second
		interval = time.Second
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	s := startAccountsSim(t, 4, 3, 9)
	s.write(t, "acct-01", "acct-02", "acct-03")
	env := manyEnv(s.file, srv.ClientURL(), "solo", leaseTTL)
	env["MEETWATCH_POLL_INTERVAL"] = interval.String()
	mw := startMeetwatch(t, env, "run")
	hc := &http.Client{Timeout: 2 * time.Second}
	waitForMessages(t, nc, "MEETINGS", 9)
	readyWith := func(want ...string) {
		t.Helper()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			code, _, accts, err := accountsOf(hc, mw)
			if assert.NoError(c, err) {
				assert.Equal(c, http.StatusOK, code)
				assert.Equal(c, want, accts)
			}
		}, eventWait, tick, "waiting for readyz to list %v", want)
	}
	readyWith("acct-01", "acct-02", "acct-03")
	assert.Zero(t, s.sim("acct-04").Requests(), "an account not in the file is not polled")
	hup := func() time.Time {
		t.Helper()
		at := time.Now()
		require.NoError(t, mw.cmd.Process.Signal(syscall.SIGHUP))
		return at
	}
	reloads := func() int { return strings.Count(mw.stderr.String(), `msg="accounts file reloaded"`) }

	// An account added is polled within an interval, and a look of the
	// placement (a tenth of a lease).
	s.write(t, "acct-01", "acct-02", "acct-03", "acct-04")
	at := hup()
	require.Eventually(t, func() bool { return s.sim("acct-04").Requests() > 0 }, eventWait, 5*time.Millisecond, "waiting for acct-04's first listing")
	added := time.Since(at)
	assert.Less(t, added, interval+leaseTTL/10, "from SIGHUP to the added account's first listing")
	waitForMessages(t, nc, "MEETINGS", 12)
	readyWith("acct-01", "acct-02", "acct-03", "acct-04")

	// An account removed stops: no listing of it an interval after the
	// reload was logged, nor for two more.
	s.write(t, "acct-01", "acct-03", "acct-04")
	hup()
	require.Eventually(t, func() bool { return reloads() == 2 }, eventWait, tick, "waiting for the second reload")
	readyWith("acct-01", "acct-03", "acct-04")
	time.Sleep(interval) // no event marks an abandoned poll's end
	stopped := s.sim("acct-02").Requests()
	waitForPolls(t, s.sim("acct-01"), 2)
	assert.Equal(t, stopped, s.sim("acct-02").Requests(), "the removed account is not polled")
	// Nothing keeps its meetings in the view true any more: they go.
	require.Eventually(t, func() bool {
		keys, _ := readViewBucket(t, nc, viewBucket)
		accounts := map[string]int{}
		for k := range keys {
			name, _, _ := strings.Cut(k, ".")
			accounts[name]++
		}
		return accounts["acct-02"] == 0 && accounts["acct-01"] == 3 && accounts["acct-03"] == 3
	}, eventWait, tick, "waiting for the removed account's keys to leave the view, the others' to stay")
	assert.Contains(t, mw.stderr.String(), `msg="removed the account's meetings from the view" account=acct-02`)

	// While it is away, one of its meetings ends and another starts.
	gone := s.sim("acct-02").UUIDs()[0]
	require.True(t, s.sim("acct-02").End(gone))
	born := s.sim("acct-02").AddN(1)[0]

	// A bad file changes nothing: logged at ERROR with the file and the
	// problem, the gauge at 0, the three accounts polled on.
	require.NoError(t, os.WriteFile(s.file, []byte("accounts:\n  - name: acct-01\n    access_token: multi-acct-01\n  - name: acct-01\n    access_token: x\n"), 0o600))
	hup()
	errLine := regexp.MustCompile(`level=ERROR msg="the accounts file was not reloaded; the accounts read before run on unchanged" file=` + regexp.QuoteMeta(s.file) +
		` err="MEETWATCH_ACCOUNTS_FILE: ` + regexp.QuoteMeta(s.file) + `: account \\"acct-01\\": the name is taken by account 1`)
	require.Eventually(t, func() bool { return errLine.MatchString(mw.stderr.String()) }, eventWait, tick, "waiting for the reload's error")
	gauge, _ := value(scrape(t, mw), "meetwatch_config_reload_success")
	assert.Zero(t, gauge, "meetwatch_config_reload_success after a bad file")
	readyWith("acct-01", "acct-03", "acct-04")
	waitForPolls(t, s.sim("acct-04"), 2)
	assert.False(t, mw.exited(), "a bad file does not stop meetwatch")

	// Added back, it resumes from its state: its end and its start, and
	// nothing announced before again.
	s.write(t, "acct-01", "acct-02", "acct-03", "acct-04")
	hup()
	readyWith("acct-01", "acct-02", "acct-03", "acct-04")
	msgs := waitForMessages(t, nc, "MEETINGS", 14)
	waitForPolls(t, s.sim("acct-02"), 2)
	msgs = storedMessages(t, nc, "MEETINGS")
	require.Len(t, msgs, 14, "nothing more once it resumed")
	var back []string
	for _, m := range msgs[12:] {
		back = append(back, m.Subject)
		assert.False(t, m.Event.Data.Initial, "%s", m.Subject)
	}
	assert.ElementsMatch(t, []string{"meetings.acct-02.ended." + gone, "meetings.acct-02.started." + born}, back)
	ids := map[string]int{}
	for _, m := range msgs {
		ids[m.Event.ID]++
	}
	for id, n := range ids {
		assert.Equal(t, 1, n, "event %s", id)
	}
	gauge, _ = value(scrape(t, mw), "meetwatch_config_reload_success")
	assert.Equal(t, 1.0, gauge, "meetwatch_config_reload_success after a good file")

	mw.stop(t, syscall.SIGTERM)
	t.Logf("reload: added account's first listing %s after SIGHUP (bound %s); removed account stopped; bad file kept %d accounts; re-added account announced %d events, none again",
		added.Round(time.Millisecond), interval+leaseTTL/10, 3, len(back))
}

// pollCommitted matches a debug line of a committed poll of an account.
var pollCommitted = regexp.MustCompile(`^time=(\S+) level=\S+ msg="poll committed" account=(\S+) `)

// commitTimes returns the times of each account's committed polls, as its
// log lines say.
func commitTimes(p *process) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, l := range p.stderr.Lines() {
		m := pollCommitted.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			out[m[2]] = append(out[m[2]], at)
		}
	}
	return out
}

// TestAccountsAreIsolated runs six accounts of which four fail, each its
// own way: 503s with Retry-After, 500s, a listing that never answers, and
// a refused login. The two others are polled every interval as if
// nothing happened: no gap between two of their commits reaches two
// intervals.
func TestAccountsAreIsolated(t *testing.T) {
	t.Parallel()
	const (
		interval = 500 * time.Millisecond
		watch    = 4 * time.Second
	)
	srv := natstest.Start(t)
	s := startAccountsSim(t, 6, 3, 13)
	entries := make([]simAccountEntry, len(s.names))
	for i, name := range s.names {
		entries[i] = simAccountEntry{Name: name, APIURL: s.api.URL, AccessToken: "multi-" + name}
	}
	// acct-04 logs in with an App ID the API does not know.
	entries[3] = simAccountEntry{Name: "acct-04", APIURL: s.api.URL, AppID: "unknown-app", AppKey: "wrong"}
	require.NoError(t, writeAccountsFile(s.file, entries))
	var hung atomic.Int64
	listing := func(f apisim.Fault) func(r *http.Request) *apisim.Fault {
		return func(r *http.Request) *apisim.Fault {
			if r.URL.Path != apisim.Path {
				return nil
			}
			if f.Delay > 0 {
				hung.Add(1)
			}
			return &f
		}
	}
	s.sim("acct-01").SetHook(listing(apisim.Fault{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"2"}}}))
	s.sim("acct-02").SetHook(listing(apisim.Fault{Status: http.StatusInternalServerError}))
	s.sim("acct-03").SetHook(listing(apisim.Fault{Delay: time.Hour}))

	env := manyEnv(s.file, srv.ClientURL(), "solo", 2*time.Second)
	env["MEETWATCH_POLL_INTERVAL"] = interval.String()
	delete(env, "MEETWATCH_POLL_TIMEOUT") // 90% of the interval: the hung listing gives way
	mw := startMeetwatch(t, env, "run")
	healthy := []string{"acct-05", "acct-06"}
	for _, name := range healthy {
		waitForPolls(t, s.sim(name), 2)
	}
	from := time.Now()
	time.Sleep(watch) // the polls' own schedule is what is measured
	commits := commitTimes(mw)
	mw.stop(t, syscall.SIGTERM)

	worst := map[string]time.Duration{}
	for _, name := range healthy {
		var times []time.Time
		for _, at := range commits[name] {
			if !at.Before(from) {
				times = append(times, at)
			}
		}
		require.GreaterOrEqual(t, len(times), int(watch/interval)-2, "%s: commits over %s", name, watch)
		for i := 1; i < len(times); i++ {
			worst[name] = max(worst[name], times[i].Sub(times[i-1]))
		}
		assert.Less(t, worst[name], 2*interval, "%s: the longest gap between two commits", name)
	}
	for _, name := range []string{"acct-01", "acct-02", "acct-03", "acct-04"} {
		assert.Empty(t, commits[name], "%s commits nothing", name)
	}
	stderr := mw.stderr.String()
	assert.Positive(t, hung.Load(), "acct-03's listings hung")
	assert.Regexp(t, `msg="the api asked for a pause; the next poll waits for it" account=acct-01 `, stderr)
	assert.Regexp(t, `msg="the api refused the credentials; no login before the backoff has passed" account=acct-04 `, stderr, "acct-04's login is refused")
	for name, d := range worst {
		worst[name] = d.Round(time.Millisecond)
	}
	t.Logf("isolation: over %s, the healthy accounts' longest gaps between commits %v (interval %s); the failing ones committed nothing",
		watch, worst, interval)
}

// TestAccountsOfOneUnitName: a budget group named as an account outside
// it is refused at start, since both would move as one unit of that name.
func TestAccountsOfOneUnitName(t *testing.T) {
	t.Parallel()
	env, path := accountsEnv(t, "accounts:\n  - name: acme\n    access_token: a\n  - name: beta\n    access_token: b\n    budget_group: acme\n")
	mw := rejectsConfiguration(t, env, "run")
	assert.Contains(t, mw.stderr.String(), "MEETWATCH_ACCOUNTS_FILE: "+path+`: budget_group "acme" of account "beta": the name of account "acme", which is not in the group`)

	env, _ = accountsEnv(t, "accounts:\n  - name: acme\n    access_token: a\n    budget_group: acme\n  - name: beta\n    access_token: b\n    budget_group: acme\n")
	cfg, err := loadConfig(env, true)
	require.NoError(t, err, "a group named as one of its own accounts")
	accounts, err := loadAccounts(cfg)
	require.NoError(t, err)
	assert.Equal(t, []string{"acme", "acme"}, []string{accounts[0].unit(), accounts[1].unit()})

	env["MEETWATCH_ACCOUNT_CONCURRENCY"] = "0"
	mw = rejectsConfiguration(t, env, "run")
	assert.Contains(t, mw.stderr.String(), "MEETWATCH_ACCOUNT_CONCURRENCY: must be 1 to 1024, got 0")
}

// TestManyAccountsWithDocumentedPermissions runs the accounts of a file
// with a NATS user that holds exactly the permissions docs/security.md
// lists for run: the placement's look at the lease bucket included.
func TestManyAccountsWithDocumentedPermissions(t *testing.T) {
	t.Parallel()
	perms := readmePermissions(t)
	perms.Publish.Allow = append(perms.Publish.Allow, accountsPermissions(t)...)
	srv := startPermissionedNATS(t, perms)
	s := startAccountsSim(t, 2, 2, 19)
	env := manyEnv(s.file, srv.ClientURL(), "solo", 2*time.Second)
	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword
	mw := startMeetwatch(t, env, "run")
	nc := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
	waitForMessages(t, nc, "MEETINGS", 4)
	for _, name := range s.names {
		waitForPolls(t, s.sim(name), 2)
	}
	mw.stop(t, syscall.SIGTERM)
	assert.NotContains(t, mw.stderr.String(), "Permissions Violation")
}

// accountsPermissions returns the entries docs/security.md adds to the
// meetwatch user's publish list for an accounts file.
func accountsPermissions(tb testing.TB) []string {
	tb.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	require.NoError(tb, err)
	_, after, ok := strings.Cut(string(doc), "- With an accounts file, each replica lists the lease bucket")
	require.True(tb, ok, "docs/security.md says nothing of an accounts file's permissions")
	_, block, ok := strings.Cut(after, "```text\n")
	require.True(tb, ok, "no text block of an accounts file's permissions")
	block, _, ok = strings.Cut(block, "```")
	require.True(tb, ok, "the text block is not closed")
	var out []string
	for _, l := range strings.Split(block, "\n") {
		if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
			out = append(out, l)
		}
	}
	require.NotEmpty(tb, out)
	return out
}
