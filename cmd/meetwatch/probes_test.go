package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// probeBody is a probe's whole answer, as an operator reads it.
type probeBody struct {
	Code      int
	Status    string `json:"status"`
	Role      string `json:"role"`
	Reason    string `json:"reason"`
	LastError string `json:"last_error"`
	raw       string
}

// getProbe asks a probe of p and returns its status code and body, or an
// error while the probes' address is not logged yet or they do not answer.
func getProbe(hc *http.Client, p *process, path string) (probeBody, error) {
	m := probesAddr.FindStringSubmatch(p.stderr.String())
	if m == nil {
		return probeBody{}, fmt.Errorf("no probe address logged yet")
	}
	resp, err := hc.Get("http://" + m[1] + path)
	if err != nil {
		return probeBody{}, err
	}
	defer resp.Body.Close()
	var b probeBody
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return probeBody{}, fmt.Errorf("decoding %s: %w", path, err)
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return probeBody{}, fmt.Errorf("decoding %s: %w", path, err)
	}
	b.Code, b.raw = resp.StatusCode, string(raw)
	return b, nil
}

// TestProbesOutliveNATS runs meetwatch against a NATS that is not there
// when it starts, then comes, then is killed for two minutes, far longer
// than any lease or backoff: the probes answer from the first second;
// /healthz is 200 throughout, since an outage is no reason to restart;
// /readyz is 503 while NATS is away, saying why, with the dial error; and
// events flow again within 5 s of the server's return, each transition
// once. The outage's errors are logged once, not every few seconds.
func TestProbesOutliveNATS(t *testing.T) {
	t.Parallel()
	const (
		meetings    = 20
		unreachable = 5 * time.Second
		outage      = 2 * time.Minute
	)
	r := &outageRig{port: awayPort(t), dir: t.TempDir(), token: "probes-token", natsBin: natsServerBinary(t)}
	seed := simtest.Seed(t, 11)
	r.api = apisim.NewServer(apisim.Options{Token: r.token, Seed: int64(seed)})
	t.Cleanup(r.api.Close)
	r.w = newWorld(r.api.Sim, meetings)
	r.rng = rand.New(rand.NewPCG(seed, seed+1))
	hc := &http.Client{Timeout: 2 * time.Second}

	started := time.Now()
	mw := startMeetwatch(t, r.env(), "run")
	var first probeBody
	require.Eventually(t, func() bool {
		var err error
		first, err = getProbe(hc, mw, "/healthz")
		return err == nil
	}, eventWait, tick, "the probes answer before NATS is there")
	answered := time.Since(started)
	assert.Equal(t, http.StatusOK, first.Code, first.raw)

	// watchProbes asks both probes every 250 ms until until, and returns
	// every /healthz that was not 200, and every /readyz answer.
	watchProbes := func(until time.Time) (unhealthy []string, ready []probeBody) {
		for time.Now().Before(until) {
			require.False(t, mw.exited(), "meetwatch exited (code %d); stderr:\n%s", mw.code, mw.stderr)
			if h, err := getProbe(hc, mw, "/healthz"); err != nil || h.Code != http.StatusOK {
				unhealthy = append(unhealthy, fmt.Sprintf("%s: %v %s", time.Since(started).Round(time.Millisecond), err, h.raw))
			}
			if rd, err := getProbe(hc, mw, "/readyz"); err == nil {
				ready = append(ready, rd)
			}
			time.Sleep(250 * time.Millisecond)
		}
		return unhealthy, ready
	}
	// assertOutage checks what /readyz said while NATS was away: 503
	// with the reason and the dial error, past the first seconds that a
	// disconnection takes to notice.
	assertOutage := func(phase string, ready []probeBody) {
		require.NotEmpty(t, ready, phase)
		for _, rd := range ready[len(ready)/2:] {
			assert.Equal(t, http.StatusServiceUnavailable, rd.Code, "%s: %s", phase, rd.raw)
			assert.Equal(t, "nats is not connected", rd.Reason, "%s: %s", phase, rd.raw)
			assert.Contains(t, rd.LastError, "connection refused", "%s: last_error names the dial error: %s", phase, rd.raw)
		}
	}

	unhealthy, ready := watchProbes(started.Add(unreachable))
	assert.Empty(t, unhealthy, "/healthz while NATS was unreachable from the start")
	assertOutage("unreachable from the start", ready)

	r.start(t)
	waitForMessages(t, r.nc, crashStream, meetings)
	waitForCommits(t, r.st, 2)
	require.Eventually(t, func() bool {
		rd, err := getProbe(hc, mw, "/readyz")
		return err == nil && rd.Code == http.StatusOK
	}, eventWait, tick, "ready once NATS is there")

	logged := len(mw.stderr.Lines())
	down := r.stop()
	ended, added := r.churn(t)
	unhealthy, ready = watchProbes(down.Add(outage))
	assert.Empty(t, unhealthy, "/healthz during a NATS outage of %s", outage)
	assertOutage("outage", ready)
	duringOutage := mw.stderr.Lines()[logged:]

	up := r.start(t)
	require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) > meetings },
		eventWait, 10*time.Millisecond, "waiting for the first event after NATS is back")
	resumed := time.Since(up)
	assert.Less(t, resumed, 5*time.Second, "events resume within 5 s of NATS's return")
	waitForMessages(t, r.nc, crashStream, meetings+len(ended)+len(added))
	msgs := settle(t, r.nc, r.st, r.api.Sim)
	require.Eventually(t, func() bool {
		rd, err := getProbe(hc, mw, "/readyz")
		return err == nil && rd.Code == http.StatusOK && rd.LastError == ""
	}, eventWait, tick, "ready again, with no error left")
	mw.stop(t, syscall.SIGTERM)

	checkTruth(t, msgs, r.w, nil)
	checkAfter(t, msgs, meetings, ended, added)
	stderr := mw.stderr.String()
	assert.Contains(t, stderr, "connection refused", "the unreachable NATS's dial error is named")
	assert.NotContains(t, stderr, "outbound buffer limit exceeded")
	asyncErrors := 0
	for _, l := range duringOutage {
		if strings.Contains(l, `msg="nats error"`) {
			asyncErrors++
		}
	}
	assert.LessOrEqual(t, asyncErrors, 2, "each asynchronous error is logged once an outage:\n%s", strings.Join(duringOutage, "\n"))
	assert.LessOrEqual(t, len(duringOutage), 15, "lines logged during the outage:\n%s", strings.Join(duringOutage, "\n"))
	t.Logf("probes answered %s after start; NATS unreachable for %s, then killed for %s: /healthz 200 throughout, /readyz 503 with the dial error; first event %s after its return; %d lines logged during the outage",
		answered.Round(time.Millisecond), unreachable, outage, resumed.Round(10*time.Millisecond), len(duringOutage))
}

