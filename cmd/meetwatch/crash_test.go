package main

// These tests kill meetwatch where it hurts: with SIGKILL while it publishes
// a snapshot or commits it, between two polls, and by taking its NATS server
// away. After each blow a fresh process (or the same one, for the outage)
// must bring the stream to exactly the transitions the simulated API went
// through: every one once, none twice, nothing invented.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	crashStream = "MEETINGS"
	stateBucket = "meetwatch-state"
	// crashMeetings is large enough that a first snapshot spans four pages
	// of 500 and takes a while to publish and to commit.
	crashMeetings = 2000
	// rigMeetings is the first snapshot of each crash point: two full pages,
	// and enough writes that a commit can be stopped halfway.
	rigMeetings = 1000
)

// crashEnv is runEnv with pages of 500 and no client-side request budget:
// the simulator is local, and a restart should not wait for the budget to
// refill before its first poll.
func crashEnv(apiURL, token, natsURL string) map[string]string {
	env := runEnv(apiURL, token, natsURL)
	env["MEETWATCH_PAGE_SIZE"] = "500"
	env["MEETWATCH_API_RATE"] = "0"
	return env
}

// kill9 sends SIGKILL and waits for the process to be gone.
func kill9(tb testing.TB, p *process) {
	tb.Helper()
	require.False(tb, p.exited(), "meetwatch exited before it was killed (code %d); stderr:\n%s", p.code, p.stderr)
	require.NoError(tb, p.cmd.Process.Kill())
	select {
	case <-p.done:
	case <-time.After(exitWait):
		require.FailNow(tb, "meetwatch survived SIGKILL")
	}
}

// world is the ground truth: every meeting the test started in the
// simulator, and which of them it ended.
type world struct {
	sim   *apisim.Sim
	added []string
	ever  map[string]bool
	ended map[string]bool
	live  []string // ongoing, in no particular order
}

func newWorld(sim *apisim.Sim, meetings int) *world {
	w := &world{sim: sim, ever: map[string]bool{}, ended: map[string]bool{}}
	w.start(meetings)
	return w
}

// start starts n meetings.
func (w *world) start(n int) []string {
	ids := w.sim.AddN(n)
	for _, id := range ids {
		w.added = append(w.added, id)
		w.ever[id] = true
		w.live = append(w.live, id)
	}
	return ids
}

// end ends an ongoing meeting.
func (w *world) end(tb testing.TB, id string) {
	tb.Helper()
	require.True(tb, w.sim.End(id), "ending %s", id)
	w.ended[id] = true
	for i, l := range w.live {
		if l == id {
			w.live[i] = w.live[len(w.live)-1]
			w.live = w.live[:len(w.live)-1]
			break
		}
	}
}

// endSome ends up to n random ongoing meetings, once the state records
// when it was observed. Before that, an ended event can carry no lastSeen;
// that case is TestCrashPoints' "partial first commit, then ends".
func (w *world) endSome(tb testing.TB, rng *rand.Rand, st *stateView, n int) []string {
	tb.Helper()
	if st.observedAt().IsZero() {
		return nil
	}
	var out []string
	for len(out) < n && len(w.live) > 0 {
		id := w.live[rng.IntN(len(w.live))]
		w.end(tb, id)
		out = append(out, id)
	}
	return out
}

// stateView reads the state bucket from the test's side. Its meta and
// observedAt never fail the test, so that Eventually conditions can call
// them: what cannot be read counts as absent.
type stateView struct {
	js jetstream.JetStream
}

func newStateView(tb testing.TB, nc *nats.Conn) *stateView {
	tb.Helper()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	return &stateView{js: js}
}

func (s *stateView) kv(ctx context.Context) (jetstream.KeyValue, error) {
	return s.js.KeyValue(ctx, stateBucket)
}

// meta returns the revision of the meta key and the number of meetings it
// records, or 0 and 0 while there is no meta key.
func (s *stateView) meta() (rev uint64, meetings int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := s.kv(ctx)
	if err != nil {
		return 0, 0
	}
	e, err := kv.Get(ctx, "meta")
	if err != nil {
		return 0, 0
	}
	var v struct {
		Meetings int `json:"meetings"`
	}
	_ = json.Unmarshal(e.Value(), &v)
	return e.Revision(), v.Meetings
}

// observedAt returns when the committed state was observed, as its meta
// key says, and the zero time while there is none or it says nothing.
func (s *stateView) observedAt() time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := s.kv(ctx)
	if err != nil {
		return time.Time{}
	}
	e, err := kv.Get(ctx, "meta")
	if err != nil {
		return time.Time{}
	}
	var v struct {
		ObservedAt time.Time `json:"observedAt"`
	}
	_ = json.Unmarshal(e.Value(), &v)
	return v.ObservedAt
}

// hasMeta reports whether the meta key exists, distinguishing "no key"
// from "cannot tell".
func (s *stateView) hasMeta(tb testing.TB) bool {
	tb.Helper()
	kv, err := s.kv(tb.Context())
	require.NoError(tb, err, "state bucket")
	_, err = kv.Get(tb.Context(), "meta")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	require.NoError(tb, err, "reading the meta key")
	return true
}

// keys returns the confUUIDs under a key prefix: "m." for the meetings in
// the state, including the starts a poll recorded before publishing them.
func (s *stateView) keys(tb testing.TB, prefix string) map[string]bool {
	tb.Helper()
	kv, err := s.kv(tb.Context())
	require.NoError(tb, err, "state bucket")
	lister, err := kv.ListKeysFiltered(tb.Context(), prefix+">")
	require.NoError(tb, err)
	defer func() { _ = lister.Stop() }()
	out := map[string]bool{}
	for k := range lister.Keys() {
		out[strings.TrimPrefix(k, prefix)] = true
	}
	return out
}

// waitForCommits waits until the meta key has moved n times: every
// committed poll writes it, and only a committed poll does.
func waitForCommits(tb testing.TB, st *stateView, n int) {
	tb.Helper()
	last, _ := st.meta()
	seen := 0
	require.Eventually(tb, func() bool {
		if rev, _ := st.meta(); rev != 0 && rev != last {
			last = rev
			seen++
		}
		return seen >= n
	}, eventWait, tick, "waiting for %d committed polls", n)
}

// settle waits until three polls in a row commit without adding a message
// to the stream, so that at least two of them listed after the stream was
// last seen growing, and until the committed snapshot holds as many
// meetings as sim: a poll whose end confirmations ran out of time commits
// without publishing, and only the count shows that an end is still owed.
// It returns every message.
func settle(tb testing.TB, nc *nats.Conn, st *stateView, sim *apisim.Sim) []message {
	tb.Helper()
	deadline := time.Now().Add(2 * eventWait)
	for {
		before := streamLen(nc, crashStream)
		waitForCommits(tb, st, 3)
		_, meetings := st.meta()
		if streamLen(nc, crashStream) == before && meetings == sim.Len() {
			return storedMessages(tb, nc, crashStream)
		}
		require.True(tb, time.Now().Before(deadline), "the stream never stopped growing, or the state never caught up with the API")
	}
}

