//go:build linux

package main

// TestSizing measures meetwatch as a user runs it, at the numbers of
// meetings listed in MEETWATCH_SIZING, against floors measured in the same
// run, and prints every figure; docs/sizing.md holds the results. It
// asserts only that the runs worked, not the targets: they are the work to
// come. It reads /proc, hence linux only.
//
// Three separate processes on 127.0.0.1: a nats-server built from the module
// in go.mod, `meetwatch sim` (no random churn, 30 ms per list request, a
// control endpoint through which the test churns meetings between two
// polls), and `meetwatch run` with JSON logs. The floors are measured in
// this process while meetwatch is stopped: the bare listing (the very pages
// meetwatch asked for, with its concurrency, bodies read and discarded) and
// an async publish of the messages meetwatch published on its first poll to
// a stream of the same configuration in a second account of the same
// server, so that subjects, headers and the stream name are the same too.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	sizingToken       = "sizing-token"
	sizingPageDelay   = 30 * time.Millisecond
	sizingConcurrency = 4 // MEETWATCH_PAGE_CONCURRENCY's default
	sizingChurnPolls  = 5
	sizingBareRuns    = 3
	sizingFloorRuns   = 3 // of each async floor
	sizingStream      = "MEETINGS"
	sizingBucket      = "meetwatch-state"
	// floorUser logs in to the second account, where the publish floor's
	// stream is; meetwatch connects without credentials to the first.
	floorUser = "floor"
)

func TestSizing(t *testing.T) {
	spec := os.Getenv("MEETWATCH_SIZING")
	if spec == "" {
		t.Skip("set MEETWATCH_SIZING to the numbers of meetings to measure, e.g. MEETWATCH_SIZING=10000,100000 (takes minutes)")
	}
	var sizes []int
	for _, s := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		require.NoError(t, err, "MEETWATCH_SIZING=%q: want numbers of meetings, comma-separated", spec)
		require.GreaterOrEqual(t, n, 400, "MEETWATCH_SIZING=%q: at least 400 meetings, so that 1%% churn starts and ends some", spec)
		sizes = append(sizes, n)
	}
	natsServer := buildNATSServer(t)
	for _, n := range sizes {
		t.Run(strconv.Itoa(n), func(t *testing.T) { measureSizing(t, natsServer, n) })
	}
}

// buildNATSServer builds nats-server from the module go.mod requires.
func buildNATSServer(tb testing.TB) string {
	tb.Helper()
	goTool, err := exec.LookPath("go")
	require.NoError(tb, err)
	bin := filepath.Join(tb.TempDir(), "nats-server")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	require.NoError(tb, err, "building nats-server: %s", out)
	return bin
}

// sizingRun is what one size's run measured.
type sizingRun struct {
	n         int
	recordAvg float64 // bytes of one record as served, on average

	listingBytes  int64 // one complete listing: the sum of its page bodies
	listingPages  int
	bare          []time.Duration // the bare listing, each run
	simPerListing time.Duration   // the simulator's CPU time per bare listing
	lookups       int             // of the last churn poll, asked again bare
	bareLookups   time.Duration
	floorPublish  time.Duration // async publish of the first poll's events, client side
	floorWindow   time.Duration // first to last stored message of it, server side
	floorMsgBytes int64
	// floorWrite is the same for the records in the state bucket.
	floorWrite      time.Duration
	floorWriteBytes int64

	first       pollFigures
	firstSteps  []step // where the first poll's time went
	firstWindow time.Duration
	firstProc   procStats     // of meetwatch, by the end of its first poll
	touchCost   time.Duration // per MB of memory touched for the first time
	churn       []pollFigures
	idle        pollFigures
	hwm1, rss1  int64 // kB, after the first poll and after the last poll
	cpu1        time.Duration
	gc1         gcPeak

	restart      time.Duration // exec to the first commit
	load         time.Duration // "leading" to "state loaded"
	restartSteps []step
	restart1     pollFigures
	hwm2         int64
	gc2          gcPeak

	bucketBytes, bucketMsgs uint64
	records, recordBytes    int
	markers, others         int

	cpuSim, cpuNATS, cpu2, cpuTest time.Duration
	// wall and busy are the run's wall time and the CPU time every process
	// of the machine used meanwhile: what the test's processes did not use
	// was someone else's load.
	wall, busy time.Duration
}

// pollFigures is one "poll committed" line, and what the simulator and
// the stream saw of that poll.
type pollFigures struct {
	at                                         time.Time
	meetings, started, changed, ended, missing int
	listing, ends, deliver, commit, total      time.Duration
	pages, confirms                            int
}

