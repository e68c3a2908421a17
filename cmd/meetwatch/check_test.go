package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
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
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// checkLine is one line of `meetwatch check`.
type checkLine struct {
	ok           bool
	name, detail string
}

var checkLinePattern = regexp.MustCompile(`^(ok|FAIL)  +([a-z_]+): (.+)$`)

// checkLines reads what `meetwatch check` printed, failing the test on a
// line that is not a check's.
func checkLines(tb testing.TB, p *process) []checkLine {
	tb.Helper()
	var out []checkLine
	for _, l := range p.stdout.Lines() {
		m := checkLinePattern.FindStringSubmatch(l)
		require.NotNil(tb, m, "a line that is no check's: %q", l)
		out = append(out, checkLine{ok: m[1] == "ok", name: m[2], detail: m[3]})
	}
	return out
}

// byName returns the checks by name, failing the test if one comes twice.
func byName(tb testing.TB, lines []checkLine) map[string]checkLine {
	tb.Helper()
	out := map[string]checkLine{}
	for _, l := range lines {
		_, twice := out[l.name]
		require.False(tb, twice, "check %s printed twice", l.name)
		out[l.name] = l
	}
	return out
}

// runCheckBinary runs `meetwatch check` with env and returns its exit code
// and its lines.
func runCheckBinary(tb testing.TB, env map[string]string, args ...string) (int, []checkLine, *process) {
	tb.Helper()
	p := startMeetwatch(tb, env, append([]string{"check"}, args...)...)
	code := p.wait(tb, eventWait)
	if slices.Contains(args, "--json") {
		return code, nil, p
	}
	return code, checkLines(tb, p), p
}

// checkEnv is the environment of `meetwatch check` against an API and a
// NATS URL: run's, with an interval the default budget fits.
func checkEnv(apiURL, token, natsURL string) map[string]string {
	env := runEnv(apiURL, token, natsURL)
	env["MEETWATCH_POLL_INTERVAL"] = "15s"
	delete(env, "MEETWATCH_POLL_TIMEOUT")
	return env
}

// checkNames are the checks of a run that gets as far as the sizing, in
// their order.
var checkNames = []string{
	"login", "listing", "meetings", "latency", "budget", "rate_limit_headers", "clock_skew",
	"nats", "jetstream", "stream", "publish", "state_bucket", "lease_bucket", "view_bucket", "sizing",
}

// jetState is what a NATS account stores, as far as check could change
// it: every stream's configuration and state, and its consumers.
type jetState map[string]jetstream.StreamInfo

func jetStateOf(tb testing.TB, nc *nats.Conn) jetState {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	out := jetState{}
	list := js.ListStreams(tb.Context())
	for info := range list.Info() {
		info.TimeStamp = time.Time{} // when the server answered
		info.Cluster = nil
		out[info.Config.Name] = *info
	}
	require.NoError(tb, list.Err())
	return out
}

