package main

// These tests run meetwatch the way a highly available deployment does:
// several replicas sharing one NATS, of which one leads at a time, and a
// three-node JetStream cluster that loses a node. Meetings start and end
// while leaders die and stream leaders move, and the stream is then checked
// against what really happened: every transition once, none twice.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// haMeetings is how many meetings are going on when a test starts; the
// churn keeps the number around it.
const haMeetings = 50

// haEnv is the environment of one replica. The request budget is off: the
// churn ends a few meetings a second, and each end costs an API
// confirmation: far more than the default budget of 100 requests a minute.
func haEnv(apiURL, token, natsURL, id string, leaseTTL time.Duration) map[string]string {
	env := runEnv(apiURL, token, natsURL)
	env["MEETWATCH_REPLICA_ID"] = id
	env["MEETWATCH_LEASE_TTL"] = leaseTTL.String()
	env["MEETWATCH_API_RATE"] = "0"
	return env
}

// meetingChurn starts and ends meetings at random while it runs, and records what
// it did: the ground truth the stream is checked against. It never changes
// a meeting's fields, because a changed event is keyed by its exact
// records, and which of several changes a poll sees depends on timing.
type meetingChurn struct {
	sim  *apisim.Sim
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	ongoing []string
	added   map[string]bool
	ended   map[string]bool
}

// startChurn makes one meeting start or end about every `every`, keeping
// the number ongoing between 40 and 60, until halt or the end of the test.
func startChurn(tb testing.TB, sim *apisim.Sim, every time.Duration, seed uint64) *meetingChurn {
	tb.Helper()
	c := &meetingChurn{
		sim:     sim,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ongoing: sim.UUIDs(),
		added:   map[string]bool{},
		ended:   map[string]bool{},
	}
	for _, id := range c.ongoing {
		c.added[id] = true
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d656574))
	go func() {
		defer close(c.done)
		for {
			// Jitter, so that changes fall anywhere in a poll's cycle.
			wait := every/2 + time.Duration(rng.Int64N(int64(every)))
			select {
			case <-c.stop:
				return
			case <-time.After(wait):
			}
			c.step(rng)
		}
	}()
	tb.Cleanup(c.halt)
	return c
}

func (c *meetingChurn) step(rng *rand.Rand) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.ongoing)
	if n < 40 || (n <= 60 && rng.IntN(2) == 0) {
		id := c.sim.AddN(1)[0]
		c.ongoing = append(c.ongoing, id)
		c.added[id] = true
		return
	}
	i := rng.IntN(n)
	id := c.ongoing[i]
	if c.sim.End(id) {
		c.ended[id] = true
	}
	c.ongoing = slices.Delete(c.ongoing, i, i+1)
}

// halt stops the churn and waits for it; it may be called more than once.
func (c *meetingChurn) halt() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// truth returns every meeting ever listed and those that ended.
func (c *meetingChurn) truth() (added, ended map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	added, ended = map[string]bool{}, map[string]bool{}
	for id := range c.added {
		added[id] = true
	}
	for id := range c.ended {
		ended[id] = true
	}
	return added, ended
}

// streamCheck is what the stream says against the ground truth.
type streamCheck struct {
	events, started, ended, changed int
	// lost counts transitions the stream should hold and does not: an
	// ongoing meeting without its started, or an announced meeting that
	// ended without its ended.
	lost int
	// duplicates counts repeated event ids, and started or ended events
	// beyond the first of a meeting.
	duplicates int
	problems   []string
}