// steps splits the poll's total_ms by the log line's own figures, and
// adds the end lookups that follow its commit.
func (p pollFigures) steps() []step {
	return []step{
		{"listing", p.listing},
		{"diff (the rest)", p.total - p.listing - p.deliver - p.commit},
		{"deliver (intents, events, records)", p.deliver},
		{"commit (meta)", p.commit},
		{"then end lookups, their events and commit", p.ends},
	}
}

// step is a part of a poll and how long it took.
type step struct {
	what string
	took time.Duration
}

func measureSizing(t *testing.T, natsServer string, n int) {
	waitQuiet(t, 10*time.Minute)
	dir := t.TempDir()
	res := sizingRun{n: n}
	began, busy0 := time.Now(), machineBusy(t)
	test0 := procCPU(t, os.Getpid())

	// NATS, with the second account the publish floor uses.
	port := freePort(t)
	conf := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(conf, []byte(`
accounts {
  MEETWATCH: { jetstream: enabled, users: [ { user: meetwatch, password: meetwatch } ] }
  FLOOR: { jetstream: enabled, users: [ { user: `+floorUser+`, password: `+floorUser+` } ] }
}
no_auth_user: meetwatch
`), 0o600))
	natsProc := startChild(t, "nats-server", natsServer, nil,
		"-c", conf, "-js", "-sd", filepath.Join(dir, "jetstream"), "-p", strconv.Itoa(port), "-a", "127.0.0.1")
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	nc := connectWithin(t, natsURL, 15*time.Second)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	// The simulator, in its own process.
	simProc := startChild(t, "sim", binary, nil, "sim", "--addr", "127.0.0.1:0", "--token", sizingToken,
		"--meetings", strconv.Itoa(n), "--churn", "0", "--seed", "1",
		"--page-delay", sizingPageDelay.String(), "--control", "127.0.0.1:0")
	simWait := 30*time.Second + time.Duration(n)*200*time.Microsecond
	apiURL := simProc.waitFor(t, regexp.MustCompile(`simulated meeting API on (http://\S+)`), simWait)
	ctl := &simRemote{url: simProc.waitFor(t, regexp.MustCompile(`control on (http://\S+)`), simWait)}

	// Warm the simulator: it encodes each record on first use, a cost the
	// real API does not charge to meetwatch's first listing.
	var warm []simListing
	for off := 0; off < n; off += 500 {
		warm = append(warm, simListing{Offset: strconv.Itoa(off), Limit: "500"})
	}
	warmBytes, _ := bareFetch(t, apiURL, warm, true)
	res.recordAvg = float64(warmBytes) / float64(n)
	ctl.listings(t)

	// The interval leaves room for a steady poll (at 100k on two cores,
	// about ten seconds) and the churn between two.
	interval := max(3*time.Second, time.Duration(n)*300*time.Microsecond)
	env := map[string]string{
		"MEETWATCH_API_URL":       apiURL,
		"MEETWATCH_ACCESS_TOKEN":  sizingToken,
		"MEETWATCH_NATS_URL":      natsURL,
		"MEETWATCH_API_RATE":      "0",
		"MEETWATCH_PAGE_SIZE":     "500",
		"MEETWATCH_POLL_INTERVAL": interval.String(),
		"MEETWATCH_HTTP_ADDR":     "127.0.0.1:0",
		"MEETWATCH_LOG_FORMAT":    "json",
		"MEETWATCH_LOG_LEVEL":     "debug",
		"GODEBUG":                 "gctrace=1", // one stderr line per GC: the heap beside the RSS
	}
	for _, name := range []string{"GOMEMLIMIT", "GOGC"} {
		if v := os.Getenv(name); v != "" {
			env[name] = v // measure as deployed: deploy/ sets them
			t.Logf("meetwatch runs with %s=%s", name, v)
		}
	}
	firstWait := 3*time.Minute + time.Duration(n)*3*time.Millisecond
	pollWait := interval + 2*time.Minute

	// The first poll: every meeting is a started event.
	mw := startChild(t, "meetwatch run", binary, env, "run")
	log := &mwLog{child: mw}
	first := log.nextCommit(t, firstWait)
	res.firstProc = procStat(t, mw.pid())
	require.Equal(t, n, first.started, "the first poll publishes every meeting as started")
	res.first = first
	loaded := log.find(t, "state loaded")
	kvStream, err := js.Stream(t.Context(), "KV_"+sizingBucket)
	require.NoError(t, err)
	events, err := js.Stream(t.Context(), sizingStream)
	require.NoError(t, err)
	firstMsg, lastMsg := msgTime(t, events, 1), msgTime(t, events, uint64(n))
	res.firstWindow = lastMsg.Sub(firstMsg)
	pollStart := first.at.Add(-first.total)
	res.firstSteps = append([]step{
		{"exec to the poll's start (connect, stream, bucket, lease)", pollStart.Sub(mw.started)},
		{"load the empty state", loaded.at.Sub(pollStart)},
	}, first.steps()...)
	res.firstSteps = append(res.firstSteps, step{"  of deliver: first to last event stored", lastMsg.Sub(firstMsg)})
	ctl.listings(t)

	// Steady polls: one with no change, then 1% churn before each of the
	// next, applied as soon as a poll committed, while meetwatch waits for
	// its next tick. A poll ends the meetings one round of lookups
	// confirms; the others end with the next poll's listing.
	log.nextCommit(t, pollWait)
	starts, changes, ends := n/400, n/200, n/400
	var lookups []simListing
	owed := 0
	for range sizingChurnPolls {
		lastSeq := streamLastSeq(t, events)
		ctl.listings(t)
		got := ctl.churn(t, starts, changes, ends)
		churned := time.Now()
		require.Equal(t, map[string]int{"started": starts, "changed": changes, "ended": ends, "meetings": n}, got)
		p := log.nextCommit(t, pollWait)
		require.True(t, p.at.Add(-p.total).After(churned), "the churn overlapped a poll: raise the interval (%s)", interval)
		require.Equal(t, [3]int{starts, changes, owed + ends}, [3]int{p.started, p.changed, p.ended + p.missing},
			"the poll after the churn publishes exactly what changed, and the ends owed from the poll before")
		owed = p.missing
		reqs := ctl.listings(t)
		p.pages, p.confirms = countListings(reqs)
		lookups = slices.DeleteFunc(reqs, func(l simListing) bool { return l.SearchKey == "" })
		require.Greater(t, streamLastSeq(t, events), lastSeq)
		res.churn = append(res.churn, p)
	}
	if owed > 0 {
		settled := log.nextCommit(t, pollWait)
		require.Equal(t, [2]int{owed, 0}, [2]int{settled.ended, settled.started + settled.changed}, "the next listing ends what was owed")
		ctl.listings(t)
	}
	// One more poll with no change: its pages are the ones the bare listing
	// fetches.
	res.idle = log.nextCommit(t, pollWait)
	require.Zero(t, res.idle.started+res.idle.changed+res.idle.ended, "no change, no event")
	pages := ctl.listings(t)
	res.listingPages, _ = countListings(pages)
	pages = slices.DeleteFunc(pages, func(l simListing) bool { return l.SearchKey != "" })
	require.NotEmpty(t, pages)
	require.Equal(t, "0", pages[0].Offset, "a listing starts at offset 0")
	res.hwm1, res.rss1 = procMemory(t, mw.pid())
	res.cpu1 = procCPU(t, mw.pid())
	res.gc1 = log.gc()
	mw.stop(t)

	// The floors, with meetwatch stopped.
	simCPU := procCPU(t, simProc.pid())
	for range sizingBareRuns {
		b, d := bareFetch(t, apiURL, pages, true)
		res.listingBytes, res.bare = b, append(res.bare, d)
	}
	res.simPerListing = (procCPU(t, simProc.pid()) - simCPU) / sizingBareRuns
	res.lookups = len(lookups)
	_, res.bareLookups = bareFetch(t, apiURL, lookups, false)
	res.floorPublish, res.floorWindow, res.floorMsgBytes = publishFloor(t, js, natsURL, n)
	res.floorWrite, _, res.floorWriteBytes = writeFloor(t, js, natsURL)
	res.touchCost = touchCost(t)

	// The state bucket.
	info, err := kvStream.Info(t.Context())
	require.NoError(t, err)
	res.bucketBytes, res.bucketMsgs = info.State.Bytes, info.State.Msgs
	for _, m := range natstest.Messages(t, nc, "KV_"+sizingBucket) {
		key := strings.TrimPrefix(m.Subject, "$KV."+sizingBucket+".")
		switch {
		case m.Header.Get("KV-Operation") != "":
			res.markers++
		case strings.HasPrefix(key, "m."):
			res.records++
			res.recordBytes += len(m.Data)
		default:
			res.others++
		}
	}
	require.Equal(t, n, res.records, "the bucket holds one record per meeting")

	// A restart: load the state, list, find nothing changed, commit.
	mw2 := startChild(t, "meetwatch run (restart)", binary, env, "run")
	log2 := &mwLog{child: mw2}
	res.restart1 = log2.nextCommit(t, firstWait)
	res.restart = res.restart1.at.Sub(mw2.started)
	loaded2 := log2.find(t, "state loaded")
	require.Equal(t, n, loaded2.meetings, "the restart loads every meeting")
	leading2 := log2.find(t, "leading")
	res.load = loaded2.at.Sub(leading2.at)
	res.restartSteps = []step{
		{"exec to leading (connect, stream, bucket, lease)", leading2.at.Sub(mw2.started)},
		{"leading to state loaded", res.load},
		{"state loaded to the commit (list, diff, commit)", res.restart1.at.Sub(loaded2.at)},
	}
	res.hwm2, _ = procMemory(t, mw2.pid())
	res.gc2 = log2.gc()
	res.cpu2 = procCPU(t, mw2.pid())
	mw2.stop(t)
	res.cpuSim, res.cpuNATS = procCPU(t, simProc.pid()), procCPU(t, natsProc.pid())
	res.cpuTest = procCPU(t, os.Getpid()) - test0
	res.wall, res.busy = time.Since(began), machineBusy(t)-busy0

	res.report(t)
}