// waitForLen waits until the stream holds exactly n messages, without
// reading them.
func waitForLen(tb testing.TB, nc *nats.Conn, n int) {
	tb.Helper()
	require.Eventually(tb, func() bool { return streamLen(nc, crashStream) >= n },
		eventWait, tick, "waiting for %d messages in stream %s", n, crashStream)
	require.Equal(tb, n, streamLen(nc, crashStream), "messages in stream %s", crashStream)
}

// committedLine matches the log line of a committed poll that changed
// something, in the default text format.
var committedLine = regexp.MustCompile(`msg="poll committed".* started=(\d+) changed=(\d+) ended=(\d+) duplicates=(\d+)`)

// firstCommit returns the started, ended and duplicates counts of the first
// committed poll a process logged.
func firstCommit(tb testing.TB, p *process) (started, ended, duplicates int) {
	tb.Helper()
	for _, l := range p.stderr.Lines() {
		if m := committedLine.FindStringSubmatch(l); m != nil {
			started, _ = strconv.Atoi(m[1])
			ended, _ = strconv.Atoi(m[3])
			duplicates, _ = strconv.Atoi(m[4])
			return started, ended, duplicates
		}
	}
	require.FailNow(tb, "no committed poll logged", "stderr:\n%s", p.stderr)
	return 0, 0, 0
}

// allCommits sums what every committed poll of p logged.
func allCommits(p *process) (started, ended, duplicates int) {
	for _, l := range p.stderr.Lines() {
		if m := committedLine.FindStringSubmatch(l); m != nil {
			s, _ := strconv.Atoi(m[1])
			e, _ := strconv.Atoi(m[3])
			d, _ := strconv.Atoi(m[4])
			started, ended, duplicates = started+s, ended+e, duplicates+d
		}
	}
	return started, ended, duplicates
}

// assertDropped checks what JetStream dropped as duplicates while p
// published again what a crash left pending: want, the events already out
// before the crash. A process that lost its lease on the way (a renewal
// late under load) and led again re-sent, in its later term, also what
// its earlier term got out: then the count lies between want and most,
// what the crashed poll had to publish. checkTruth shows, either way, that
// the stream holds each event once.
func assertDropped(t *testing.T, p *process, want, most, dropped int, msg string) {
	t.Helper()
	if terms := strings.Count(p.stderr.String(), `msg=leading`); terms > 1 {
		t.Logf("the restart led %d times: %d dropped, at least %d", terms, dropped, want)
		assert.GreaterOrEqual(t, dropped, want, msg)
		assert.LessOrEqual(t, dropped, most, msg)
		return
	}
	assert.Equal(t, want, dropped, msg)
}

// tally is what checkTruth found.
type tally struct {
	transitions int // transitions the ground truth owes the stream
	lost        int // of those, missing from the stream
	duplicates  int // messages beyond the first of a kind for one meeting
	neither     int // meetings that came and went unseen
	started     map[string]int
	ended       map[string][]event
}

// checkTruth checks the whole stream against the ground truth: no event id
// twice; for every meeting at most one started and at most one ended; every
// ongoing meeting started exactly once and never ended; every ended meeting
// that had a started has exactly one ended; no event for a meeting the test
// never started, and no changed event, since the test changes no record;
// every ended event's lastSeen present and not after its time.
//
// The meetings in owed are left to the caller: their started is checked,
// their ended only counted.
func checkTruth(t *testing.T, msgs []message, w *world, owed map[string]bool) tally {
	t.Helper()
	f := tally{started: map[string]int{}, ended: map[string][]event{}}
	ids := map[string]int{}
	for _, m := range msgs {
		e := m.Event
		ids[e.ID]++
		assert.Equal(t, e.ID, m.Header.Get("Nats-Msg-Id"), "Nats-Msg-Id header")
		assert.True(t, w.ever[e.Subject], "%s event for a meeting never started: %s", e.kind(), e.Subject)
		switch e.kind() {
		case "started":
			f.started[e.Subject]++
		case "ended":
			f.ended[e.Subject] = append(f.ended[e.Subject], e)
			if !owed[e.Subject] && assert.NotNil(t, e.Data.LastSeen, "ended %s without lastSeen", e.Subject) {
				assertLastSeen(t, e)
			}
		default:
			assert.Fail(t, "unexpected event", "%s for %s: nothing changed a record", e.Type, e.Subject)
		}
	}
	for id, n := range ids {
		assert.Equal(t, 1, n, "event id %s stored %d times", id, n)
	}
	for _, id := range w.added {
		s, e := f.started[id], len(f.ended[id])
		f.duplicates += max(s-1, 0) + max(e-1, 0)
		assert.LessOrEqual(t, s, 1, "started events for %s", id)
		assert.LessOrEqual(t, e, 1, "ended events for %s", id)
		switch {
		case !w.ended[id]:
			f.transitions++
			if s == 0 {
				f.lost++
			}
			assert.Equal(t, 1, s, "started events for ongoing %s", id)
			assert.Zero(t, e, "ended events for ongoing %s", id)
		case owed[id]:
			f.transitions += 2
			if s == 0 {
				f.lost++
			}
			assert.Equal(t, 1, s, "started events for %s", id)
		case s > 0:
			f.transitions += 2
			if e == 0 {
				f.lost++
			}
			assert.Equal(t, 1, e, "ended events for %s, which was announced as started", id)
		default:
			f.neither++
			assert.Zero(t, e, "ended events for %s, which was never announced as started", id)
		}
	}
	assert.Zero(t, f.lost, "transitions missing from the stream")
	assert.Zero(t, f.duplicates, "transitions in the stream more than once")
	return f
}

// assertLastSeen checks that an ended event's lastSeen is not after its
// time.
func assertLastSeen(t *testing.T, e event) {
	t.Helper()
	lastSeen, err := time.Parse(time.RFC3339, *e.Data.LastSeen)
	require.NoError(t, err)
	at, err := time.Parse(time.RFC3339, e.Time)
	require.NoError(t, err)
	assert.False(t, lastSeen.After(at), "ended %s: lastSeen %s after the event's time %s", e.Subject, lastSeen, at)
}

// listings watches the listing requests that begin a poll (offset 0, no
// searchKey), and can hold the next one until released. While
// lookupsFail is set, it fails every end lookup, so that an end waits for
// the next listing.
type listings struct {
	mu          sync.Mutex
	n           int
	gate        chan struct{}
	blocked     chan struct{}
	lookupsFail atomic.Bool
}