// TestCheckAllOKWritesNothing runs check with the user docs/security.md
// documents for run, against the state a run left: every check passes, the
// sizing counts the requests of this listing, --json says the same, and
// the stream and the buckets hold exactly what they held before.
func TestCheckAllOKWritesNothing(t *testing.T) {
	t.Parallel()
	const (
		token    = "check-token-5d1e"
		appID    = "check-app"
		appKey   = "check-app-key-0f3e"
		meetings = 1234 // in pages of 500 overlapping by 20: offsets 0, 479, 958
	)
	srv := startPermissionedNATS(t, readmePermissions(t))
	admin := connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword))
	api := apisim.NewServer(apisim.Options{Token: token, AppID: appID, AppKey: appKey, TokenTTL: 2 * time.Hour, Seed: 7})
	t.Cleanup(api.Close)
	api.Sim.AddN(meetings)

	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword
	env["MEETWATCH_LEASE_TTL"] = "1m" // nothing in the lease bucket expires while the test looks
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, admin, "MEETINGS", meetings)
	st := newStateView(t, admin)
	require.Eventually(t, func() bool { _, n := st.meta(); return n == meetings }, eventWait, tick, "waiting for the first commit")
	mw.stop(t, syscall.SIGTERM)

	live, err := admin.SubscribeSync("meetings.>")
	require.NoError(t, err)
	before := jetStateOf(t, admin)
	requests, logins := api.Sim.Requests(), api.Sim.Logins()

	delete(env, "MEETWATCH_ACCESS_TOKEN")
	env["MEETWATCH_APP_ID"], env["MEETWATCH_APP_KEY"] = appID, appKey
	env["MEETWATCH_POLL_INTERVAL"] = "15s"
	delete(env, "MEETWATCH_POLL_TIMEOUT")
	code, lines, p := runCheckBinary(t, env)
	require.Equal(t, 0, code, "exit code; stdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
	var names []string
	for _, l := range lines {
		names = append(names, l.name)
		assert.True(t, l.ok, "%s: %s", l.name, l.detail)
	}
	assert.Equal(t, checkNames, names)
	got := byName(t, lines)
	assert.Contains(t, got["login"].detail, `App ID login as "check-app"; token expires `)
	assert.Contains(t, got["meetings"].detail, "1234 going on now")
	assert.Contains(t, got["budget"].detail, "this check sent 2 requests (1 login and 1 page)")
	assert.Contains(t, got["stream"].detail, "MEETINGS stores meetings.>")
	assert.Contains(t, got["state_bucket"].detail, "the last commit, of 1234 meetings")
	assert.Contains(t, got["lease_bucket"].detail, "no replica leads", "run released the lease as it stopped")
	assert.Contains(t, got["view_bucket"].detail, "KV_meetings-now holds 1234 messages")
	assert.Contains(t, got["sizing"].detail, "1234 meetings in pages of 500 (overlap 20): a full listing takes 3 requests")
	assert.Contains(t, got["sizing"].detail, "every 15s fits")
	assert.Equal(t, requests+1, api.Sim.Requests(), "one page")
	assert.Equal(t, logins+1, api.Sim.Logins(), "one login")
	for _, secret := range []string{appKey, mwPassword, token} {
		assert.NotContains(t, p.stdout.String()+p.stderr.String(), secret)
	}

	code, _, p = runCheckBinary(t, env, "--json")
	require.Equal(t, 0, code, "exit code with --json; stderr:\n%s", p.stderr)
	var doc struct {
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
		Sizing struct {
			Meetings int  `json:"meetings"`
			Requests int  `json:"requests"`
			Fits     bool `json:"fits"`
		} `json:"sizing"`
		OK bool `json:"ok"`
	}
	require.NoError(t, json.Unmarshal([]byte(p.stdout.String()), &doc), "stdout:\n%s", p.stdout)
	assert.True(t, doc.OK)
	var jsonNames []string
	for _, c := range doc.Checks {
		jsonNames = append(jsonNames, c.Name)
		assert.True(t, c.OK, "%s: %s", c.Name, c.Detail)
		if c.Name == "sizing" { // the same verdict, but for the time measured
			atLeast := regexp.MustCompile(`at least \S+;`)
			assert.Equal(t, atLeast.ReplaceAllString(got["sizing"].detail, ""), atLeast.ReplaceAllString(c.Detail, ""))
		}
	}
	assert.Equal(t, names, jsonNames)
	assert.Equal(t, meetings, doc.Sizing.Meetings)
	assert.Equal(t, 3, doc.Sizing.Requests)
	assert.True(t, doc.Sizing.Fits)

	assert.Equal(t, before, jetStateOf(t, admin), "what the account stores")
	// What a plain subscriber saw: the probes, one a kind of event a check.
	for range 2 * 3 {
		m, err := live.NextMsg(eventWait)
		require.NoError(t, err)
		assert.Empty(t, m.Data)
		assert.NotEmpty(t, m.Header.Get("Meetwatch-Probe"), "a probe is marked")
	}
}