// report prints every figure, and each against its floor and target.
func (r sizingRun) report(t *testing.T) {
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" }
	mb := func(b float64) string { return fmt.Sprintf("%.1f MB", b/1e6) }
	ratio := func(a, b float64) string { return fmt.Sprintf("%.2f×", a/b) }
	bare := median(r.bare)
	bareAll := make([]string, len(r.bare))
	for i, d := range r.bare {
		bareAll[i] = ms(d)
	}
	churnTotal := median(collect(r.churn, func(p pollFigures) time.Duration { return p.total }))
	churnListing := median(collect(r.churn, func(p pollFigures) time.Duration { return p.listing }))
	churnWithEnds := median(collect(r.churn, func(p pollFigures) time.Duration { return p.total + p.ends }))
	publishFloor := r.floorPublish
	mwRate := float64(r.n) / r.firstWindow.Seconds()
	floorRate := float64(r.n) / r.floorWindow.Seconds()
	floorClientRate := float64(r.n) / publishFloor.Seconds()

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	row("", "")
	row(fmt.Sprintf("N = %d", r.n), "measured", "floor", "ratio", "target")
	row("record as served, average", fmt.Sprintf("%.0f B", r.recordAvg))
	row("one listing: pages, body bytes", fmt.Sprintf("%d pages, %s", r.listingPages, mb(float64(r.listingBytes))))
	row("bare listing, each run", strings.Join(bareAll, " / "), "", "", "median is the floor")
	row("  the simulator's CPU per listing", ms(r.simPerListing))
	row(fmt.Sprintf("bare lookups of the last churn poll (%d, %d at a time)", r.lookups, sizingConcurrency), ms(r.bareLookups))
	row("steady poll, 1% churn, total_ms (median)", ms(churnTotal), ms(bare), ratio(float64(churnTotal), float64(bare)), "≤ 1.3×")
	row("  its listing_ms (median)", ms(churnListing), ms(bare), ratio(float64(churnListing), float64(bare)))
	row("  with the end lookups after it, total_ms + ends_ms (median)", ms(churnWithEnds), ms(bare+r.bareLookups),
		ratio(float64(churnWithEnds), float64(bare+r.bareLookups)), "(floor: listing + lookups)")
	for i, p := range r.churn {
		var steps []string
		for _, s := range p.steps() {
			steps = append(steps, s.what+" "+ms(s.took))
		}
		row(fmt.Sprintf("  churn poll %d", i+1), fmt.Sprintf("total %s: %s; %d pages + %d lookups, %d+%d+%d events, %d ends owed to the next",
			ms(p.total), strings.Join(steps, ", "), p.pages, p.confirms, p.started, p.changed, p.ended, p.missing))
	}
	row("no-change poll, total_ms", ms(r.idle.total), ms(bare), ratio(float64(r.idle.total), float64(bare)))
	row("  its listing_ms", ms(r.idle.listing), ms(bare), ratio(float64(r.idle.listing), float64(bare)))
	row("first poll, total_ms", ms(r.first.total), ms(bare+publishFloor), ratio(float64(r.first.total), float64(bare+publishFloor)), "≤ 1.5× (listing + publish)")
	for _, s := range r.firstSteps {
		row("  "+s.what, ms(s.took))
	}
	row("  the same against listing + publish + an async write of the records", ms(r.first.total), ms(bare+publishFloor+r.floorWrite),
		ratio(float64(r.first.total), float64(bare+publishFloor+r.floorWrite)))
	row("  async write floor of the records", fmt.Sprintf("%s, %s", ms(r.floorWrite), mb(float64(r.floorWriteBytes))))
	touched := float64(r.firstProc.faults) * float64(os.Getpagesize())
	row("  meetwatch's CPU by its end, user + system", fmt.Sprintf("%s + %s", ms(r.firstProc.user), ms(r.firstProc.system)))
	row("  memory it touched for the first time (minor faults), at this machine's cost", fmt.Sprintf("%s at %.2f ms/MB: %s",
		mb(touched), float64(r.touchCost.Microseconds())/1000, ms(time.Duration(touched/(1<<20))*r.touchCost)))
	row("publish rate, events/s (server-side window)", fmt.Sprintf("%.0f", mwRate), fmt.Sprintf("%.0f", floorRate), ratio(mwRate, floorRate), "≥ 0.9×")
	row("  async publish floor, client side", fmt.Sprintf("%s, %.0f events/s, %s of events", ms(publishFloor), floorClientRate, mb(float64(r.floorMsgBytes))))
	row("peak RSS (VmHWM), first process", mb(float64(r.hwm1)*1024), mb(float64(r.listingBytes)), ratio(float64(r.hwm1)*1024, float64(r.listingBytes)), "≤ 3×")
	row("  Go heap, peak at a GC's start / live after it (gctrace)", fmt.Sprintf("%d MB / %d MB", r.gc1.heap, r.gc1.live))
	row("  RSS after the last poll; CPU of the process", fmt.Sprintf("%s; %.1f s", mb(float64(r.rss1)*1024), r.cpu1.Seconds()))
	row("peak RSS (VmHWM), restarted process", mb(float64(r.hwm2)*1024), mb(float64(r.listingBytes)), ratio(float64(r.hwm2)*1024, float64(r.listingBytes)), "≤ 3×")
	row("  Go heap, peak at a GC's start / live after it (gctrace)", fmt.Sprintf("%d MB / %d MB", r.gc2.heap, r.gc2.live))
	row("restart to first commit", ms(r.restart), ms(bare+3*time.Second), ratio(float64(r.restart), float64(bare+3*time.Second)), "≤ 1× (listing + 3 s)")
	for _, s := range r.restartSteps {
		row("  "+s.what, ms(s.took))
	}
	row("  its poll: total_ms, listing_ms", ms(r.restart1.total)+", "+ms(r.restart1.listing))
	row("loading the state (leading to state loaded)", ms(r.load), "2000 ms", ratio(float64(r.load), float64(2*time.Second)), "≤ 1× at 100k")
	row("state bucket, stored bytes", mb(float64(r.bucketBytes)), mb(float64(r.recordBytes)), ratio(float64(r.bucketBytes), float64(r.recordBytes)), "≤ 1.2×")
	row("  messages: records, markers, other keys", fmt.Sprintf("%d, %d, %d (of %d)", r.records, r.markers, r.others, r.bucketMsgs))
	ours := r.cpu1 + r.cpu2 + r.cpuSim + r.cpuNATS + r.cpuTest
	row("CPU: meetwatch, restarted meetwatch, simulator, nats-server, test", fmt.Sprintf("%.1f s, %.1f s, %.1f s, %.1f s, %.1f s",
		r.cpu1.Seconds(), r.cpu2.Seconds(), r.cpuSim.Seconds(), r.cpuNATS.Seconds(), r.cpuTest.Seconds()))
	row("CPU of other processes on the machine meanwhile", fmt.Sprintf("%.1f s in %.0f s of wall time", (r.busy-ours).Seconds(), r.wall.Seconds()))
	tw.Flush()
	t.Log(b.String())
}

