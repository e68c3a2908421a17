package main

// Three replicas share thirty accounts, each behind an API server of its
// own, while meetings start, change and end in every account: placement
// settles balanced, a kill -9 of the busiest replica hands its accounts to
// the survivors within the bound, and every account's events are checked
// against what its API went through.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// startNATSProcess starts a nats-server process with JetStream on a free
// loopback port and returns its URL once it accepts connections: the
// replicas' NATS traffic then costs the test process nothing.
func startNATSProcess(tb testing.TB) string {
	tb.Helper()
	port := freePort(tb)
	startChild(tb, "nats-server", natsServerBinary(tb), nil, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", tb.TempDir())
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// fleetAccount is one account behind its own API server, with the ground
// truth of what its meetings went through.
type fleetAccount struct {
	name string
	api  *apisim.Server

	mu       sync.Mutex
	listings []time.Time // when each listing began (its first page asked for)
	// subjects holds every subject each meeting had, in order: a change
	// gives it a new one, so that each of its events says which version
	// of the meeting it carries.
	subjects map[string][]string
	ended    map[string]bool
	live     []string
	steps    int
}

func newFleetAccount(tb testing.TB, name string, seed int64, meetings int) *fleetAccount {
	tb.Helper()
	a := &fleetAccount{name: name, subjects: map[string][]string{}, ended: map[string]bool{}}
	a.api = apisim.NewServer(apisim.Options{Token: "token-" + name, Seed: seed})
	tb.Cleanup(a.api.Close)
	a.api.Sim.SetHook(a.hook)
	a.start(meetings)
	return a
}

func (a *fleetAccount) hook(r *http.Request) *apisim.Fault {
	q := r.URL.Query()
	if r.URL.Path == apisim.Path && !q.Has("searchKey") && (q.Get("offset") == "" || q.Get("offset") == "0") {
		at := time.Now()
		a.mu.Lock()
		a.listings = append(a.listings, at)
		a.mu.Unlock()
	}
	return nil
}

// listingsAfter returns when the account's listings began after t.
func (a *fleetAccount) listingsAfter(t time.Time) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := sort.Search(len(a.listings), func(i int) bool { return a.listings[i].After(t) })
	return slices.Clone(a.listings[i:])
}

// start starts n meetings. The caller holds mu, or no churn runs yet.
func (a *fleetAccount) start(n int) {
	for _, id := range a.api.Sim.AddN(n) {
		rec, _ := a.api.Sim.Get(id)
		s, _ := rec["subject"].(string)
		a.subjects[id] = []string{s}
		a.live = append(a.live, id)
	}
}

// step starts, changes or ends a meeting drawn at random, each in turn,
// so that every account goes through all three; it keeps between 3 and 9
// going on.
func (a *fleetAccount) step(rng *rand.Rand) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.live)
	a.steps++
	switch kind := a.steps % 3; {
	case n < 3 || (kind == 0 && n < 9):
		a.start(1)
	case kind == 1:
		i := rng.IntN(n)
		id := a.live[i]
		a.api.Sim.End(id)
		a.ended[id] = true
		a.live = slices.Delete(a.live, i, i+1)
	default:
		id := a.live[rng.IntN(n)]
		next := fmt.Sprintf("%s v%d", id[:8], len(a.subjects[id]))
		a.api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = next })
		a.subjects[id] = append(a.subjects[id], next)
	}
}

// truth returns a copy of the ground truth.
func (a *fleetAccount) truth() (subjects map[string][]string, ended map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	subjects = make(map[string][]string, len(a.subjects))
	for id, s := range a.subjects {
		subjects[id] = slices.Clone(s)
	}
	ended = make(map[string]bool, len(a.ended))
	for id := range a.ended {
		ended[id] = true
	}
	return subjects, ended
}

// waitListings waits until every account has been listed n more times.
func waitListings(tb testing.TB, accts []*fleetAccount, n int) {
	tb.Helper()
	from := time.Now()
	require.Eventually(tb, func() bool {
		for _, a := range accts {
			if len(a.listingsAfter(from)) < n {
				return false
			}
		}
		return true
	}, eventWait, tick, "waiting for %d more listings of every account", n)
}