// TestCheckQueryAllRejected checks the listing's failure when the token is
// not an administrator's, and that its fix works.
func TestCheckQueryAllRejected(t *testing.T) {
	t.Parallel()
	const token = "check-403-token"
	api := startAPI(t, token, 3)
	api.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		if r.URL.Path == apisim.Path && r.URL.Query().Get("queryAll") == "true" {
			return &apisim.Fault{Status: http.StatusForbidden, Code: "USG.000000002", Msg: "No permission."}
		}
		return nil
	})
	env := checkEnv(api.URL, token, natstest.Start(t).ClientURL())

	code, lines, p := runCheckBinary(t, env)
	assert.Equal(t, 1, code, "exit code")
	got := byName(t, lines)
	require.Contains(t, got, "listing")
	assert.False(t, got["listing"].ok)
	for _, want := range []string{"403", "USG.000000002", "queryAll needs an enterprise administrator's token", "set MEETWATCH_QUERY_ALL=false"} {
		assert.Contains(t, got["listing"].detail, want)
	}
	for _, name := range []string{"meetings", "latency", "sizing"} {
		assert.NotContains(t, got, name, "nothing listed, nothing to tell")
	}
	for _, l := range lines {
		assert.True(t, l.ok || l.name == "listing", "%s: %s", l.name, l.detail)
	}
	assert.Contains(t, p.stderr.String(), "1 of 12 checks failed: listing")

	env["MEETWATCH_QUERY_ALL"] = "false"
	code, lines, _ = runCheckBinary(t, env)
	assert.Equal(t, 0, code, "exit code with the fix")
	assert.Contains(t, byName(t, lines)["meetings"].detail, "this user's own: queryAll=false")
}

// TestCheckNATSUnreachable checks that an unreachable NATS fails the check
// with the dial error, and without the password of the URL.
func TestCheckNATSUnreachable(t *testing.T) {
	t.Parallel()
	const token = "check-dial-token"
	api := startAPI(t, token, 3)
	port := awayPort(t)
	env := checkEnv(api.URL, token, fmt.Sprintf("nats://meetwatch:Dial-pw-9b2c@127.0.0.1:%d", port))

	code, lines, p := runCheckBinary(t, env)
	assert.Equal(t, 1, code, "exit code")
	got := byName(t, lines)
	require.Contains(t, got, "nats")
	assert.False(t, got["nats"].ok)
	assert.Contains(t, got["nats"].detail, fmt.Sprintf("dial tcp 127.0.0.1:%d", port))
	assert.Contains(t, got["nats"].detail, "connection refused")
	assert.NotContains(t, p.stdout.String()+p.stderr.String(), "Dial-pw-9b2c")
	for _, name := range []string{"jetstream", "stream", "state_bucket"} {
		assert.NotContains(t, got, name)
	}
	assert.True(t, got["listing"].ok, "the API's checks run all the same")
	assert.True(t, got["sizing"].ok)
}

// TestCheckNamesEveryDeniedPermission removes each entry of the
// permissions docs/security.md documents for run in turn, and checks that
// check fails naming it, and fails nothing that entry does not cover.
func TestCheckNamesEveryDeniedPermission(t *testing.T) {
	t.Parallel()
	const token = "check-perm-token"
	perms := readmePermissions(t)
	api := startAPI(t, token, 3)
	type entry struct{ kind, subject string }
	var entries []entry
	for _, s := range perms.Publish.Allow {
		entries = append(entries, entry{"publish", s})
	}
	for _, s := range perms.Subscribe.Allow {
		entries = append(entries, entry{"subscribe", s})
	}
	for _, e := range entries {
		t.Run(e.kind+" "+e.subject, func(t *testing.T) {
			t.Parallel()
			reduced := &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: slices.DeleteFunc(slices.Clone(perms.Publish.Allow), func(s string) bool { return s == e.subject })},
				Subscribe: &server.SubjectPermission{Allow: slices.DeleteFunc(slices.Clone(perms.Subscribe.Allow), func(s string) bool { return s == e.subject })},
			}
			if len(reduced.Subscribe.Allow) == 0 {
				reduced.Subscribe = &server.SubjectPermission{Deny: []string{">"}} // an empty list would allow everything
			}
			srv := startPermissionedNATS(t, reduced)
			env := checkEnv(api.URL, token, srv.ClientURL())
			env["MEETWATCH_NATS_USER"], env["MEETWATCH_NATS_PASSWORD"] = mwUser, mwPassword

			code, lines, _ := runCheckBinary(t, env)
			assert.Equal(t, 1, code, "exit code")
			named := 0
			for _, l := range lines {
				switch {
				case l.ok:
				case strings.Contains(l.detail, e.subject):
					named++
					assert.Contains(t, l.detail, "needs "+e.kind+" permission on "+e.subject+" (")
				default:
					assert.Fail(t, "a failure that is not the denied permission's", "%s: %s", l.name, l.detail)
				}
			}
			assert.Positive(t, named, "no FAIL names %s", e.subject)
		})
	}
}