func collect(ps []pollFigures, f func(pollFigures) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		out[i] = f(p)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// countListings splits the list requests of a poll into pages of the
// listing and confirmations (filtered by searchKey).
func countListings(reqs []simListing) (pages, confirms int) {
	for _, r := range reqs {
		if r.SearchKey != "" {
			confirms++
		} else {
			pages++
		}
	}
	return pages, confirms
}

// bareFetch asks for pages as meetwatch does, sizingConcurrency at a
// time, the first alone when firstAlone (a listing learns the count from
// it), reads every body and decodes nothing.
func bareFetch(tb testing.TB, apiURL string, pages []simListing, firstAlone bool) (bytes int64, took time.Duration) {
	tb.Helper()
	if len(pages) == 0 {
		return 0, 0
	}
	hc := &http.Client{
		Timeout:   time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: sizingConcurrency, MaxConnsPerHost: sizingConcurrency},
	}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	fetch := func(p simListing) error {
		q := url.Values{"offset": {p.Offset}, "limit": {p.Limit}, "queryAll": {"true"}}
		if p.SearchKey != "" {
			q.Set("searchKey", p.SearchKey)
		}
		req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, apiURL+"/v1/mmc/management/conferences/online?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-Access-Token", sizingToken)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("offset %s: status %d", p.Offset, resp.StatusCode)
		}
		mu.Lock()
		bytes += n
		mu.Unlock()
		return nil
	}
	start := time.Now()
	if firstAlone {
		require.NoError(tb, fetch(pages[0]))
		pages = pages[1:]
	}
	g := new(errgroup.Group)
	g.SetLimit(sizingConcurrency)
	for _, p := range pages {
		g.Go(func() error { return fetch(p) })
	}
	require.NoError(tb, g.Wait())
	return bytes, time.Since(start)
}