// watchListings installs the hook on sim.
func watchListings(sim *apisim.Sim) *listings {
	l := &listings{}
	sim.SetHook(l.hook)
	return l
}

func (l *listings) hook(r *http.Request) *apisim.Fault {
	q := r.URL.Query()
	if q.Has("searchKey") && l.lookupsFail.Load() {
		return &apisim.Fault{Status: http.StatusServiceUnavailable}
	}
	if r.URL.Path != apisim.Path || q.Has("searchKey") || (q.Get("offset") != "" && q.Get("offset") != "0") {
		return nil
	}
	l.mu.Lock()
	l.n++
	gate, blocked := l.gate, l.blocked
	l.gate, l.blocked = nil, nil
	l.mu.Unlock()
	if gate != nil {
		close(blocked)
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}
	return nil
}

// count returns how many polls began.
func (l *listings) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// holdNext makes the next poll's first request wait until release is
// called. blocked is closed when it waits.
func (l *listings) holdNext(tb testing.TB) (blocked <-chan struct{}, release func()) {
	gate, b := make(chan struct{}), make(chan struct{})
	l.mu.Lock()
	l.gate, l.blocked = gate, b
	l.mu.Unlock()
	release = sync.OnceFunc(func() { close(gate) })
	tb.Cleanup(release) // before the API server closes, which waits for its handlers
	return b, release
}

// waitBlocked waits until a poll waits in the hook.
func waitBlocked(tb testing.TB, blocked <-chan struct{}) {
	tb.Helper()
	select {
	case <-blocked:
	case <-time.After(eventWait):
		require.FailNow(tb, "no poll began")
	}
}

// natsGate sits between meetwatch and its NATS server and passes the
// client's protocol messages on one by one, counting them by what they do to
// the state. It can hold them: once the function given to holdFrom picks a
// message by its subject, nothing more the client sends reaches the server,
// while the server's answers still reach the client. Killing the process
// then leaves the server exactly as it was before that message, which makes
// a crash point deterministic. It can also hold the server's answers for a
// while (see stallAt), as a slow server would.
type natsGate struct {
	ln       net.Listener
	upstream string
	kindOf   func(subject string, payload []byte) string // writeKind unless told

	mu      sync.Mutex
	pick    func(kind string) bool
	held    chan struct{}
	holding bool
	conns   []net.Conn
	counts  map[string]int // messages passed on, by writeKind
	last    string         // the phase of the last state write passed on
	stall   *gateStall     // armed by stallAt
	until   time.Time      // the server's answers wait until then
}

// gateStall holds the server's answers for hold, from the moment the
// client's messages of kind reach at.
type gateStall struct {
	kind string
	at   int
	hold time.Duration
	on   chan struct{}
}

// Kinds of client messages the gate counts.
const (
	kindEvent  = "event"  // a meeting event
	kindIntent = "intent" // an m.* put marked as an intent: a start or change recorded before publishing
	kindRecord = "record" // any other m.* put or purge: what an event announced, after it
	kindMeta   = "meta"   // the meta key: a commit's last write
)

// writeKind tells what a PUB or HPUB does, from its subject and, for a
// meeting's key, its headers; "" for anything else (the lease, JetStream's
// API, replies).
func writeKind(subject string, payload []byte) string {
	state := "$KV." + stateBucket + "."
	switch {
	case strings.HasPrefix(subject, "meetings."):
		return kindEvent
	case strings.HasPrefix(subject, state+"m.") && bytes.Contains(payload, []byte("Meetwatch-Intent:")):
		return kindIntent
	case strings.HasPrefix(subject, state+"m."):
		return kindRecord
	case subject == state+"meta":
		return kindMeta
	}
	return ""
}

// phase names where a poll stood after a message of the given kind.
var phase = map[string]string{
	"":         "before its first write",
	kindIntent: "recording intents",
	kindEvent:  "publishing",
	kindRecord: "recording",
	kindMeta:   "between polls",
}

func startGate(tb testing.TB, natsURL string) *natsGate {
	tb.Helper()
	return startGateKinds(tb, natsURL, writeKind)
}

// startGateKinds starts a gate that tells the messages it counts and holds
// with kindOf instead of writeKind.
func startGateKinds(tb testing.TB, natsURL string, kindOf func(subject string, payload []byte) string) *natsGate {
	tb.Helper()
	u, err := url.Parse(natsURL)
	require.NoError(tb, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	g := &natsGate{ln: ln, upstream: u.Host, kindOf: kindOf, held: make(chan struct{}), counts: map[string]int{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { g.serve(c) })
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			_ = c.Close()
		}
		g.mu.Unlock()
		wg.Wait()
	})
	return g
}

func (g *natsGate) URL() string { return "nats://" + g.ln.Addr().String() }

// holdFrom arms the gate, which holds the first message that pick picks by
// its writeKind; the returned channel is closed when a message is held.
func (g *natsGate) holdFrom(pick func(kind string) bool) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pick = pick
	return g.held
}

// count returns how many messages of kind were passed on.
func (g *natsGate) count(kind string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts[kind]
}

// phase returns the phase of the last state write passed on since the
// last call, and forgets it.
func (g *natsGate) phase() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	last := g.last
	g.last = ""
	return phase[last]
}

func (g *natsGate) serve(client net.Conn) {
	srv, err := net.Dial("tcp", g.upstream)
	if err != nil {
		_ = client.Close()
		return
	}
	g.mu.Lock()
	g.conns = append(g.conns, client, srv)
	g.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		g.backward(srv, client)
		_ = client.Close()
	})
	g.forward(client, srv)
	_ = srv.Close()
	_ = client.Close()
	wg.Wait()
}