// checkStream compares the events of a stream with the ground truth. A
// meeting that started and ended between two polls may have no event at
// all; any other meeting has exactly one started, and exactly one ended if
// it ended.
func checkStream(msgs []message, added, ended map[string]bool) streamCheck {
	res := streamCheck{events: len(msgs)}
	ids := map[string]int{}
	started, endedEv := map[string]int{}, map[string]int{}
	for _, m := range msgs {
		e := m.Event
		ids[e.ID]++
		if ids[e.ID] == 2 {
			res.problems = append(res.problems, fmt.Sprintf("event id %s stored twice (%s %s)", e.ID, e.kind(), e.Subject))
		}
		if ids[e.ID] > 1 {
			res.duplicates++
		}
		if !added[e.Subject] {
			res.problems = append(res.problems, fmt.Sprintf("%s event for %s, a meeting that never existed", e.kind(), e.Subject))
		}
		switch e.kind() {
		case "started":
			res.started++
			started[e.Subject]++
		case "ended":
			res.ended++
			endedEv[e.Subject]++
			if !ended[e.Subject] {
				res.problems = append(res.problems, fmt.Sprintf("ended event for %s, which is still going on", e.Subject))
			}
		case "changed":
			res.changed++
			res.problems = append(res.problems, fmt.Sprintf("changed event for %s, but no meeting changed", e.Subject))
		default:
			res.problems = append(res.problems, fmt.Sprintf("event of unknown type %q", e.Type))
		}
	}
	for id := range added {
		s, en := started[id], endedEv[id]
		if s > 1 {
			res.duplicates += s - 1
			res.problems = append(res.problems, fmt.Sprintf("%s started %d times", id, s))
		}
		if en > 1 {
			res.duplicates += en - 1
			res.problems = append(res.problems, fmt.Sprintf("%s ended %d times", id, en))
		}
		switch {
		case !ended[id] && s == 0:
			res.lost++
			res.problems = append(res.problems, fmt.Sprintf("%s is going on, but no started event", id))
		case ended[id] && s > 0 && en == 0:
			res.lost++
			res.problems = append(res.problems, fmt.Sprintf("%s started and ended, but no ended event", id))
		case en > 0 && s == 0:
			res.problems = append(res.problems, fmt.Sprintf("%s ended, but never started", id))
		}
	}
	sort.Strings(res.problems)
	return res
}