// publishFloor publishes the first poll's n events again, same subjects,
// headers and bodies, with PublishAsync and 1024 acks pending at most, to a
// fresh stream of the same configuration in the second account, and
// returns how long that took until the last ack, and from the first to the
// last stored message (see asyncFloor).
func publishFloor(tb testing.TB, js jetstream.JetStream, natsURL string, n int) (took, window time.Duration, bytes int64) {
	tb.Helper()
	return asyncFloor(tb, js, natsURL, sizingStream, natstest.Messages(tb, js.Conn(), sizingStream)[:n])
}

// writeFloor is publishFloor for the records in the state bucket: the
// writes any per-meeting state costs a first poll beside its events.
func writeFloor(tb testing.TB, js jetstream.JetStream, natsURL string) (took, window time.Duration, bytes int64) {
	tb.Helper()
	stream := "KV_" + sizingBucket
	msgs := slices.DeleteFunc(natstest.Messages(tb, js.Conn(), stream), func(m *jetstream.RawStreamMsg) bool {
		return !strings.HasPrefix(m.Subject, "$KV."+sizingBucket+".m.") || m.Header.Get("KV-Operation") != ""
	})
	return asyncFloor(tb, js, natsURL, stream, msgs)
}

// asyncFloor publishes msgs with PublishAsync, 1024 pending at most, to a
// fresh stream configured as stream is, in the second account of the same
// server, and returns how long it took (client side) and the window from
// the first to the last message stored (server side), each the median of
// sizingFloorRuns runs, and the bytes sent.
func asyncFloor(tb testing.TB, js jetstream.JetStream, natsURL, stream string, msgs []*jetstream.RawStreamMsg) (took, window time.Duration, bytes int64) {
	tb.Helper()
	src, err := js.Stream(tb.Context(), stream)
	require.NoError(tb, err)

	fc, err := nats.Connect(natsURL, nats.UserInfo(floorUser, floorUser), nats.Name("publish-floor"))
	require.NoError(tb, err)
	defer fc.Close()
	fjs, err := jetstream.New(fc, jetstream.WithPublishAsyncMaxPending(1024))
	require.NoError(tb, err)
	out := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		// A stored key keeps the revision its write expected, which a
		// fresh stream has not: the floor writes the same bytes unchecked.
		h := nats.Header{}
		for k, v := range m.Header {
			if !strings.HasPrefix(k, "Nats-Expected-") {
				h[k] = v
			}
		}
		out[i] = &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
		bytes += int64(len(m.Data))
	}
	// The median of a few runs, each to a fresh stream: one run's figure
	// moves by a fifth on this kind of machine.
	var tooks, windows []time.Duration
	for range sizingFloorRuns {
		dst, err := fjs.CreateStream(tb.Context(), src.CachedInfo().Config)
		require.NoError(tb, err)
		start := time.Now()
		for _, m := range out {
			_, err := fjs.PublishMsgAsync(m)
			require.NoError(tb, err)
		}
		select {
		case <-fjs.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			require.FailNow(tb, "the floor's acks did not come within 5 minutes")
		}
		tooks = append(tooks, time.Since(start))
		info, err := dst.Info(tb.Context())
		require.NoError(tb, err)
		require.Equal(tb, uint64(len(msgs)), info.State.Msgs, "every floor message stored once")
		windows = append(windows, msgTime(tb, dst, uint64(len(msgs))).Sub(msgTime(tb, dst, 1)))
		require.NoError(tb, fjs.DeleteStream(tb.Context(), stream))
	}
	tb.Logf("async floor of %s, %d runs: %v, stored in %v", stream, sizingFloorRuns, tooks, windows)
	return median(tooks), median(windows), bytes
}

