//go:build linux

package main

// One process polls many accounts, each behind a simulated API that takes
// 30 ms a page: every account is listed on its interval, and the cost of
// the process (memory and CPU) per account and per meeting is measured
// as docs/sizing.md reports it. It reads /proc, hence linux only.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// accountsRun is what one run of meetwatch over many simulated accounts
// measured.
type accountsRun struct {
	accounts, meetings int
	interval, window   time.Duration
	// firstAll is from meetwatch's start to every account's first commit.
	firstAll time.Duration
	// gaps holds, for every account, the times between two of its commits
	// in the window, the one before the window included, and from its last
	// commit to the window's end; worst is the longest, of worstAccount.
	gaps         []time.Duration
	worst        time.Duration
	worstAccount string
	commits      int // in the window, of every account
	// Of meetwatch at the window's end: its RSS, peak RSS, Go heap in use,
	// goroutines; and the CPU it used in the window.
	rss, hwm    int64 // kB
	heap        float64
	goroutines  float64
	cpu         time.Duration
	cpuSim      time.Duration // the simulator's, in the window
	cpuNATS     time.Duration // nats-server's, in the window
	busy        time.Duration // every process of the machine, in the window
	started     float64       // events published by the end
	pollsFailed float64       // in the window
}

// cores returns a CPU time in the window as cores busy.
func (r accountsRun) cores(d time.Duration) float64 { return d.Seconds() / r.window.Seconds() }

// measureAccounts runs `meetwatch sim --accounts` (a page delay of 30 ms,
// a random change in each account every churn, 0 for none), a nats-server
// and `meetwatch run` over the simulator's accounts file, each a process
// of its own, waits for every account's first commit, and measures over a
// window of `window` intervals.
func measureAccounts(t *testing.T, accounts, meetings int, churn, interval time.Duration, window int) accountsRun {
	res := accountsRun{accounts: accounts, meetings: meetings, interval: interval, window: time.Duration(window) * interval}
	port := freePort(t)
	natsProc := startChild(t, "nats-server", natsServerBinary(t), nil, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	connectWithin(t, natsURL, eventWait)

	file := filepath.Join(t.TempDir(), "accounts.yaml")
	sim := startChild(t, "sim", binary, nil, "sim", "--addr", "127.0.0.1:0", "--token", "load",
		"--accounts", strconv.Itoa(accounts), "--meetings", strconv.Itoa(meetings), "--churn", churn.String(),
		"--page-delay", "30ms", "--seed", "20", "--accounts-file", file)
	sim.waitFor(t, regexp.MustCompile(`accounts file (\S+)`), eventWait)

	env := map[string]string{
		"MEETWATCH_ACCOUNTS_FILE": file,
		"MEETWATCH_NATS_URL":      natsURL,
		"MEETWATCH_POLL_INTERVAL": interval.String(),
		"MEETWATCH_HTTP_ADDR":     "127.0.0.1:0",
		"MEETWATCH_LOG_LEVEL":     "debug",
	}
	for _, name := range []string{"GOMEMLIMIT", "GOGC"} {
		if v := os.Getenv(name); v != "" {
			env[name] = v // measure as deployed: deploy/ sets them
			t.Logf("meetwatch runs with %s=%s", name, v)
		}
	}
	began := time.Now()
	mw := startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool { return len(commitTimes(mw)) == accounts }, 2*time.Minute, 100*time.Millisecond,
		"waiting for the first commit of each of %d accounts", accounts)
	res.firstAll = time.Since(began)

	// Failed polls are counted in the window: a first poll of hundreds of
	// starts may pass its deadline on a busy machine, and is tried again.
	failed0 := failedPolls(scrape(t, mw))
	from := time.Now()
	cpu0, sim0, nats0, busy0 := procCPU(t, mw.cmd.Process.Pid), procCPU(t, sim.pid()), procCPU(t, natsProc.pid()), machineBusy(t)
	time.Sleep(res.window) // the polls' own schedule is what is measured
	to := time.Now()
	res.cpu = procCPU(t, mw.cmd.Process.Pid) - cpu0
	res.cpuSim, res.cpuNATS, res.busy = procCPU(t, sim.pid())-sim0, procCPU(t, natsProc.pid())-nats0, machineBusy(t)-busy0
	res.hwm, res.rss = procMemory(t, mw.cmd.Process.Pid)
	families := scrape(t, mw)
	res.heap, _ = value(families, "go_memstats_heap_inuse_bytes")
	res.goroutines, _ = value(families, "go_goroutines")
	for _, m := range families["meetwatch_events_published_total"].GetMetric() {
		res.started += m.GetCounter().GetValue()
	}
	res.pollsFailed = failedPolls(families) - failed0
	commits := commitTimes(mw)
	mw.stop(t, syscall.SIGTERM)

	for name, times := range commits {
		i := slices.IndexFunc(times, func(at time.Time) bool { return !at.Before(from) })
		require.Positive(t, i, "%s: a commit before the window and one in it", name)
		prev := times[i-1]
		var gaps []time.Duration
		for _, at := range times[i:] {
			if at.After(to) {
				break
			}
			gaps = append(gaps, at.Sub(prev))
			prev = at
		}
		res.commits += len(gaps)
		gaps = append(gaps, to.Sub(prev))
		if gap := slices.Max(gaps); gap > res.worst {
			res.worst, res.worstAccount = gap, name
		}
		res.gaps = append(res.gaps, gaps...)
	}
	slices.Sort(res.gaps)
	return res
}