// settleAndCheck waits until the stream holds every transition of the
// ground truth (the churn has stopped), lets a few more polls run, and
// checks the stream. It returns the final check.
func settleAndCheck(t *testing.T, nc *nats.Conn, c *meetingChurn, within time.Duration) streamCheck {
	t.Helper()
	c.halt()
	added, ended := c.truth()
	deadline := time.Now().Add(within)
	var res streamCheck
	for {
		res = checkStream(storedMessages(t, nc, "MEETINGS"), added, ended)
		if res.lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Anything published late would come with a later poll: once the API
	// has answered three more requests (listings, and the lookup of a
	// meeting a listing missed), the polls in flight when the stream
	// settled have published what they saw.
	waitForPolls(t, c.sim, 3)
	res = checkStream(storedMessages(t, nc, "MEETINGS"), added, ended)

	assert.Empty(t, res.problems, "the stream against the ground truth (%d meetings, %d ended)", len(added), len(ended))
	assert.Zero(t, res.lost, "transitions lost")
	assert.Zero(t, res.duplicates, "transitions stored twice")
	assert.Zero(t, res.changed, "changed events")
	return res
}

// waitForMore waits up to wait until the MEETINGS stream holds n more
// events than when it is called.
func waitForMore(tb testing.TB, nc *nats.Conn, n int, wait time.Duration, what string) {
	tb.Helper()
	var from int
	require.Eventually(tb, func() bool { from = streamLen(nc, "MEETINGS"); return from > 0 },
		wait, tick, "reading the stream's length")
	require.Eventually(tb, func() bool { return streamLen(nc, "MEETINGS") >= from+n },
		wait, tick, "waiting for %d more events %s", n, what)
}

// slogEntry is one line of meetwatch's text log.
type slogEntry struct {
	at  time.Time
	msg string
}

var slogLine = regexp.MustCompile(`^time=(\S+) level=\S+ msg=("(?:[^"\\]|\\.)*"|\S+)`)

// slogEntries parses the lines of a text log that carry a time and a
// message.
func slogEntries(p *process) []slogEntry {
	var out []slogEntry
	for _, l := range p.stderr.Lines() {
		m := slogLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		msg := m[2]
		if u, err := strconv.Unquote(msg); err == nil {
			msg = u
		}
		out = append(out, slogEntry{at: at, msg: msg})
	}
	return out
}

// endsLeading reports whether a log message closes a term as leader: the
// lease was lost, given up, or the process stopped.
func endsLeading(msg string) bool {
	return msg == "stopped leading" || msg == "released the lease" || msg == "stopped"
}

// leaderTerm is one term as leader, as a replica's log tells it.
type leaderTerm struct {
	who        string
	start, end time.Time
}

// leaderTerms returns the terms a process's log shows. A term still open
// ends at end: when the process was killed, and so could log nothing more.
func leaderTerms(who string, entries []slogEntry, end time.Time) []leaderTerm {
	var out []leaderTerm
	var open *leaderTerm
	for _, e := range entries {
		switch {
		case e.msg == "leading":
			if open != nil { // a second start without an end: keep the first
				continue
			}
			open = &leaderTerm{who: who, start: e.at}
		case endsLeading(e.msg) && open != nil:
			open.end = e.at
			out = append(out, *open)
			open = nil
		}
	}
	if open != nil {
		open.end = end
		out = append(out, *open)
	}
	return out
}

// leadsNow reports whether the process's log says it leads now.
func leadsNow(p *process) bool {
	leading := false
	for _, e := range slogEntries(p) {
		switch {
		case e.msg == "leading":
			leading = true
		case endsLeading(e.msg):
			leading = false
		}
	}
	return leading
}

var droppedDuplicates = regexp.MustCompile(`msg="poll committed" .*\bduplicates=(\d+)`)

// republishedCount sums the re-published events that JetStream dropped as
// duplicates, as a process's committed polls report them.
func republishedCount(p *process) int {
	n := 0
	for _, l := range p.stderr.Lines() {
		if m := droppedDuplicates.FindStringSubmatch(l); m != nil {
			d, _ := strconv.Atoi(m[1])
			n += d
		}
	}
	return n
}

// replicaProcess is one process of a replica: the replica is restarted as a
// new process after each kill.
type replicaProcess struct {
	p        *process
	killedAt time.Time // zero unless it was SIGKILLed
}

// haReplica is one replica with its configuration, restarted as needed.
type haReplica struct {
	id   string
	env  map[string]string
	gens []*replicaProcess
}

func (r *haReplica) start(tb testing.TB) {
	tb.Helper()
	r.gens = append(r.gens, &replicaProcess{p: startMeetwatch(tb, r.env, "run")})
}

func (r *haReplica) current() *replicaProcess { return r.gens[len(r.gens)-1] }

// kill SIGKILLs the current process and returns when it is gone.
func (r *haReplica) kill(tb testing.TB) time.Time {
	tb.Helper()
	g := r.current()
	at := time.Now()
	require.NoError(tb, g.p.cmd.Process.Kill())
	<-g.p.done
	g.killedAt = at
	return at
}

var probesAddr = regexp.MustCompile(`msg="serving probes" addr=(\S+)`)

// probeReport is the part of a probe's JSON body the tests read.
type probeReport struct {
	Status   string   `json:"status"`
	Role     string   `json:"role"`
	Reason   string   `json:"reason"`
	Warnings []string `json:"warnings"`
}

// askProbe asks one of a process's probes; the process must have logged its
// address.
func askProbe(hc *http.Client, p *process, path string) (int, probeReport, error) {
	m := probesAddr.FindStringSubmatch(p.stderr.String())
	if m == nil {
		return 0, probeReport{}, fmt.Errorf("no probe address logged yet")
	}
	resp, err := hc.Get("http://" + m[1] + path)
	if err != nil {
		return 0, probeReport{}, err
	}
	defer resp.Body.Close()
	var r probeReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("decoding %s: %w", path, err)
	}
	return resp.StatusCode, r, nil
}

// waitForRoles waits until exactly one replica leads, and the probes of
// every replica agree: /readyz and /healthz are 200 everywhere, with the
// role "leader" on the leader and "standby" on the others. It returns the
// leader's index.
func waitForRoles(t *testing.T, hc *http.Client, reps []*haReplica) int {
	t.Helper()
	leader := -1
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var leaders []int
		for i, r := range reps {
			if leadsNow(r.current().p) {
				leaders = append(leaders, i)
			}
		}
		if !assert.Len(c, leaders, 1, "replicas whose log says they lead") {
			return
		}
		for i, r := range reps {
			want := "standby"
			if i == leaders[0] {
				want = "leader"
			}
			for _, path := range []string{"/readyz", "/healthz"} {
				code, rep, err := askProbe(hc, r.current().p, path)
				if !assert.NoError(c, err, "%s %s", r.id, path) {
					return
				}
				assert.Equal(c, http.StatusOK, code, "%s %s: %+v", r.id, path, rep)
				assert.Equal(c, want, rep.Role, "%s %s", r.id, path)
			}
		}
		leader = leaders[0]
	}, 20*time.Second, 100*time.Millisecond, "waiting for one leader and %d standbys", len(reps)-1)
	return leader
}