func msgTime(tb testing.TB, s jetstream.Stream, seq uint64) time.Time {
	tb.Helper()
	m, err := s.GetMsg(tb.Context(), seq)
	require.NoError(tb, err, "message %d", seq)
	return m.Time
}

func streamLastSeq(tb testing.TB, s jetstream.Stream) uint64 {
	tb.Helper()
	info, err := s.Info(tb.Context())
	require.NoError(tb, err)
	return info.State.LastSeq
}

func connectWithin(tb testing.TB, url string, wait time.Duration) *nats.Conn {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		nc, err := nats.Connect(url, nats.Name("sizing"))
		if err == nil {
			tb.Cleanup(nc.Close)
			return nc
		}
		require.True(tb, time.Now().Before(deadline), "nats-server not up after %s: %v", wait, err)
		time.Sleep(100 * time.Millisecond)
	}
}

// simRemote drives `meetwatch sim --control`.
type simRemote struct{ url string }

func (s *simRemote) do(tb testing.TB, method, path string, v any) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, s.url+path, nil)
	require.NoError(tb, err)
	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode, "%s %s", method, path)
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(v))
}

func (s *simRemote) churn(tb testing.TB, starts, changes, ends int) map[string]int {
	tb.Helper()
	var got map[string]int
	s.do(tb, http.MethodPost, fmt.Sprintf("/churn?starts=%d&changes=%d&ends=%d", starts, changes, ends), &got)
	return got
}