// startFleetChurn makes one change about every `every`, in each account
// in turn (in an order drawn at random each round), until the returned
// halt is called or the test ends: one goroutine for every account, so
// that the test process stays light.
func startFleetChurn(tb testing.TB, accts []*fleetAccount, every time.Duration, seed uint64) (halt func()) {
	tb.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	rng := rand.New(rand.NewPCG(seed, 0x666c6565))
	go func() {
		defer close(done)
		var round []*fleetAccount
		for {
			select {
			case <-stop:
				return
			case <-time.After(every/2 + time.Duration(rng.Int64N(int64(every)))):
			}
			if len(round) == 0 {
				round = slices.Clone(accts)
				rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
			}
			round[0].step(rng)
			round = round[1:]
		}
	}()
	halt = sync.OnceFunc(func() { close(stop); <-done })
	tb.Cleanup(halt)
	return halt
}

// accountCheck is what one account's events say against its ground truth.
type accountCheck struct {
	events, started, changed, ended int
	// lost counts what the stream owes and does not hold: a meeting going
	// on without its started or its last change, an announced meeting that
	// ended without its ended.
	lost     int
	problems []string
}

// meetingSeen is what the events of one meeting said so far.
type meetingSeen struct {
	announced, ended bool
	version          int // of the record last announced, an index into its subjects
}

// checkAccount checks the events of one account, in stream order, against
// its ground truth: each on the account's subject; no id twice; no event
// for a meeting the account never had; per meeting a started first, then
// changes, each from the version last announced to a later one, then at
// most one ended, of a meeting that did end, carrying the version last
// announced; every meeting going on announced at its last version, every
// announced meeting that ended announced as ended. A meeting that started
// and ended between two listings may have no event at all.
func checkAccount(name string, msgs []message, subjects map[string][]string, ended map[string]bool) accountCheck {
	res := accountCheck{events: len(msgs)}
	problem := func(format string, args ...any) { res.problems = append(res.problems, fmt.Sprintf(format, args...)) }
	ids := map[string]bool{}
	seen := map[string]*meetingSeen{}
	version := func(id string, rec map[string]any) int {
		s, _ := rec["subject"].(string)
		return slices.Index(subjects[id], s)
	}
	for _, m := range msgs {
		e := m.Event
		kind := e.kind()
		if want := "meetings." + name + "." + kind + "." + e.Subject; m.Subject != want {
			problem("%s event of %s on subject %s, not %s", kind, e.Subject, m.Subject, want)
		}
		if ids[e.ID] {
			problem("event id %s stored twice (%s %s)", e.ID, kind, e.Subject)
		}
		ids[e.ID] = true
		if _, ok := subjects[e.Subject]; !ok {
			problem("%s event for %s, a meeting the account never had", kind, e.Subject)
			continue
		}
		st := seen[e.Subject]
		if st == nil {
			st = &meetingSeen{}
			seen[e.Subject] = st
		}
		v := version(e.Subject, e.Data.Conference)
		if v < 0 {
			problem("%s event for %s carries a subject it never had: %v", kind, e.Subject, e.Data.Conference["subject"])
			continue
		}
		switch kind {
		case "started":
			res.started++
			if st.announced {
				problem("%s started again (ended before: %t)", e.Subject, st.ended)
			}
			st.announced, st.version = true, v
		case "changed":
			res.changed++
			from := version(e.Subject, e.Data.Previous)
			switch {
			case !st.announced:
				problem("%s changed before it started", e.Subject)
			case st.ended:
				problem("%s changed after its end", e.Subject)
			case from != st.version:
				problem("%s changed from version %d, but version %d was announced last", e.Subject, from, st.version)
			case v <= from:
				problem("%s changed from version %d back to %d", e.Subject, from, v)
			}
			if fields := e.changedFields(); !slices.Equal(fields, []string{"subject"}) {
				problem("%s changed %v; only its subject changed", e.Subject, fields)
			}
			st.version = v
		case "ended":
			res.ended++
			switch {
			case !st.announced:
				problem("%s ended without a started", e.Subject)
			case st.ended:
				problem("%s ended twice", e.Subject)
			case !ended[e.Subject]:
				problem("%s ended, but it is going on", e.Subject)
			case v != st.version:
				problem("%s ended with version %d, but version %d was announced last", e.Subject, v, st.version)
			}
			st.ended = true
		default:
			problem("event of unknown type %q", e.Type)
		}
	}
	for id, s := range subjects {
		st := seen[id]
		if st == nil {
			st = &meetingSeen{}
		}
		switch {
		case !ended[id] && !st.announced:
			res.lost++
			problem("%s is going on, but no started event", id)
		case !ended[id] && st.version != len(s)-1:
			res.lost++
			problem("%s is at version %d, but version %d was announced last", id, len(s)-1, st.version)
		case ended[id] && st.announced && !st.ended:
			res.lost++
			problem("%s started and ended, but no ended event", id)
		}
	}
	sort.Strings(res.problems)
	return res
}