// TestCheckIntervalTooShort checks the sizing verdict of a listing the
// budget cannot fit into the interval, with the embedded NATS run would
// start: ten requests a listing (300 meetings in pages of 50 that overlap
// by 20, so 29 apart), which a budget of 60 a minute (58 requests every
// 61 s) allows in 10.5 s, twice the interval of 5 s.
func TestCheckIntervalTooShort(t *testing.T) {
	t.Parallel()
	const token = "check-size-token"
	api := startAPI(t, token, 300)
	env := map[string]string{
		"MEETWATCH_API_URL":              api.URL,
		"MEETWATCH_ACCESS_TOKEN":         token,
		"MEETWATCH_PAGE_SIZE":            "50",
		"MEETWATCH_API_RATE":             "60",
		"MEETWATCH_POLL_INTERVAL":        "5s",
		"MEETWATCH_DATA_DIR":             t.TempDir(),
		"MEETWATCH_EMBEDDED_NATS_LISTEN": "127.0.0.1:0",
	}
	code, lines, _ := runCheckBinary(t, env)
	assert.Equal(t, 1, code, "exit code")
	got := byName(t, lines)
	assert.True(t, got["nats"].ok)
	assert.Contains(t, got["nats"].detail, "MEETWATCH_NATS_URL is empty: run starts its own NATS server")
	require.Contains(t, got, "sizing")
	assert.False(t, got["sizing"].ok)
	assert.Contains(t, got["sizing"].detail, "300 meetings in pages of 50 (overlap 20): a full listing takes 10 requests")
	assert.Contains(t, got["sizing"].detail, "MEETWATCH_POLL_INTERVAL=5s is too short for the budget, which allows 4.7 requests an interval")
	assert.Contains(t, got["sizing"].detail, "set MEETWATCH_POLL_INTERVAL=11s, or MEETWATCH_API_RATE=125")
	for _, l := range lines {
		assert.True(t, l.ok || l.name == "sizing", "%s: %s", l.name, l.detail)
	}
}

// TestCheckReadsTheAnswer serves the page after 1.1 s, under a request
// timeout of 2 s, with a Date five minutes old and the API gateway's
// rate-limit headers announcing 50 requests a minute, under a budget of
// 100: latency, clock_skew and budget fail, and rate_limit_headers shows
// what came.
func TestCheckReadsTheAnswer(t *testing.T) {
	t.Parallel()
	const token = "check-header-token"
	api := startAPI(t, token, 3)
	api.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		return &apisim.Fault{Delay: 1100 * time.Millisecond, Header: http.Header{
			"Date":                        {time.Now().Add(-5 * time.Minute).UTC().Format(http.TimeFormat)},
			"X-Apig-Ratelimit-Api":        {"remain:49,limit:50,time:1 minute"},
			"X-Apig-Ratelimit-Api-Allenv": {"remain:199,limit:200,time:1 second"},
		}}
	})
	env := checkEnv(api.URL, token, natstest.Start(t).ClientURL())
	env["MEETWATCH_REQUEST_TIMEOUT"] = "2s"
	code, lines, _ := runCheckBinary(t, env)
	assert.Equal(t, 1, code, "exit code")
	got := byName(t, lines)
	assert.False(t, got["clock_skew"].ok)
	m := regexp.MustCompile(`^this clock is (\S+) ahead of the API's Date`).FindStringSubmatch(got["clock_skew"].detail)
	require.NotNil(t, m, got["clock_skew"].detail)
	skew, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	assert.InDelta(t, 5*time.Minute, skew, float64(2*time.Second))
	assert.False(t, got["budget"].ok)
	assert.Contains(t, got["budget"].detail, "the API allows 50 a minute (X-Apig-Ratelimit-Api: remain:49,limit:50,time:1 minute): set MEETWATCH_API_RATE=50 or less")
	assert.True(t, got["rate_limit_headers"].ok)
	assert.Equal(t, "X-Apig-Ratelimit-Api: remain:49,limit:50,time:1 minute; X-Apig-Ratelimit-Api-Allenv: remain:199,limit:200,time:1 second", got["rate_limit_headers"].detail)
	assert.False(t, got["latency"].ok)
	assert.Regexp(t, `^one page of 3 records in 1\.\ds, more than half of MEETWATCH_REQUEST_TIMEOUT \(2s\)`, got["latency"].detail)
	for _, l := range lines {
		assert.True(t, l.ok || l.name == "clock_skew" || l.name == "budget" || l.name == "latency", "%s: %s", l.name, l.detail)
	}
}