// listings returns the list requests the simulator received since the
// last call.
func (s *simRemote) listings(tb testing.TB) []simListing {
	tb.Helper()
	var got []simListing
	s.do(tb, http.MethodGet, "/listings", &got)
	return got
}

// child is a process the test started: killed when the test ends, and by
// the kernel if the test process dies first.
type child struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	out     *simtest.Buffer // stdout and stderr
	done    chan struct{}
}

func startChild(tb testing.TB, name, path string, env map[string]string, args ...string) *child {
	tb.Helper()
	cmd := exec.Command(path, args...)
	cmd.Dir = tb.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{name: name, cmd: cmd, out: &simtest.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	c.started = time.Now()
	require.NoError(tb, cmd.Start(), "starting %s", name)
	go func() {
		_ = cmd.Wait() // exited() and stop() say what the test needs
		close(c.done)
	}()
	tb.Cleanup(func() {
		if !c.exited() {
			_ = cmd.Process.Kill()
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				tb.Errorf("%s (pid %d) survived SIGKILL for 10 s", name, cmd.Process.Pid)
			}
		}
		if tb.Failed() {
			out := c.out.String()
			tb.Logf("%s %s, output (last 8 kB):\n%s", name, strings.Join(args, " "), out[max(0, len(out)-8192):])
		}
	})
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and requires a clean exit within exitWait.
func (c *child) stop(tb testing.TB) {
	tb.Helper()
	require.False(tb, c.exited(), "%s exited early", c.name)
	require.NoError(tb, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-c.done:
		require.Equal(tb, 0, c.cmd.ProcessState.ExitCode(), "%s exit code", c.name)
	case <-time.After(exitWait):
		require.FailNow(tb, c.name+" did not stop within "+exitWait.String()+" of SIGTERM")
	}
}

// waitFor returns the first group of re in the output, waiting up to wait.
func (c *child) waitFor(tb testing.TB, re *regexp.Regexp, wait time.Duration) string {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		if m := re.FindStringSubmatch(c.out.String()); m != nil {
			return m[1]
		}
		require.False(tb, c.exited(), "%s exited before printing %s", c.name, re)
		require.True(tb, time.Now().Before(deadline), "%s did not print %s within %s", c.name, re, wait)
		time.Sleep(20 * time.Millisecond)
	}
}

// mwLog reads meetwatch's JSON log lines, and its gctrace lines, as they
// come.
type mwLog struct {
	child   *child
	lines   int // lines read so far
	entries []logEntry
	next0   int // entries before this one were looked at by nextCommit
	gcPeak  gcPeak
}

type logEntry struct {
	at       time.Time
	msg      string
	level    string
	meetings int
	raw      map[string]any
}

// gcPeak is the largest heap a GC started at, and the largest heap left
// live after a GC, in MB.
type gcPeak struct{ heap, live int }

var gcLine = regexp.MustCompile(`^gc \d+ @.* (\d+)->\d+->(\d+) MB, \d+ MB goal`)

func (l *mwLog) read(tb testing.TB) {
	tb.Helper()
	lines := l.child.out.Lines()
	for _, line := range lines[l.lines:] {
		if m := gcLine.FindStringSubmatch(line); m != nil {
			h, _ := strconv.Atoi(m[1])
			live, _ := strconv.Atoi(m[2])
			l.gcPeak.heap, l.gcPeak.live = max(l.gcPeak.heap, h), max(l.gcPeak.live, live)
			continue
		}
		var raw map[string]any
		if json.Unmarshal([]byte(line), &raw) != nil {
			continue
		}
		e := logEntry{raw: raw}
		e.msg, _ = raw["msg"].(string)
		e.level, _ = raw["level"].(string)
		ts, _ := raw["time"].(string)
		e.at, _ = time.Parse(time.RFC3339Nano, ts)
		e.meetings = jsonInt(raw["meetings"])
		if e.level == "WARN" || e.level == "ERROR" {
			tb.Logf("%s: %s", l.child.name, line)
		}
		l.entries = append(l.entries, e)
	}
	l.lines = len(lines)
}