// forward copies the client's protocol messages to the server, whole
// messages at a time: an operation line, and for PUB and HPUB the payload
// whose size ends the line.
func (g *natsGate) forward(client, srv net.Conn) {
	r := bufio.NewReaderSize(client, 64<<10)
	w := bufio.NewWriterSize(srv, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		msg, subject, kind := line, "", ""
		if f := bytes.Fields(line); len(f) >= 3 && (bytes.EqualFold(f[0], []byte("PUB")) || bytes.EqualFold(f[0], []byte("HPUB"))) {
			subject = string(f[1])
			n, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil {
				return
			}
			payload := make([]byte, n+2) // and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			kind = g.kindOf(subject, payload)
			msg = append(msg, payload...)
		}
		if g.hold(subject, kind) {
			_ = w.Flush()
			_, _ = io.Copy(io.Discard, r)
			return
		}
		if _, err := w.Write(msg); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// backward copies what the server sends to the client, waiting while a
// stall is on.
func (g *natsGate) backward(srv, client net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := srv.Read(buf)
		if n > 0 {
			g.mu.Lock()
			wait := time.Until(g.until)
			g.mu.Unlock()
			if wait > 0 {
				<-time.After(wait)
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stallAt arms the gate to hold what the server sends for hold once the
// client's messages of kind number at; the returned channel is closed
// when the stall begins.
func (g *natsGate) stallAt(kind string, at int, hold time.Duration) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stall = &gateStall{kind: kind, at: at, hold: hold, on: make(chan struct{})}
	return g.stall.on
}

// hold reports whether the message must be held, and counts it if not.
func (g *natsGate) hold(subject, kind string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.holding && kind != "" && g.pick != nil && g.pick(kind) {
		g.holding = true
		close(g.held)
	}
	if !g.holding && kind != "" {
		g.counts[kind]++
		g.last = kind
		if st := g.stall; st != nil && kind == st.kind && g.counts[kind] >= st.at {
			g.until, g.stall = time.Now().Add(st.hold), nil
			close(st.on)
		}
	}
	return g.holding
}

// nth picks the (n+1)th message of a kind (see writeKind), so that
// exactly n of them get through.
func nth(kind string, n int) func(string) bool {
	seen := 0
	return func(k string) bool {
		if k != kind {
			return false
		}
		seen++
		return seen > n
	}
}

func TestKillNineAnywhere(t *testing.T) {
	t.Parallel()
	const (
		token    = "kill-token"
		restarts = 10
		maxDelay = 1500 * time.Millisecond
	)
	seed := simtest.Seed(t, 20261201)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))

	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	st := newStateView(t, nc)
	gate := startGate(t, srv.ClientURL())
	api := apisim.NewServer(apisim.Options{Token: token, Seed: int64(seed)})
	t.Cleanup(api.Close)
	w := newWorld(api.Sim, crashMeetings)
	lst := watchListings(api.Sim)
	env := crashEnv(api.URL, token, gate.URL())

	// churn starts a few meetings and ends a few.
	churn := func() {
		w.start(1 + rng.IntN(4))
		w.endSome(t, rng, st, 1+rng.IntN(4))
	}

	kills, beforeFirstCommit := 0, 0
	phases := map[string]int{}
	for i := range restarts {
		rev, _ := st.meta()
		firstCommitted := rev != 0
		p := startMeetwatch(t, env, "run")
		gate.phase()
		begun := time.Now()
		metas := gate.count(kindMeta)

		// The first two kills aim at the first snapshot, mid-publish and
		// mid-record (of the snapshot, or of its repair), for as long as
		// it is not committed. Then kills alternate: after a random delay
		// from the first listing, with the world changing a little
		// meanwhile; or aimed into a larger change, once a random number
		// of its intents, events or records went out.
		var (
			fired  func() bool
			what   string
			churns []time.Duration
		)
		switch {
		case i == 0:
			target := 1 + rng.IntN(crashMeetings-1)
			what = "once " + strconv.Itoa(target) + " events were sent"
			fired = func() bool { return gate.count(kindEvent) >= target }
		case i == 1 && !firstCommitted:
			target := gate.count(kindRecord) + 1 + rng.IntN(crashMeetings/2)
			what = "once " + strconv.Itoa(target) + " records were written"
			fired = func() bool { return gate.count(kindRecord) >= target || gate.count(kindMeta) > metas }
		case i%2 == 1:
			from := lst.count()
			require.Eventually(t, func() bool { return lst.count() > from || p.exited() },
				eventWait, tick, "waiting for restart %d to poll", i)
			begun, metas = time.Now(), gate.count(kindMeta)
			starting, ending := 20+rng.IntN(80), 20+rng.IntN(80)
			kind, writes := kindEvent, starting+ending
			switch rng.IntN(3) {
			case 0:
				kind, writes = kindIntent, starting
			case 1:
				kind = kindRecord
			}
			target := gate.count(kind) + 1 + rng.IntN(writes)
			what = fmt.Sprintf("once %d %s writes went out after %d starts and %d ends", target, kind, starting, ending)
			w.start(starting)
			w.endSome(t, rng, st, ending)
			fired = func() bool { return gate.count(kind) >= target || gate.count(kindMeta) > metas+2 }
		default:
			from := lst.count()
			require.Eventually(t, func() bool { return lst.count() > from || p.exited() },
				eventWait, tick, "waiting for restart %d to poll", i)
			begun = time.Now()
			delay := time.Duration(rng.Int64N(int64(maxDelay)))
			what = delay.Round(time.Millisecond).String() + " after its first listing"
			fired = func() bool { return time.Since(begun) >= delay }
			for range 1 + rng.IntN(3) {
				churns = append(churns, time.Duration(rng.Int64N(int64(delay)+1)))
			}
		}
		for !fired() {
			require.False(t, p.exited(), "meetwatch exited (code %d); stderr:\n%s", p.code, p.stderr)
			require.Less(t, time.Since(begun), eventWait, "kill %d never fired: %s", i, what)
			for len(churns) > 0 && time.Since(begun) >= churns[0] {
				churns = churns[1:]
				churn()
			}
			time.Sleep(time.Millisecond)
		}
		kill9(t, p)
		kills++
		at := gate.phase()
		phases[at]++

		metaRev, metaMeetings := st.meta()
		if metaRev == 0 {
			beforeFirstCommit++
		}
		t.Logf("kill %d, %s, %s: stream %d events, meta revision %d (%d meetings)",
			i+1, what, at, streamLen(nc, crashStream), metaRev, metaMeetings)

		// While nothing runs: a meeting starts and ends unseen, another
		// starts, and one ends.
		fleeting := w.start(2)[0]
		w.end(t, fleeting)
		w.endSome(t, rng, st, 1)
	}

	last := startMeetwatch(t, env, "run")
	msgs := settle(t, nc, st, api.Sim)
	last.stop(t, syscall.SIGTERM)

	f := checkTruth(t, msgs, w, nil)
	events := 0
	for _, n := range f.started {
		events += n
	}
	for _, e := range f.ended {
		events += len(e)
	}
	assert.Equal(t, len(msgs), events, "every message is a started or an ended")
	var where []string
	for _, ph := range []string{"before its first write", "recording intents", "publishing", "recording", "between polls"} {
		if phases[ph] > 0 {
			where = append(where, ph+" "+strconv.Itoa(phases[ph]))
		}
	}
	t.Logf("crash: transitions checked %d, events lost %d, duplicates %d, kills %d (%s; %d before the first snapshot was committed); meetings %d, ended %d, unseen %d",
		f.transitions, f.lost, f.duplicates, kills, strings.Join(where, ", "), beforeFirstCommit, len(w.added), len(w.ended), f.neither)
}

// crashRig is one crash point's world: a NATS server, a simulated API with
// a large first snapshot, and a gate in front of the server.
type crashRig struct {
	t    *testing.T
	srv  *server.Server
	nc   *nats.Conn
	st   *stateView
	api  *apisim.Server
	w    *world
	lst  *listings
	gate *natsGate
	rng  *rand.Rand
}

func newCrashRig(t *testing.T, token string) *crashRig {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	seed := simtest.Seed(t, 11)
	api := apisim.NewServer(apisim.Options{Token: token, Seed: int64(seed)})
	t.Cleanup(api.Close)
	return &crashRig{
		t: t, srv: srv, nc: nc, st: newStateView(t, nc), api: api,
		w: newWorld(api.Sim, rigMeetings), lst: watchListings(api.Sim),
		gate: startGate(t, srv.ClientURL()), rng: rand.New(rand.NewPCG(seed, seed+1)),
	}
}

// start runs meetwatch, through the gate or straight to the server.
func (r *crashRig) start(viaGate bool) *process {
	r.t.Helper()
	url := r.srv.ClientURL()
	if viaGate {
		url = r.gate.URL()
	}
	env := crashEnv(r.api.URL, "rig-token", url)
	// A lease of a second leaves a renewal 0.9 s: on a loaded machine,
	// under the race detector, renewals missed that, and the replica
	// stood down again and again before the crash point came. A restart
	// after SIGKILL waits for the lease to lapse, 3 s.
	env["MEETWATCH_LEASE_TTL"] = "3s"
	return startMeetwatch(r.t, env, "run")
}

// waitHeld waits for the gate to hold a message.
func (r *crashRig) waitHeld(held <-chan struct{}) {
	r.t.Helper()
	select {
	case <-held:
	case <-time.After(eventWait):
		require.FailNow(r.t, "the gate never held a message")
	}
}

// restart starts a fresh meetwatch, lets it settle, stops it, and checks
// the stream. It returns the process and the tally.
func (r *crashRig) restart(owed map[string]bool) (*process, tally, []message) {
	r.t.Helper()
	p := r.start(false)
	msgs := settle(r.t, r.nc, r.st, r.api.Sim)
	p.stop(r.t, syscall.SIGTERM)
	return p, checkTruth(r.t, msgs, r.w, owed), msgs
}

func TestCrashPoints(t *testing.T) {
	t.Parallel()

	t.Run("acknowledged, not recorded", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		held := r.gate.holdFrom(nth(kindRecord, 0))
		p := r.start(true)
		r.waitHeld(held)
		require.Equal(t, rigMeetings, streamLen(r.nc, crashStream), "every event acknowledged before the records")
		kill9(t, p)
		assert.Len(t, r.st.keys(t, "m."), rigMeetings, "every start recorded as an intent before it was published")
		assert.False(t, r.st.hasMeta(t), "no meta key")

		again, f, _ := r.restart(nil)
		started, _, dups := firstCommit(t, again)
		assert.Equal(t, rigMeetings, started, "the restart publishes every intent again")
		assert.Equal(t, rigMeetings, dups, "and JetStream drops every copy")
		t.Logf("crash: acknowledged, not recorded: transitions checked %d, events lost %d, duplicates %d, republished and dropped %d, kills 1",
			f.transitions, f.lost, f.duplicates, dups)
	})

	t.Run("recorded, not committed", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		held := r.gate.holdFrom(nth(kindMeta, 0))
		p := r.start(true)
		r.waitHeld(held)
		require.Equal(t, rigMeetings, r.gate.count(kindRecord), "every record written before the commit")
		kill9(t, p)
		assert.False(t, r.st.hasMeta(t), "no meta key")

		again, f, _ := r.restart(nil)
		started, _, dups := firstCommit(t, again)
		assert.Zero(t, started, "the records say every start was announced")
		assert.Zero(t, dups)
		t.Logf("crash: recorded, not committed: transitions checked %d, events lost %d, duplicates %d, kills 1",
			f.transitions, f.lost, f.duplicates)
	})

	t.Run("mid-publish of the first snapshot", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		const landed = rigMeetings / 2
		held := r.gate.holdFrom(nth(kindEvent, landed))
		p := r.start(true)
		r.waitHeld(held)
		require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) == landed },
			eventWait, tick, "waiting for %d events to land", landed)
		kill9(t, p)
		assert.Len(t, r.st.keys(t, "m."), rigMeetings, "every start recorded before it was published")
		assert.False(t, r.st.hasMeta(t), "no meta key")

		again, f, _ := r.restart(nil)
		started, _, dups := firstCommit(t, again)
		assert.Equal(t, rigMeetings, started, "the restart publishes every recorded start")
		assertDropped(t, again, landed, rigMeetings, dups, "and JetStream drops the copies of those that went out")
		t.Logf("crash: mid-publish (%d of %d events, no meta): transitions checked %d, events lost %d, duplicates %d, republished and dropped %d, kills 1",
			landed, rigMeetings, f.transitions, f.lost, f.duplicates, dups)
	})

	t.Run("mid-commit of a later poll", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		p := r.start(true)
		waitForLen(t, r.nc, rigMeetings)
		waitForCommits(t, r.st, 1)
		_, metaBefore := r.st.meta()
		require.Equal(t, rigMeetings, metaBefore)

		// The starts of the change are recorded as intents before their
		// events, and every record of the change is written after them:
		// two of the ends' land. The ends are missed by one listing, with
		// no lookup to confirm them, and come with the next, which also
		// sees the starts: one poll holds the whole change.
		const starts, ends, landed = 30, 4, 2
		r.lst.lookupsFail.Store(true)
		blocked, release := r.lst.holdNext(t)
		waitBlocked(t, blocked)
		ended := r.w.endSome(t, r.rng, r.st, ends)
		require.Len(t, ended, ends)
		// The poll after the one that misses them waits, so that the
		// meetings stay missing until the change is complete.
		blocked, releaseNext := r.lst.holdNext(t)
		release()
		require.Eventually(t, func() bool {
			missing := r.st.keys(t, "e.")
			for _, id := range ended {
				if !missing[id] {
					return false
				}
			}
			return true
		}, eventWait, tick, "waiting for a poll to miss the %d ended meetings", ends)
		waitBlocked(t, blocked)
		held := r.gate.holdFrom(nth(kindRecord, landed))
		added := r.w.start(starts)
		intentsBefore := r.gate.count(kindIntent)
		releaseNext()
		r.waitHeld(held)
		// In the diff's order, the ends' records come before the starts'.
		intents := r.gate.count(kindIntent) - intentsBefore
		require.Equal(t, starts, intents, "every intent before the first event")
		require.Eventually(t, func() bool {
			keys := r.st.keys(t, "m.")
			gone, recorded := 0, 0
			for _, id := range ended {
				if !keys[id] {
					gone++
				}
			}
			for _, id := range added {
				if keys[id] {
					recorded++
				}
			}
			return gone == landed && recorded == intents
		}, eventWait, tick, "waiting for %d of the %d starts and %d of the %d ends to land", intents, starts, landed, ends)
		kill9(t, p)
		_, metaAfter := r.st.meta()
		assert.Equal(t, metaBefore, metaAfter, "the meta key is the previous poll's")
		out := streamLen(r.nc, crashStream) - rigMeetings
		require.GreaterOrEqual(t, out, ends, "every end's event acknowledged before its key")
		startsOut := out - ends

		again, f, _ := r.restart(nil)
		started, endedN, dups := allCommits(again)
		assert.Equal(t, starts, started, "the restart publishes the starts no commit covered")
		assert.Equal(t, ends-landed, endedN, "and the ends whose keys did not go")
		assertDropped(t, again, startsOut+ends-landed, starts+ends-landed, dups, "and JetStream drops every copy of those already out")
		t.Logf("crash: mid-commit of a later poll (%d of %d end writes, %d of %d start keys): transitions checked %d, events lost %d, duplicates %d, republished and dropped %d, kills 1",
			landed, ends, intents, starts, f.transitions, f.lost, f.duplicates, dups)
	})

	t.Run("between two polls", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		p := r.start(false)
		waitForLen(t, r.nc, rigMeetings)
		waitForCommits(t, r.st, 1)

		added := r.w.start(2)
		ended := r.w.endSome(t, r.rng, r.st, 3)
		require.Len(t, ended, 3)
		waitForLen(t, r.nc, rigMeetings+5)
		blocked, release := r.lst.holdNext(t)
		waitBlocked(t, blocked)
		// The next poll has begun, so the one before it returned; it
		// committed the five transitions.
		keys := r.st.keys(t, "m.")
		for _, id := range added {
			assert.True(t, keys[id], "started %s committed", id)
		}
		for _, id := range ended {
			assert.False(t, keys[id], "ended %s committed", id)
		}
		_, metaMeetings := r.st.meta()
		assert.Equal(t, rigMeetings-1, metaMeetings)
		kill9(t, p)
		release()

		// While nothing runs, two committed meetings end and one starts.
		r.w.start(1)
		require.Len(t, r.w.endSome(t, r.rng, r.st, 2), 2)

		again, f, _ := r.restart(nil)
		started, endedN, dups := firstCommit(t, again)
		assert.Equal(t, 1, started)
		assert.Equal(t, 2, endedN)
		assert.Zero(t, dups, "nothing to publish again")
		t.Logf("crash: between two polls: transitions checked %d, events lost %d, duplicates %d, kills 1",
			f.transitions, f.lost, f.duplicates)
	})

	t.Run("mid-intents of the first snapshot", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		const landed = rigMeetings / 2
		held := r.gate.holdFrom(nth(kindIntent, landed))
		p := r.start(true)
		r.waitHeld(held)
		require.Eventually(t, func() bool { return len(r.st.keys(t, "m.")) == landed },
			eventWait, tick, "waiting for %d recorded starts to land", landed)
		kill9(t, p)
		assert.Zero(t, streamLen(r.nc, crashStream), "nothing published yet")
		assert.False(t, r.st.hasMeta(t), "no meta key")

		_, f, msgs := r.restart(nil)
		// Every meeting was running when meetwatch first looked, so every
		// started event is initial.
		notInitial := 0
		for _, m := range msgs {
			if !m.Event.Data.Initial {
				notInitial++
			}
		}
		t.Logf("crash: mid-intents (%d of %d recorded starts): transitions checked %d, events lost %d, duplicates %d, first-snapshot started events not marked initial %d, kills 1",
			landed, rigMeetings, f.transitions, f.lost, f.duplicates, notInitial)
		assert.Zero(t, notInitial, "every started event of the first snapshot is initial, across the kill")
	})

	t.Run("partial first publish, then ends", func(t *testing.T) {
		t.Parallel()
		r := newCrashRig(t, "rig-token")
		const landed = rigMeetings / 2
		held := r.gate.holdFrom(nth(kindEvent, landed))
		p := r.start(true)
		r.waitHeld(held)
		require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) == landed },
			eventWait, tick, "waiting for %d events to land", landed)
		kill9(t, p)

		// Every meeting's start is recorded, half are announced, and there
		// is no meta key. Two of each half end now.
		announced := map[string]bool{}
		for _, m := range storedMessages(t, r.nc, crashStream) {
			announced[m.Event.Subject] = true
		}
		var were, werent []string
		for _, id := range r.w.added {
			switch {
			case announced[id] && len(were) < 2:
				were = append(were, id)
			case !announced[id] && len(werent) < 2:
				werent = append(werent, id)
			}
		}
		owed := map[string]bool{}
		for _, id := range append(were, werent...) {
			r.w.end(t, id)
			owed[id] = true
		}

		// A restart publishes the rest of the starts and the four ends,
		// then stops cleanly; after that, nothing is left to redo.
		second := r.start(false)
		waitForLen(t, r.nc, rigMeetings+len(owed))
		settle(t, r.nc, r.st, r.api.Sim)
		second.stop(t, syscall.SIGTERM)

		third, f, _ := r.restart(owed)
		var redone []string
		for _, l := range third.stderr.Lines() {
			if strings.Contains(l, "pending events published again") {
				redone = append(redone, l)
			}
		}
		var noLastSeen []string
		published := 0
		for id := range owed {
			e := f.ended[id]
			if !assert.Len(t, e, 1, "ended events for %s, recorded as started before the crash", id) {
				continue
			}
			published++
			if e[0].Data.LastSeen == nil {
				noLastSeen = append(noLastSeen, id)
				continue
			}
			assertLastSeen(t, e[0])
		}
		t.Logf("crash: partial first publish, then ends: transitions checked %d, events lost %d, duplicates %d, kills 1; "+
			"ended while down %d, published %d, without lastSeen %d; restarts after a clean stop that redid pending starts %d",
			f.transitions, f.lost, f.duplicates, len(owed), published, len(noLastSeen), len(redone))
		assert.Empty(t, noLastSeen, "after a first poll cut short (no meta key), ended events without lastSeen")
		assert.Empty(t, redone, "a restart after a clean stop redid pending starts")
	})
}