// TestFailoverKillNine kills the leader with SIGKILL, again and again, among
// two replicas and among three, while meetings start and end: the next
// event comes within a lease and a second of each kill, no two replicas
// ever lead at once, and nothing is lost or doubled.
func TestFailoverKillNine(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			t.Parallel()
			failoverKillNine(t, n)
		})
	}
}

func failoverKillNine(t *testing.T, replicas int) {
	const (
		token    = "ha-token"
		leaseTTL = 3 * time.Second
		// bound is from the kill to the next event stored: the lease's
		// lapse, and a second for the new leader's first poll.
		bound = leaseTTL + time.Second
		kills = 4
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, haMeetings)
	hc := &http.Client{Timeout: 2 * time.Second}

	reps := make([]*haReplica, replicas)
	for i := range reps {
		id := fmt.Sprintf("r%d", i+1)
		reps[i] = &haReplica{id: id, env: haEnv(api.URL, token, srv.ClientURL(), id, leaseTTL)}
		reps[i].start(t)
	}
	waitForMessages(t, nc, "MEETINGS", haMeetings)
	waitForRoles(t, hc, reps)

	seed := simtest.Seed(t, 1)
	lst := watchListings(api.Sim)
	ch := startChurn(t, api.Sim, 100*time.Millisecond, seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	interval, err := time.ParseDuration(pollInterval)
	require.NoError(t, err)
	var failovers []time.Duration
	for range kills {
		leader := waitForRoles(t, hc, reps)
		// Let the new term run a whole poll: two listings begin. Then
		// land the kill anywhere in a poll's cycle, a random moment of up
		// to one interval of the process's own clock later, which no
		// event of the test can stand for.
		from := lst.count()
		require.Eventually(t, func() bool { return lst.count() >= from+2 },
			eventWait, tick, "waiting for %s to poll", reps[leader].id)
		time.Sleep(time.Duration(rng.Int64N(int64(interval))))
		require.True(t, leadsNow(reps[leader].current().p), "%s still leads", reps[leader].id)
		killedAt := reps[leader].kill(t)
		before := streamLen(nc, "MEETINGS")

		var took time.Duration
		require.Eventually(t, func() bool {
			if streamLen(nc, "MEETINGS") > before {
				took = time.Since(killedAt)
				return true
			}
			return false
		}, 3*bound, 20*time.Millisecond, "waiting for the next event after %s was killed", reps[leader].id)
		failovers = append(failovers, took)
		assert.Less(t, took, bound, "from killing %s to the next event", reps[leader].id)

		reps[leader].start(t) // there are always as many
	}
	leader := waitForRoles(t, hc, reps)

	res := settleAndCheck(t, nc, ch, 20*time.Second)

	for i, r := range reps { // standbys first, so that no one takes over
		if i != leader {
			r.current().p.stop(t, syscall.SIGTERM)
		}
	}
	reps[leader].current().p.stop(t, syscall.SIGTERM)

	// At most one leader at any moment, over every process that ran.
	var terms []leaderTerm
	for _, r := range reps {
		for _, g := range r.gens {
			entries := slogEntries(g.p)
			end := g.killedAt
			if end.IsZero() && len(entries) > 0 {
				end = entries[len(entries)-1].at
			}
			terms = append(terms, leaderTerms(r.id, entries, end)...)
		}
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i].start.Before(terms[j].start) })
	require.NotEmpty(t, terms)
	for i := 1; i < len(terms); i++ {
		prev, cur := terms[i-1], terms[i]
		assert.False(t, cur.start.Before(prev.end), "%s led from %s while %s still led until %s",
			cur.who, cur.start.Format(time.StampMilli), prev.who, prev.end.Format(time.StampMilli))
	}

	var republished int
	for _, r := range reps {
		for _, g := range r.gens {
			republished += republishedCount(g.p)
		}
	}
	rounded := make([]time.Duration, len(failovers))
	for i, d := range failovers {
		rounded[i] = d.Round(10 * time.Millisecond)
	}
	t.Logf("failover, %d replicas: lease %s, kills %d, from each kill to the next event %v, bound %s, leader terms checked %d (no overlap), transitions checked %d (started %d, ended %d), events lost %d, duplicates %d (re-published and dropped by JetStream %d)",
		replicas, leaseTTL, kills, rounded, bound, len(terms), res.events, res.started, res.ended, res.lost, res.duplicates, republished)
}