// nextCommit waits for the next "poll committed" line after the last one
// it returned.
func (l *mwLog) nextCommit(tb testing.TB, wait time.Duration) pollFigures {
	tb.Helper()
	const msg = "poll committed"
	deadline := time.Now().Add(wait)
	for {
		l.read(tb)
		for i := l.next0; i < len(l.entries); i++ {
			if e := l.entries[i]; e.msg == msg {
				l.next0 = i + 1
				return pollFigures{
					at: e.at, meetings: e.meetings,
					started: jsonInt(e.raw["started"]), changed: jsonInt(e.raw["changed"]), ended: jsonInt(e.raw["ended"]),
					missing: jsonInt(e.raw["missing"]),
					listing: time.Duration(jsonInt(e.raw["listing_ms"])) * time.Millisecond,
					ends:    time.Duration(jsonInt(e.raw["ends_ms"])) * time.Millisecond,
					deliver: time.Duration(jsonInt(e.raw["deliver_ms"])) * time.Millisecond,
					commit:  time.Duration(jsonInt(e.raw["commit_ms"])) * time.Millisecond,
					total:   time.Duration(jsonInt(e.raw["total_ms"])) * time.Millisecond,
				}
			}
		}
		require.False(tb, l.child.exited(), "%s exited while the test waited for %q", l.child.name, msg)
		require.True(tb, time.Now().Before(deadline), "no %q from %s within %s", msg, l.child.name, wait)
		time.Sleep(20 * time.Millisecond)
	}
}

// find returns the first entry with msg, which must have been logged.
func (l *mwLog) find(tb testing.TB, msg string) logEntry {
	tb.Helper()
	l.read(tb)
	i := slices.IndexFunc(l.entries, func(e logEntry) bool { return e.msg == msg })
	require.GreaterOrEqual(tb, i, 0, "%s logged no %q", l.child.name, msg)
	return l.entries[i]
}

func (l *mwLog) gc() gcPeak { return l.gcPeak }

func jsonInt(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// procMemory returns VmHWM and VmRSS of a process, in kB.
func procMemory(tb testing.TB, pid int) (hwm, rss int64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		require.NoError(tb, err, "%s", line)
		if name == "VmHWM" {
			hwm = kb
		} else {
			rss = kb
		}
	}
	return hwm, rss
}

// waitQuiet waits, up to wait, for a moment when the machine's CPUs are
// not busy with something else (another test suite, a build), since every
// figure here is a time; it goes on anyway after wait, and the report says
// how busy the machine was.
func waitQuiet(tb testing.TB, wait time.Duration) {
	tb.Helper()
	const window, quiet = 2 * time.Second, 0.2 // cores busy at most
	deadline := time.Now().Add(wait)
	for waited := time.Duration(0); ; waited += window {
		b0 := machineBusy(tb)
		time.Sleep(window)
		cores := float64(machineBusy(tb)-b0) / float64(window)
		if cores <= quiet {
			if waited > 0 {
				tb.Logf("waited %s for a quiet machine", waited)
			}
			return
		}
		if time.Now().After(deadline) {
			tb.Logf("the machine is still busy (%.1f cores) after %s; measuring anyway", cores, wait)
			return
		}
	}
}

// machineBusy returns the CPU time all processes have used, from /proc/stat.
func machineBusy(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	require.NoError(tb, err)
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	require.Greater(tb, len(fields), 8, "%s", line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(fields[i], 10, 64)
		require.NoError(tb, err, "%s", line)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// userHZ is the unit of /proc's CPU times on every Linux this runs on.
const userHZ = 100

// procCPU returns the user and system CPU time a process has used.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	st := procStat(tb, pid)
	return st.user + st.system
}

// procStats are a process's CPU times and minor page faults so far.
type procStats struct {
	user, system time.Duration
	faults       int64 // minor: each a page of memory touched for the first time
}

func procStat(tb testing.TB, pid int) procStats {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(tb, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // from the third, state
	require.Greater(tb, len(fields), 12, "%s", s)
	minflt, err1 := strconv.ParseInt(fields[7], 10, 64)
	utime, err2 := strconv.ParseInt(fields[11], 10, 64)
	stime, err3 := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(tb, cmp.Or(err1, err2, err3), "%s", s)
	return procStats{user: time.Duration(utime) * time.Second / userHZ, system: time.Duration(stime) * time.Second / userHZ, faults: minflt}
}

// touchCost returns what this machine charges for memory touched for the
// first time, per MB: a fresh mapping, each of its pages written once.
// Virtual machines can charge far more for it than for any later use, and
// a process whose heap grows to hundreds of megabytes pays it for each.
func touchCost(tb testing.TB) time.Duration {
	tb.Helper()
	const size = 128 << 20
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	require.NoError(tb, err)
	defer func() { require.NoError(tb, syscall.Munmap(b)) }()
	start := time.Now()
	for i := 0; i < size; i += os.Getpagesize() {
		b[i] = 1
	}
	return time.Since(start) / (size >> 20)
}