// TestHeldAcknowledgementsFailNoPoll: the server's answers are held for
// 1 s in the middle of a poll of 100 started meetings, and for 4 s in the
// middle of the next, as while a clustered stream elects a leader or a disk
// syncs slowly. Each step of a poll waits for its acknowledgements before
// the next sends, within one window, so neither poll fails: the stream
// holds every event once, and the state every meeting, recorded.
func TestHeldAcknowledgementsFailNoPoll(t *testing.T) {
	t.Parallel()
	const token, batch = "held-token", 100
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	st := newStateView(t, nc)
	gate := startGate(t, srv.ClientURL())
	api := apisim.NewServer(apisim.Options{Token: token, Seed: 19})
	t.Cleanup(api.Close)
	env := crashEnv(api.URL, token, gate.URL())
	delete(env, "MEETWATCH_LEASE_TTL") // the default, 10 s: the lease outlives the holds

	var p *process
	for i, hold := range []time.Duration{time.Second, 4 * time.Second} {
		stalled := gate.stallAt(kindEvent, gate.count(kindEvent)+batch/2, hold)
		api.Sim.AddN(batch)
		if p == nil {
			p = startMeetwatch(t, env, "run")
		}
		select {
		case <-stalled:
		case <-time.After(eventWait):
			require.FailNow(t, "the answers were never held", "poll %d", i+1)
		}
		require.Eventually(t, func() bool { _, n := st.meta(); return n == (i+1)*batch },
			eventWait, tick, "waiting for poll %d to commit", i+1)
	}
	p.stop(t, syscall.SIGTERM)

	assert.NotContains(t, p.stderr.String(), "poll failed")
	msgs := storedMessages(t, nc, crashStream)
	started := map[string]int{}
	for _, m := range msgs {
		assert.Equal(t, "meetwatch.meeting.started", m.Event.Type)
		started[m.Event.Subject]++
	}
	assert.Len(t, msgs, 2*batch, "every event once")
	assert.Len(t, started, 2*batch)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	state, err := kvstore.Read(t.Context(), js, stateBucket, "")
	require.NoError(t, err)
	assert.Len(t, state.Snapshot, 2*batch, "every meeting recorded")
	assert.Empty(t, state.Pending)
	t.Logf("acknowledgements held 1 s and 4 s mid-poll: %d events, %d meetings recorded, failed polls %d",
		len(msgs), len(state.Snapshot), strings.Count(p.stderr.String(), "poll failed"))
}