// pollFailures matches the line of a failed poll, with its count.
var pollFailures = regexp.MustCompile(`consecutive_errors=(\d+)`)

// TestBackWithin30sOfTheAPI: after an API outage long enough for the
// backoff to reach its cap, the next poll comes at most 30 s after the
// API is back (the larger of the interval, 2 s, and 30 s), and its
// events with it.
func TestBackWithin30sOfTheAPI(t *testing.T) {
	t.Parallel()
	const failures = 6 // the sixth wait is 16-30 s; it was 32-64 s before the cap
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, "outage-token", 3)
	var down atomic.Bool
	down.Store(true)
	var resumed atomic.Int64 // the first listing after the return, in Unix nanoseconds
	api.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		if r.URL.Path != apisim.Path {
			return nil
		}
		if down.Load() {
			return &apisim.Fault{Status: http.StatusServiceUnavailable}
		}
		resumed.CompareAndSwap(0, time.Now().UnixNano())
		return nil
	})
	env := crashEnv(api.URL, "outage-token", srv.ClientURL())
	env["MEETWATCH_POLL_INTERVAL"] = "2s"
	env["MEETWATCH_POLL_TIMEOUT"] = "1s"
	mw := startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool {
		for _, m := range pollFailures.FindAllStringSubmatch(mw.stderr.String(), -1) {
			if m[1] == fmt.Sprint(failures) {
				return true
			}
		}
		return false
	}, 3*time.Minute, tick, "waiting for %d failed polls", failures)
	down.Store(false)
	back := time.Now()
	require.Eventually(t, func() bool { return streamLen(nc, crashStream) == 3 }, time.Minute, tick, "the events after the API's return")
	took := time.Since(back)
	// The poll that stored them says so once it is over, its view
	// reconciled too.
	require.Eventually(t, func() bool { return strings.Contains(mw.stderr.String(), "polling recovered") },
		eventWait, tick, "waiting for the poll to say it recovered")
	mw.stop(t, syscall.SIGTERM)
	// The wait is counted from the failed poll's end, which the test sees
	// a little later; the poll's first request follows its start within
	// moments; the events come with the poll, whose own time is the
	// machine's.
	polled := time.Unix(0, resumed.Load()).Sub(back)
	assert.LessOrEqual(t, polled, 30*time.Second+500*time.Millisecond, "the first listing within 30 s of the API's return")
	assert.LessOrEqual(t, took, polled+10*time.Second, "its events with that poll")
	t.Logf("API down for %d polls; listed again %s after its return (bound 30 s), its events stored %s after the return", failures, polled.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
}