// readyAccounts asks every replica's /readyz for the accounts it polls;
// it fails c unless each is ready.
func readyAccounts(c *assert.CollectT, hc *http.Client, reps []*haReplica) [][]string {
	held := make([][]string, len(reps))
	for i, r := range reps {
		code, _, accts, err := accountsOf(hc, r.current().p)
		if !assert.NoError(c, err, "%s /readyz", r.id) {
			return nil
		}
		assert.Equal(c, http.StatusOK, code, "%s ready", r.id)
		held[i] = accts
	}
	return held
}

// assertShared fails c unless held names every account once, no replica
// polling more than most.
func assertShared(c *assert.CollectT, names []string, held [][]string, most int) {
	var all []string
	for i, h := range held {
		assert.LessOrEqual(c, len(h), most, "replica %d polls %v", i+1, h)
		all = append(all, h...)
	}
	slices.Sort(all)
	assert.Equal(c, names, all, "every account polled by one replica")
}

// TestThreeReplicasThirtyAccounts runs three replicas over thirty accounts,
// each behind its own API server, while meetings start, change and end in
// every account. Within 30 s of the start no replica polls more than
// ceil(30/3)+1 accounts and they settle at ten each; after a kill -9 of the
// busiest, each of its accounts is listed again by a survivor within one
// lease TTL and two intervals; and each account's stream holds exactly its
// transitions: none lost, doubled or invented, its changes in order.
func TestThreeReplicasThirtyAccounts(t *testing.T) {
	t.Parallel()
	const (
		n         = 30
		replicas  = 3
		leaseTTL  = 2 * time.Second
		interval  = 500 * time.Millisecond
		meetings  = 6
		churnStep = 15 * time.Millisecond
	)
	bound := leaseTTL + 2*interval
	share := (n + replicas - 1) / replicas
	natsURL := startNATSProcess(t)
	nc := connectWithin(t, natsURL, eventWait)
	seed := simtest.Seed(t, 30)
	accts := make([]*fleetAccount, n)
	names := make([]string, n)
	entries := make([]simAccountEntry, n)
	for i := range accts {
		name := fmt.Sprintf("acct-%02d", i+1)
		accts[i] = newFleetAccount(t, name, int64(seed)+int64(i), meetings)
		names[i] = name
		entries[i] = simAccountEntry{Name: name, APIURL: accts[i].api.URL, AccessToken: "token-" + name}
	}
	file := filepath.Join(t.TempDir(), "accounts.yaml")
	require.NoError(t, writeAccountsFile(file, entries))
	byName := map[string]*fleetAccount{}
	for _, a := range accts {
		byName[a.name] = a
	}
	hc := &http.Client{Timeout: 2 * time.Second}

	halt := startFleetChurn(t, accts, churnStep, seed)
	reps := make([]*haReplica, replicas)
	started := time.Now()
	for i := range reps {
		id := fmt.Sprintf("r%d", i+1)
		env := manyEnv(file, natsURL, id, leaseTTL)
		env["MEETWATCH_POLL_INTERVAL"] = interval.String()
		reps[i] = &haReplica{id: id, env: env}
		reps[i].start(t)
	}
	// Balanced by the bound, then as the placement settles: ten
	// each.
	var bounded, settled time.Duration
	var held [][]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		held = readyAccounts(c, hc, reps)
		assertShared(c, names, held, share+1)
	}, 30*time.Second, 100*time.Millisecond, "waiting for every account polled, none of the replicas above %d", share+1)
	bounded = time.Since(started)
	firstHeld := held
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		held = readyAccounts(c, hc, reps)
		assertShared(c, names, held, share)
	}, 30*time.Second-bounded, 100*time.Millisecond, "waiting for %d accounts on each replica", share)
	settled = time.Since(started)

	// Every account listed twice more, by its replica of now.
	waitListings(t, accts, 2)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		held = readyAccounts(c, hc, reps)
		assertShared(c, names, held, share)
	}, eventWait, 100*time.Millisecond, "asking every replica for its accounts")
	busiest := 0
	for i := range held {
		if len(held[i]) > len(held[busiest]) {
			busiest = i
		}
	}
	killed := held[busiest]
	killedAt := reps[busiest].kill(t)
	took := map[string]time.Duration{}
	require.Eventually(t, func() bool {
		for _, name := range killed {
			if _, ok := took[name]; !ok {
				if next := byName[name].listingsAfter(killedAt); len(next) > 0 {
					took[name] = next[0].Sub(killedAt)
				}
			}
		}
		return len(took) == len(killed)
	}, 5*bound, 10*time.Millisecond, "waiting for the survivors to list %v", killed)
	var worst time.Duration
	for _, name := range killed {
		assert.Less(t, took[name], bound, "from the kill of %s to %s's next listing", reps[busiest].id, name)
		worst = max(worst, took[name])
	}
	survivors := slices.Delete(slices.Clone(reps), busiest, busiest+1)
	var after [][]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		after = readyAccounts(c, hc, survivors)
		assertShared(c, names, after, (n+len(survivors)-1)/len(survivors)+1)
	}, eventWait, 100*time.Millisecond, "waiting for the survivors to poll every account")

	// Two more listings of every account under the survivors, then the
	// churn stops and the stream must come to the ground truth.
	waitListings(t, accts, 2)
	halt()
	check := func() map[string]accountCheck {
		msgs := storedMessages(t, nc, "MEETINGS")
		out := map[string]accountCheck{}
		for _, a := range accts {
			subjects, ended := a.truth()
			out[a.name] = checkAccount(a.name, ofAccount(msgs, a.name), subjects, ended)
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
	}, eventWait, 250*time.Millisecond, "waiting for every account's transitions")
	// Three more listings of each account: the polls in flight when the
	// stream settled have published what they saw.
	waitListings(t, accts, 3)
	var total accountCheck
	least := accountCheck{changed: -1, ended: -1}
	final := check()
	for _, a := range accts {
		res := final[a.name]
		assert.Empty(t, res.problems, "%s against its ground truth", a.name)
		subjects, ended := a.truth()
		changed := 0
		for _, s := range subjects {
			changed += len(s) - 1
		}
		assert.Greater(t, len(subjects), meetings, "%s: meetings started meanwhile", a.name)
		assert.Positive(t, changed, "%s: meetings changed", a.name)
		assert.NotEmpty(t, ended, "%s: meetings ended", a.name)
		if least.changed < 0 || res.changed < least.changed {
			least.changed = res.changed
		}
		if least.ended < 0 || res.ended < least.ended {
			least.ended = res.ended
		}
		total.events += res.events
		total.started += res.started
		total.changed += res.changed
		total.ended += res.ended
	}
	for _, r := range survivors {
		r.current().p.stop(t, syscall.SIGTERM)
	}

	counts := func(held [][]string) string {
		var s []string
		for _, h := range held {
			s = append(s, strconv.Itoa(len(h)))
		}
		return strings.Join(s, "/")
	}
	var durations []time.Duration
	for _, d := range took {
		durations = append(durations, d)
	}
	slices.Sort(durations)
	t.Logf("three replicas, %d accounts (lease %s, interval %s): %s polled within %s of the start (bound %d each), %s within %s; killed %s (%d accounts): next listing of each by a survivor after %s to %s, median %s (bound %s); survivors poll %s; events %d (started %d, changed %d, ended %d; at least %d changed and %d ended in each account), every account true",
		n, leaseTTL, interval, counts(firstHeld), bounded.Round(10*time.Millisecond), share+1, counts(held), settled.Round(10*time.Millisecond),
		reps[busiest].id, len(killed), durations[0].Round(10*time.Millisecond), worst.Round(10*time.Millisecond),
		durations[len(durations)/2].Round(10*time.Millisecond), bound, counts(after), total.events, total.started, total.changed, total.ended, least.changed, least.ended)
}