// startNATSAt runs a JetStream server on a given loopback port with its
// files in dir, so that a test can stop it and start it again where its
// clients expect it. It is shut down when the test ends.
func startNATSAt(tb testing.TB, port int, dir string) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	require.NoError(tb, err, "configuring nats-server")
	go s.Start()
	require.True(tb, s.ReadyForConnections(10*time.Second), "nats-server did not start on port %d", port)
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// outageLine matches a log line about NATS being gone.
var outageLine = regexp.MustCompile(`(?i)disconnect|unreachable|cannot reach|connection closed|no responders|timeout|timed out|deadline exceeded`)

// outageRig is a NATS server that a test can stop and start again where
// meetwatch expects it, and a simulated API with its ground truth. The
// server runs in the test's process, or, when natsBin is set, as a
// nats-server process of its own, which stop kills with SIGKILL.
type outageRig struct {
	port    int
	dir     string
	srv     *server.Server
	natsBin string
	proc    *child
	nc      *nats.Conn
	st      *stateView
	api     *apisim.Server
	w       *world
	rng     *rand.Rand
	token   string
}

func newOutageRig(t *testing.T, token string, meetings int, defaultSeed uint64) *outageRig {
	r := &outageRig{port: freePort(t), dir: t.TempDir(), token: token}
	r.start(t)
	seed := simtest.Seed(t, defaultSeed)
	r.api = apisim.NewServer(apisim.Options{Token: token, Seed: int64(seed)})
	t.Cleanup(r.api.Close)
	r.w = newWorld(r.api.Sim, meetings)
	r.rng = rand.New(rand.NewPCG(seed, seed+1))
	return r
}