// clusterNode is one nats-server process of a test cluster.
type clusterNode struct {
	name string
	url  string
	proc *child
}

// startJSCluster starts a three-node JetStream cluster on the loopback,
// each node a nats-server process of its own, so that a test can kill one
// with SIGKILL as a machine dies: no goodbye, no handing over of its
// leaderships. Ports are found free and released before the servers bind
// them, so another test may take one meanwhile: then the cluster starts
// again on new ports.
func startJSCluster(tb testing.TB) []clusterNode {
	tb.Helper()
	bin := natsServerBinary(tb)
	for attempt := 1; ; attempt++ {
		nodes, err := tryJSCluster(tb, bin)
		if err == nil {
			return nodes
		}
		for _, n := range nodes {
			_ = n.proc.cmd.Process.Kill() // what started of this attempt goes
			<-n.proc.done
		}
		require.Less(tb, attempt, 3, "starting the cluster: %v", err)
		tb.Logf("starting the cluster again on other ports: %v", err)
	}
}

func tryJSCluster(tb testing.TB, bin string) ([]clusterNode, error) {
	routePorts := []int{freePort(tb), freePort(tb), freePort(tb)}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	nodes := make([]clusterNode, len(routePorts))
	for i, rp := range routePorts {
		port := freePort(tb)
		name := fmt.Sprintf("n%d", i+1)
		nodes[i] = clusterNode{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", port), proc: startChild(tb, "nats-server "+name, bin, nil,
			"-n", name, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", tb.TempDir(),
			"--cluster_name", "meetwatch-ha", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", rp), "--routes", strings.Join(routes, ","))}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range nodes {
		for {
			if n.proc.exited() {
				return nodes, fmt.Errorf("%s exited: %s", n.name, n.proc.out)
			}
			nc, err := nats.Connect(n.url)
			if err == nil {
				nc.Close()
				break
			}
			if time.Now().After(deadline) {
				return nodes, fmt.Errorf("%s accepts no connections: %w", n.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, nil
}

// clusterURL lists the client URLs of the nodes, as a NATS URL.
func clusterURL(nodes []clusterNode) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url
	}
	return strings.Join(urls, ",")
}

// streamLeader returns the name of the node leading stream, or an error
// while it has none.
func streamLeader(js jetstream.JetStream, stream string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// TestClusterLosesStreamLeader kills with SIGKILL, on a three-node cluster
// of nats-server processes, the node that leads the event stream, the state
// bucket or the lease bucket, while meetings start and end: nothing is lost
// or doubled, and events stall no longer than the cluster's own election
// plus 3 s.
func TestClusterLosesStreamLeader(t *testing.T) {
	t.Parallel()
	// One after the other: nine nats-server processes at once, beside
	// the rest of the suite, would measure the machine, not meetwatch.
	for _, leading := range []string{"MEETINGS", "KV_meetwatch-state", "KV_meetwatch-lease"} {
		t.Run(leading, func(t *testing.T) { clusterLosesLeaderOf(t, leading) })
	}
}

// stages records the steps a long test reached, and when, and logs them
// last if it fails, after the processes' output: the step it failed at is
// the last line of the test's output.
func stages(t *testing.T) (reached func(step string)) {
	began := time.Now()
	var mu sync.Mutex
	var steps []string
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("steps reached:\n%s", strings.Join(steps, "\n"))
		}
	})
	return func(step string) {
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, fmt.Sprintf("%8s %s", time.Since(began).Round(10*time.Millisecond), step))
	}
}