// TestCheckProbesPassTailBy: a plain subscriber to the event subjects,
// with no stream to refuse the probes, is a case check cannot tell from a
// stream that does not answer, and says so; once the stream is there,
// check passes, and `meetwatch tail`, which reads the stream, never sees
// a probe.
func TestCheckProbesPassTailBy(t *testing.T) {
	t.Parallel()
	const token = "check-tail-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 3)
	env := checkEnv(api.URL, token, srv.ClientURL())

	sub, err := nc.SubscribeSync("meetings.>")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	code, lines, _ := runCheckBinary(t, env, "--timeout", "1s")
	assert.Equal(t, 1, code, "exit code")
	got := byName(t, lines)
	assert.False(t, got["stream"].ok)
	assert.Contains(t, got["stream"].detail, "no answer within 1s: something takes meetings.> but no stream answered")
	assert.True(t, got["publish"].ok, "the publish was let through: %s", got["publish"].detail)
	require.NoError(t, sub.Unsubscribe())

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "MEETINGS", Subjects: []string{"meetings.>"}, Duplicates: time.Hour})
	require.NoError(t, err)
	tail := startTail(t, srv.ClientURL())
	code, _, p := runCheckBinary(t, env)
	require.Equal(t, 0, code, "exit code; stdout:\n%s", p.stdout)

	// A message after the probes, which tail shows as what it is: once it
	// is printed, so is everything before it.
	_, err = js.Publish(t.Context(), "meetings.started.after", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(tail.stdout.Lines()) > 0 }, eventWait, tick, "waiting for tail")
	printed := tail.stdout.Lines()
	require.Len(t, printed, 1, "tail printed:\n%s", tail.stdout)
	assert.True(t, strings.HasPrefix(printed[0], "meetings.started.after: not a meeting event"), printed[0])
	tail.stop(t, syscall.SIGTERM)
}