// newKilledOutageRig is newOutageRig with the server as a process of its
// own, which stop kills with SIGKILL.
func newKilledOutageRig(t *testing.T, token string, meetings int, defaultSeed uint64) *outageRig {
	r := &outageRig{port: freePort(t), dir: t.TempDir(), token: token, natsBin: natsServerBinary(t)}
	r.start(t)
	seed := simtest.Seed(t, defaultSeed)
	r.api = apisim.NewServer(apisim.Options{Token: token, Seed: int64(seed)})
	t.Cleanup(r.api.Close)
	r.w = newWorld(r.api.Sim, meetings)
	r.rng = rand.New(rand.NewPCG(seed, seed+1))
	return r
}

func (r *outageRig) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.port) }

func (r *outageRig) env() map[string]string { return crashEnv(r.api.URL, r.token, r.url()) }

// start starts the server, and connects the test to it; it returns when
// the server accepted the test's connection.
func (r *outageRig) start(t *testing.T) time.Time {
	if r.natsBin == "" {
		r.srv = startNATSAt(t, r.port, r.dir)
		at := time.Now()
		r.nc = natstest.Connect(t, r.srv)
		r.st = newStateView(t, r.nc)
		return at
	}
	r.proc = startChild(t, "nats-server", r.natsBin, nil,
		"-a", "127.0.0.1", "-p", strconv.Itoa(r.port), "-js", "-sd", r.dir)
	var nc *nats.Conn
	require.Eventually(t, func() bool {
		var err error
		nc, err = nats.Connect(r.url(), nats.MaxReconnects(-1))
		return err == nil
	}, eventWait, 5*time.Millisecond, "nats-server did not accept connections on port %d", r.port)
	at := time.Now()
	t.Cleanup(nc.Close)
	r.nc = nc
	r.st = newStateView(t, r.nc)
	return at
}

// stop shuts the server down, or kills its process with SIGKILL; it
// returns when it is gone.
func (r *outageRig) stop() time.Time {
	r.nc.Close()
	if r.proc != nil {
		_ = r.proc.cmd.Process.Kill() // it may have died already; done says when it is gone
		<-r.proc.done
		return time.Now()
	}
	r.srv.Shutdown()
	r.srv.WaitForShutdown()
	return time.Now()
}

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// natsServerBinary builds nats-server, once per test binary, from the
// module go.mod requires: meetwatch's own build compiled its packages
// already, so this is mostly a link.
func natsServerBinary(tb testing.TB) string {
	tb.Helper()
	natsServerOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			natsServerErr = err
			return
		}
		natsServerBin = filepath.Join(filepath.Dir(binary), "nats-server")
		out, err := exec.Command(goTool, "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("building nats-server: %w: %s", err, out)
		}
	})
	require.NoError(tb, natsServerErr)
	return natsServerBin
}