// TestCheckAccountFindsWhatIsWrong: the check of one account's events
// finds each way a stream can go wrong, and nothing in a true one.
func TestCheckAccountFindsWhatIsWrong(t *testing.T) {
	t.Parallel()
	ev := func(kind, meeting, id, subject, previous string) message {
		m := message{Subject: "meetings.acme." + kind + "." + meeting}
		m.Event.ID, m.Event.Type, m.Event.Subject = id, "meetwatch.meeting."+kind, meeting
		m.Event.Data.Conference = map[string]any{"subject": subject}
		if kind == "changed" {
			m.Event.Data.Previous = map[string]any{"subject": previous}
			m.Event.Data.Changes = append(m.Event.Data.Changes, struct {
				Field string          `json:"field"`
				Old   json.RawMessage `json:"old"`
				New   json.RawMessage `json:"new"`
			}{Field: "subject"})
		}
		return m
	}
	subjects := map[string][]string{"a": {"a0", "a1", "a2"}, "b": {"b0"}, "c": {"c0"}}
	ended := map[string]bool{"b": true, "c": true}
	// a changed twice, b started and ended, c came and went unseen.
	truth := []message{ev("started", "a", "1", "a0", ""), ev("changed", "a", "2", "a1", "a0"), ev("started", "b", "3", "b0", ""),
		ev("changed", "a", "4", "a2", "a1"), ev("ended", "b", "5", "b0", "")}
	tests := []struct {
		name string
		msgs []message
		lost int
		want string // in a problem
	}{
		{name: "true", msgs: truth},
		{name: "a change coalesced", msgs: []message{truth[0], ev("changed", "a", "2", "a2", "a0"), truth[2], truth[4]}},
		{name: "the last change lost", msgs: []message{truth[0], truth[1], truth[2], truth[4]}, lost: 1, want: "a is at version 2, but version 1 was announced last"},
		{name: "an end lost", msgs: truth[:4], lost: 1, want: "b started and ended, but no ended event"},
		{name: "a start lost", msgs: truth[2:], lost: 1, want: "a changed before it started"},
		{name: "a change doubled", msgs: append(slices.Clone(truth), ev("changed", "a", "6", "a2", "a1")), want: "a changed from version 1, but version 2 was announced last"},
		{name: "changes out of order", msgs: []message{truth[0], ev("changed", "a", "2", "a2", "a1"), ev("changed", "a", "4", "a1", "a0")},
			lost: 1, want: "a changed from version 1, but version 0 was announced last"},
		{name: "an id twice", msgs: append(slices.Clone(truth), truth[4]), want: "event id 5 stored twice"},
		{name: "started twice", msgs: append(slices.Clone(truth), ev("started", "a", "7", "a2", "")), want: "a started again"},
		{name: "a phantom", msgs: append(slices.Clone(truth), ev("started", "z", "8", "z0", "")), want: "z, a meeting the account never had"},
		{name: "a false end", msgs: append(slices.Clone(truth), ev("ended", "a", "9", "a2", "")), want: "a ended, but it is going on"},
		{name: "a version it never had", msgs: append(slices.Clone(truth), ev("changed", "a", "6", "a3", "a2")), want: "a carries a subject it never had"},
		{name: "another account's subject", msgs: append(slices.Clone(truth[:4]), func() message {
			m := truth[4]
			m.Subject = "meetings.other.ended.b"
			return m
		}()), want: "on subject meetings.other.ended.b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkAccount("acme", tt.msgs, subjects, ended)
			assert.Equal(t, tt.lost, got.lost, "lost: %v", got.problems)
			if tt.want == "" && tt.lost == 0 {
				assert.Empty(t, got.problems)
				return
			}
			if tt.want != "" {
				assert.True(t, slices.ContainsFunc(got.problems, func(p string) bool { return strings.Contains(p, tt.want) }),
					"want a problem saying %q, got %v", tt.want, got.problems)
			}
		})
	}
}