func TestCheckUsage(t *testing.T) {
	t.Parallel()
	assertUsageErrors(t, []usageError{
		{name: "extra argument", args: []string{"check", "now"}, want: `unexpected argument "now"`},
		{name: "unknown flag", args: []string{"check", "--frobnicate"}, want: "frobnicate"},
		{name: "zero timeout", args: []string{"check", "--timeout", "0s"}, want: "--timeout 0s: must be positive"},
	})
	// A bad configuration exits 2, as run's does, before any check.
	mw := rejectsConfiguration(t, map[string]string{"MEETWATCH_API_URL": "http://127.0.0.1:9"}, "check")
	assert.Contains(t, mw.stderr.String(), "MEETWATCH_ACCESS_TOKEN")
	assert.Empty(t, mw.stdout.String())
	mw = rejectsConfiguration(t, map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_PAGE_SIZE": "501"}, "check")
	assert.Contains(t, mw.stderr.String(), "MEETWATCH_PAGE_SIZE")

	assert.Contains(t, runInProcess(t, nil, "--help").stdout.String(), "meetwatch check [--json]")
	help := runInProcess(t, nil, "check", "--help")
	assert.Equal(t, 0, help.code)
	for _, name := range checkNames {
		assert.Contains(t, help.stdout.String(), "  "+name+" ", "the help names check %s", name)
	}
	assert.Contains(t, help.stdout.String(), "--json")
}

// TestSizeListing checks the sizing verdict's arithmetic.
func TestSizeListing(t *testing.T) {
	base := sizingInput{
		meetings: 1234, limit: 500, overlap: 20, requests: 3, concurrency: 4,
		latency: 200 * time.Millisecond, apiRate: 100, budget: meetingapi.NewBudget(100, 4),
		interval: 15 * time.Second, pollTimeout: 13500 * time.Millisecond,
	}
	tests := []struct {
		name   string
		change func(*sizingInput)
		fits   bool
		want   string
	}{
		{
			name: "fits: the burst takes the pages, two rounds of them",
			fits: true,
			want: "1234 meetings in pages of 500 (overlap 20): a full listing takes 3 requests and at least 400ms; every 15s fits: the budget allows 23 requests an interval",
		},
		{
			name: "no budget",
			change: func(in *sizingInput) {
				in.budget, in.apiRate = nil, 0
			},
			fits: true,
			want: "a full listing takes 3 requests and at least 400ms; every 15s fits",
		},
		{
			name: "the budget cannot refill a listing in the interval",
			change: func(in *sizingInput) {
				in.meetings, in.requests = 20000, 42 // 1 + ceil(19500 / 479)
			},
			// 97 requests in 61 s: 42 take 26.4 s
			want: "20000 meetings in pages of 500 (overlap 20): a full listing takes 42 requests and at least 26.4s; MEETWATCH_POLL_INTERVAL=15s is too short for the budget, which allows 23 requests an interval: set MEETWATCH_POLL_INTERVAL=27s, or MEETWATCH_API_RATE=174",
		},
		{
			name: "slow pages outlast the default deadline",
			change: func(in *sizingInput) {
				in.budget, in.apiRate = nil, 0
				in.latency = 5 * time.Second // 3 requests: two rounds, 10 s, past 90% of 10 s
				in.interval, in.pollTimeout = 10*time.Second, 9*time.Second
			},
			want: "at least 10s; a poll's deadline, 9s (90% of MEETWATCH_POLL_INTERVAL), is too short for the pages alone, 10s at 5s each, 4 at a time: set MEETWATCH_POLL_INTERVAL=12s, or raise MEETWATCH_PAGE_CONCURRENCY",
		},
		{
			name: "slow pages outlast a deadline that was set",
			change: func(in *sizingInput) {
				in.latency = 5 * time.Second
				in.interval, in.pollTimeout, in.timeoutSet = 30*time.Second, 8*time.Second, true
			},
			want: "a poll's deadline, MEETWATCH_POLL_TIMEOUT=8s, is too short for the pages alone, 10s at 5s each, 4 at a time: set MEETWATCH_POLL_TIMEOUT=10s, or raise MEETWATCH_PAGE_CONCURRENCY",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			if tt.change != nil {
				tt.change(&in)
			}
			got := sizeListing(in)
			assert.Equal(t, tt.fits, got.Fits)
			assert.Contains(t, got.Verdict, tt.want)
			if !got.Fits {
				fit := in
				fit.interval = time.Duration(got.FitIntervalSeconds * float64(time.Second))
				if !in.timeoutSet {
					fit.pollTimeout = fit.interval * 9 / 10
				} else if got.FitPollTimeoutSeconds > 0 {
					fit.pollTimeout = time.Duration(got.FitPollTimeoutSeconds * float64(time.Second))
				}
				assert.True(t, sizeListing(fit).Fits, "the interval it proposes fits: %s", sizeListing(fit).Verdict)
				if got.FitBudgetPerMinute > 0 {
					fit = in
					fit.apiRate, fit.budget = got.FitBudgetPerMinute, meetingapi.NewBudget(got.FitBudgetPerMinute, in.concurrency)
					assert.True(t, sizeListing(fit).Fits, "the budget it proposes fits")
					fit.apiRate, fit.budget = got.FitBudgetPerMinute-1, meetingapi.NewBudget(got.FitBudgetPerMinute-1, in.concurrency)
					assert.False(t, sizeListing(fit).Fits, "the budget it proposes is the smallest that fits")
				}
			}
		})
	}
}

// TestCheckShortDuplicateWindow: a stream whose duplicate window is
// shorter than MEETWATCH_DUPLICATE_WINDOW, which run leaves as it is, fails
// the stream check with the consequence and the fix.
func TestCheckShortDuplicateWindow(t *testing.T) {
	t.Parallel()
	const token = "check-window-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "MEETINGS", Subjects: []string{"meetings.>"}, Duplicates: 5 * time.Minute})
	require.NoError(t, err)
	api := startAPI(t, token, 3)
	code, lines, p := runCheckBinary(t, checkEnv(api.URL, token, srv.ClientURL()))
	assert.Equal(t, 1, code, "exit code; stdout:\n%s", p.stdout)
	got := byName(t, lines)
	assert.False(t, got["stream"].ok)
	assert.Contains(t, got["stream"].detail, "MEETINGS keeps ids for 5m0s, less than MEETWATCH_DUPLICATE_WINDOW=1h0m0s")
	st, err := js.Stream(t.Context(), "MEETINGS")
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, st.CachedInfo().Config.Duplicates, "check changes nothing")
}