// churn ends three live meetings and starts two.
func (r *outageRig) churn(t *testing.T) (ended, added []string) {
	for range 3 {
		id := r.w.live[r.rng.IntN(len(r.w.live))]
		r.w.end(t, id)
		ended = append(ended, id)
	}
	return ended, r.w.start(2)
}

// checkAfter checks that the stream holds, after the first meetings
// events, exactly the transitions of churn, and returns them.
func checkAfter(t *testing.T, msgs []message, meetings int, ended, added []string) []message {
	t.Helper()
	require.Len(t, msgs, meetings+len(ended)+len(added), "nothing but the transitions of the outage, once each")
	after := msgs[meetings:]
	var gotStarted, gotEnded []string
	for _, m := range after {
		switch m.Event.kind() {
		case "started":
			gotStarted = append(gotStarted, m.Event.Subject)
			assert.False(t, m.Event.Data.Initial)
		case "ended":
			gotEnded = append(gotEnded, m.Event.Subject)
		}
	}
	assert.ElementsMatch(t, added, gotStarted, "started after the outage")
	assert.ElementsMatch(t, ended, gotEnded, "ended after the outage")
	return after
}

func TestNATSOutage(t *testing.T) {
	t.Parallel()
	const (
		meetings = 20
		outage   = 3 * time.Second
	)
	r := newOutageRig(t, "outage-token", meetings, 5)
	lst := watchListings(r.api.Sim)
	mw := startMeetwatch(t, r.env(), "run")
	waitForMessages(t, r.nc, crashStream, meetings)
	waitForCommits(t, r.st, 2)

	logged := len(mw.stderr.Lines())
	down := r.stop()

	// Without NATS the lease cannot be renewed, so the watcher stops
	// polling; the world changes once it has.
	quietSince, seen := time.Now(), lst.count()
	require.Eventually(t, func() bool {
		if n := lst.count(); n != seen {
			seen, quietSince = n, time.Now()
		}
		return time.Since(quietSince) > 3*300*time.Millisecond
	}, eventWait, tick, "waiting for polls to stop")
	pollsDown := lst.count()
	ended, added := r.churn(t)
	for time.Since(down) < outage {
		require.False(t, mw.exited(), "meetwatch exited during the outage (code %d); stderr:\n%s", mw.code, mw.stderr)
		time.Sleep(tick)
	}
	assert.Equal(t, pollsDown, lst.count(), "no poll while NATS is down")
	duringOutage := mw.stderr.Lines()[logged:]

	up := r.start(t)
	waitForMessages(t, r.nc, crashStream, meetings+5)
	recovered := time.Since(up)
	msgs := settle(t, r.nc, r.st, r.api.Sim)
	require.False(t, mw.exited(), "meetwatch exited (code %d); stderr:\n%s", mw.code, mw.stderr)
	mw.stop(t, syscall.SIGTERM)

	f := checkTruth(t, msgs, r.w, nil)
	after := checkAfter(t, msgs, meetings, ended, added)
	// One poll published the five transitions: its starts at its
	// listing's time, and the ends its lookups confirmed once it was
	// committed, at theirs.
	at := map[string][]message{}
	for _, m := range after {
		at[m.Event.kind()] = append(at[m.Event.kind()], m)
	}
	for kind, ms := range at {
		for _, m := range ms {
			assert.Equal(t, ms[0].Event.Time, m.Event.Time, "one time for every %s event", kind)
		}
	}
	assert.True(t, eventTime(t, at["started"][0]).Before(eventTime(t, at["ended"][0])), "the lookups' ends after the listing's starts")

	var outageLines []string
	for _, l := range mw.stderr.Lines() {
		if outageLine.MatchString(l) {
			outageLines = append(outageLines, l)
		}
	}
	assert.NotEmpty(t, outageLines, "the outage is logged")
	polls := int(outage / (300 * time.Millisecond))
	assert.LessOrEqual(t, len(outageLines), 4, "the outage is logged once, not once per poll (%d polls):\n%s",
		polls, strings.Join(outageLines, "\n"))
	assert.LessOrEqual(t, len(duringOutage), 6, "lines logged during the outage:\n%s", strings.Join(duringOutage, "\n"))
	t.Logf("outage: down %s, events after reconnect %d (want 5), duplicates %d, lost %d, reconnected and published in %s, outage log lines %d, lines logged while down %d",
		outage, len(after), f.duplicates, f.lost, recovered.Round(10*time.Millisecond), len(outageLines), len(duringOutage))
	for _, l := range outageLines {
		t.Logf("  %s", l)
	}
}

// TestNATSRestartKeepsTheLeader: a nats-server process is killed with
// SIGKILL and started again 4 s later on the same store, as in production,
// with the default lease of 10 s. The leader retries its renewals until its
// own deadline, so it still leads when NATS answers again; the polls that
// failed meanwhile start again as soon as it reconnects. The transitions of
// the outage are published once, within a few seconds of the server's
// return.
func TestNATSRestartKeepsTheLeader(t *testing.T) {
	t.Parallel()
	const (
		meetings = 20
		outage   = 4 * time.Second
	)
	r := newKilledOutageRig(t, "restart-token", meetings, 9)
	env := r.env()
	env["MEETWATCH_POLL_INTERVAL"] = "200ms"
	delete(env, "MEETWATCH_LEASE_TTL") // the default, 10s
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, r.nc, crashStream, meetings)
	waitForCommits(t, r.st, 2)

	down := r.stop()
	ended, added := r.churn(t)
	time.Sleep(time.Until(down.Add(outage)))
	require.False(t, mw.exited(), "meetwatch exited during the outage (code %d); stderr:\n%s", mw.code, mw.stderr)

	up := r.start(t)
	require.Eventually(t, func() bool { return streamLen(r.nc, crashStream) > meetings },
		eventWait, 10*time.Millisecond, "waiting for the first event after the restart")
	first := time.Since(up)
	waitForMessages(t, r.nc, crashStream, meetings+5)
	msgs := settle(t, r.nc, r.st, r.api.Sim)
	mw.stop(t, syscall.SIGTERM)

	f := checkTruth(t, msgs, r.w, nil)
	checkAfter(t, msgs, meetings, ended, added)
	stderr := mw.stderr.String()
	assert.Equal(t, 1, strings.Count(stderr, `msg=leading`), "one term throughout: the leader rode the outage out")
	assert.NotContains(t, stderr, "stopped leading")
	assert.Less(t, first, 5*time.Second, "the first event after NATS is back")
	t.Logf("nats killed with SIGKILL and restarted: down %s, default lease; first event %s after the server accepted connections again (bound 5s), transitions checked %d, lost %d, duplicates %d, terms 1",
		outage, first.Round(10*time.Millisecond), f.transitions, f.lost, f.duplicates)
}