// failedPolls sums meetwatch_polls_total of every result but ok.
func failedPolls(families map[string]*dto.MetricFamily) float64 {
	var n float64
	for _, m := range families["meetwatch_polls_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() != "ok" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// String reports the run's figures.
func (r accountsRun) String() string {
	return fmt.Sprintf("%d accounts × %d meetings, interval %s, window %s: every account's first commit %s after the start; %d commits in the window, between two of an account's median %s, worst %s (%s); meetwatch RSS %.0f MB (peak %.0f MB), Go heap in use %.1f MB, %.0f goroutines, CPU %.2f cores; simulator %.2f cores, nats-server %.2f cores, the machine %.2f cores; events %.0f, failed polls in the window %.0f",
		r.accounts, r.meetings, r.interval, r.window, r.firstAll.Round(10*time.Millisecond), r.commits,
		median(r.gaps).Round(time.Millisecond), r.worst.Round(time.Millisecond), r.worstAccount,
		float64(r.rss)/1024, float64(r.hwm)/1024, r.heap/(1<<20), r.goroutines, r.cores(r.cpu),
		r.cores(r.cpuSim), r.cores(r.cpuNATS), r.cores(r.busy), r.started, r.pollsFailed)
}

// TestTwoHundredAccountsPollOnTime runs one process over 200 accounts of
// 100 meetings each, behind a simulator that takes 30 ms a page and
// changes a meeting of each account every 2 s, on a 2 s interval: over
// five intervals after every account's first commit, no account waits two
// intervals between two commits.
func TestTwoHundredAccountsPollOnTime(t *testing.T) {
	t.Parallel()
	const interval = 2 * time.Second
	r := measureAccounts(t, 200, 100, 2*time.Second, interval, 5)
	assert.Less(t, r.worst, 2*interval, "the longest wait of an account between two commits (%s)", r.worstAccount)
	assert.GreaterOrEqual(t, r.commits, 200*4, "commits of every account in the window")
	assert.Zero(t, r.pollsFailed, "failed polls")
	t.Log(r)
}

// TestManyAccountsSizing measures one process over the numbers of accounts
// and meetings listed in MEETWATCH_SIZING_ACCOUNTS, as accounts×meetings
// pairs (e.g. 1x0,100x0,200x0,100x100,200x100), on a 2 s interval with no
// churn, each on a quiet machine, and prints the figures docs/sizing.md
// reports. It asserts only that every account was listed on time.
func TestManyAccountsSizing(t *testing.T) {
	spec := os.Getenv("MEETWATCH_SIZING_ACCOUNTS")
	if spec == "" {
		t.Skip("set MEETWATCH_SIZING_ACCOUNTS to accounts×meetings pairs, e.g. MEETWATCH_SIZING_ACCOUNTS=1x0,100x0,200x0,100x100,200x100 (takes minutes)")
	}
	const interval = 2 * time.Second
	var runs []accountsRun
	for _, pair := range strings.Split(spec, ",") {
		a, m, ok := strings.Cut(strings.TrimSpace(pair), "x")
		accounts, err1 := strconv.Atoi(a)
		meetings, err2 := strconv.Atoi(m)
		require.True(t, ok && err1 == nil && err2 == nil && accounts > 0 && meetings >= 0,
			"MEETWATCH_SIZING_ACCOUNTS=%q: want accounts×meetings pairs such as 200x100, comma-separated", spec)
		t.Run(pair, func(t *testing.T) {
			waitQuiet(t, 5*time.Minute)
			r := measureAccounts(t, accounts, meetings, 0, interval, 10)
			assert.Less(t, r.worst, 2*interval, "the longest wait of an account between two commits (%s)", r.worstAccount)
			t.Log(r)
			runs = append(runs, r)
		})
	}
	for _, r := range runs {
		t.Log(r)
	}
}