func clusterLosesLeaderOf(t *testing.T, leading string) {
	const token = "cluster-token"
	step := stages(t)
	nodes := startJSCluster(t)
	step("cluster started")
	nc, err := nats.Connect(clusterURL(nodes), nats.Name(t.Name()), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		assert.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond, "waiting for the cluster's jetstream")
	step("jetstream ready")

	api := startAPI(t, token, haMeetings)
	const leaseTTL = 2 * time.Second
	env := haEnv(api.URL, token, clusterURL(nodes), "solo", leaseTTL)
	env["MEETWATCH_REPLICAS"] = "3"
	mw := startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool { return streamLen(nc, "MEETINGS") >= haMeetings },
		45*time.Second, tick, "waiting for the first snapshot's events")
	step("first snapshot stored")

	for _, name := range []string{"MEETINGS", "KV_meetwatch-state", "KV_meetwatch-lease"} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		st, err := js.Stream(ctx, name)
		require.NoError(t, err, "stream %s", name)
		info, err := st.Info(ctx)
		cancel()
		require.NoError(t, err, "stream %s", name)
		assert.Equal(t, 3, info.Config.Replicas, "replicas of %s", name)
		if assert.NotNil(t, info.Cluster, "cluster info of %s", name) {
			assert.Len(t, info.Cluster.Replicas, 2, "followers of %s", name)
		}
	}

	ch := startChurn(t, api.Sim, 100*time.Millisecond, simtest.Seed(t, 3))
	// The kill lands while the churn's events flow: ten of them are stored.
	require.Eventually(t, func() bool { return streamLen(nc, "MEETINGS") >= haMeetings+10 },
		eventWait, tick, "waiting for the churn's first events")
	step("churn's first events stored")

	old, err := streamLeader(js, leading)
	require.NoError(t, err)
	i := slices.IndexFunc(nodes, func(n clusterNode) bool { return n.name == old })
	require.GreaterOrEqual(t, i, 0, "the stream leader %q is one of the nodes", old)
	before := streamLen(nc, "MEETINGS")
	shutAt := time.Now()
	require.NoError(t, nodes[i].proc.cmd.Process.Kill())
	<-nodes[i].proc.done
	step(fmt.Sprintf("%s, leader of %s, killed", old, leading))

	// NATS's own re-election: until every stream the dead node led (it
	// may lead more than one) has a leader again.
	var newLeader string
	require.Eventually(t, func() bool {
		for _, name := range []string{"MEETINGS", "KV_meetwatch-state", "KV_meetwatch-lease"} {
			l, err := streamLeader(js, name)
			if err != nil || l == old {
				return false
			}
			if name == leading {
				newLeader = l
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "waiting for new stream leaders after %s was killed", old)
	election := time.Since(shutAt)
	step(fmt.Sprintf("every stream led again, %s by %s", leading, newLeader))

	// Meetings keep starting and ending under the new leader: ten more
	// events are stored before the churn stops.
	waitForMore(t, nc, 10, 30*time.Second, "under the new leader of "+leading)
	step("ten more events stored")
	res := settleAndCheck(t, nc, ch, 30*time.Second)
	step("stream checked")
	assert.Greater(t, res.events, before, "events published after the leader of %s moved", leading)
	mw.stop(t, syscall.SIGTERM)

	// The longest gap between two stored events from the shutdown on: the
	// churn starts or ends a meeting every 100 ms.
	var stall time.Duration
	prev := shutAt
	for _, m := range natstest.Messages(t, nc, "MEETINGS") {
		if m.Time.Before(shutAt) {
			continue
		}
		stall = max(stall, m.Time.Sub(prev))
		prev = m.Time
	}
	// The cluster answers slowly while it elects, whichever stream lost its
	// leader, and a lease renewal that times out makes the replica stand
	// down, as fencing demands; it leads again within one lease. So the
	// bound is the election, one lease, and 3 s.
	bound := election + leaseTTL + 3*time.Second
	assert.LessOrEqual(t, stall, bound, "events stalled longer than the election, one lease and 3 s")
	step(fmt.Sprintf("longest stall %s (bound %s)", stall.Round(10*time.Millisecond), bound.Round(10*time.Millisecond)))

	var failedPolls, reconnects int
	for _, l := range mw.stderr.Lines() {
		switch {
		case strings.Contains(l, "poll failed"):
			failedPolls++
		case strings.Contains(l, "nats reconnected"):
			reconnects++
		}
	}
	t.Logf("cluster: leader of %s (%s) killed with SIGKILL, new leader %s, every stream led again after %s, longest stall of events %s (bound %s), transitions checked %d (started %d, ended %d; %d before the shutdown), events lost %d, duplicates %d (re-published and dropped by JetStream %d; failed polls %d, reconnects %d)",
		leading, old, newLeader, election.Round(10*time.Millisecond), stall.Round(10*time.Millisecond), bound.Round(10*time.Millisecond),
		res.events, res.started, res.ended, before, res.lost, res.duplicates, republishedCount(mw), failedPolls, reconnects)
}
