package main

// These tests use meetwatch the way an operator does: they build the binary,
// start it as a separate process with nothing but environment variables and
// flags, point it at a real NATS server and a simulated meeting API on the
// loopback interface, and check what it publishes, stores and prints, and how
// it exits.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// binary is the meetwatch executable built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	waitBoundParallelism()
	os.Exit(buildAndRun(m))
}

// minParallel is how many of this package's tests run at once unless
// -test.parallel is given. They spend their time waiting for meetwatch
// processes and timers rather than computing, so running only GOMAXPROCS
// of them at once (go test's default) leaves the cores idle.
const minParallel = 4

// waitBoundParallelism raises -test.parallel to minParallel when it was not
// set on the command line.
func waitBoundParallelism() {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if f := flag.Lookup("test.parallel"); !set && f != nil {
		if n, err := strconv.Atoi(f.Value.String()); err == nil && n < minParallel {
			_ = f.Value.Set(strconv.Itoa(minParallel)) // a numeric string always parses
		}
	}
}

// buildAndRun builds the command into a temporary directory, runs the tests
// against it, and removes the directory.
func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meetwatch-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating a directory for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "finding the go command:", err)
		return 1
	}
	binary = filepath.Join(dir, "meetwatch")
	build := exec.Command(goTool, "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building meetwatch:", err)
		return 1
	}
	return m.Run()
}

// Timing shared by the tests. The poll interval is short so that every
// scenario takes a few seconds; the waits are generous upper bounds for a
// loaded machine, not expected durations.
const (
	pollInterval = "300ms"
	eventWait    = 15 * time.Second
	exitWait     = 5 * time.Second // the contract: a signal stops meetwatch within 5 s
	tick         = 25 * time.Millisecond
)

// process is a running meetwatch.
type process struct {
	cmd    *exec.Cmd
	stdout *simtest.Buffer
	stderr *simtest.Buffer
	done   chan struct{}
	code   int // exit code, set before done is closed
}

// startMeetwatch starts the binary with args and an environment made of
// PATH, HOME and env only, so that no MEETWATCH_* variable of the test's own
// environment leaks in. The process runs in a fresh directory and is killed
// when the test ends if it is still running; its output is logged if the
// test failed.
func startMeetwatch(tb testing.TB, env map[string]string, args ...string) *process {
	tb.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = tb.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, stdout: &simtest.Buffer{}, stderr: &simtest.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	require.NoError(tb, cmd.Start(), "starting meetwatch %s", strings.Join(args, " "))
	go func() {
		_ = cmd.Wait() // the exit code says what the tests need
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	tb.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("meetwatch %s (exit %d)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.code, p.stdout, p.stderr)
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the exit code, failing the test if the process is still
// running after timeout.
func (p *process) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		require.FailNow(tb, "meetwatch still running", "after %s; stderr:\n%s", timeout, p.stderr)
		return -1
	}
}

// stop sends sig and asserts that meetwatch exits with code 0 within 5 s.
func (p *process) stop(tb testing.TB, sig os.Signal) {
	tb.Helper()
	require.False(tb, p.exited(), "meetwatch exited before %v (code %d); stderr:\n%s", sig, p.code, p.stderr)
	require.NoError(tb, p.cmd.Process.Signal(sig))
	select {
	case <-p.done:
		assert.Equal(tb, 0, p.code, "exit code after %v; stderr:\n%s", sig, p.stderr)
	case <-time.After(exitWait):
		assert.Fail(tb, "meetwatch did not exit in time", "still running %s after %v", exitWait, sig)
	}
}

// startAPI starts a simulated meeting API with meetings ongoing.
func startAPI(tb testing.TB, token string, meetings int) *apisim.Server {
	tb.Helper()
	api := apisim.NewServer(apisim.Options{Token: token, Seed: 7})
	tb.Cleanup(api.Close)
	api.Sim.AddN(meetings)
	return api
}

// runEnv is the environment of `meetwatch run` against an API and a NATS
// URL. The poll timeout is set well above the short interval: by default a
// poll gets 90% of the interval, which a loaded test machine can overrun
// while publishing a first snapshot, and the tests below reason about which
// poll committed what.
func runEnv(apiURL, token, natsURL string) map[string]string {
	return map[string]string{
		"MEETWATCH_API_URL":       apiURL,
		"MEETWATCH_ACCESS_TOKEN":  token,
		"MEETWATCH_NATS_URL":      natsURL,
		"MEETWATCH_POLL_INTERVAL": pollInterval,
		"MEETWATCH_POLL_TIMEOUT":  "5s",
		"MEETWATCH_HTTP_ADDR":     "127.0.0.1:0",
		"MEETWATCH_LEASE_TTL":     "1s",
	}
}

// event is the CloudEvents envelope as a consumer decodes it, written out
// here rather than borrowed from the events package, so that a change of
// the wire format fails these tests.
type event struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            struct {
		Conference map[string]any `json:"conference"`
		Previous   map[string]any `json:"previous"`
		Changes    []struct {
			Field string          `json:"field"`
			Old   json.RawMessage `json:"old"`
			New   json.RawMessage `json:"new"`
		} `json:"changes"`
		Initial  bool    `json:"initial"`
		LastSeen *string `json:"lastSeen"`
	} `json:"data"`
}

// kind is the event kind read from the type.
func (e event) kind() string { return strings.TrimPrefix(e.Type, "meetwatch.meeting.") }

func (e event) changedFields() []string {
	var fields []string
	for _, c := range e.Data.Changes {
		fields = append(fields, c.Field)
	}
	return fields
}

// message is one stored message with its decoded body.
type message struct {
	Subject string
	Header  nats.Header
	Body    []byte
	Event   event
}

// storedMessages returns every message of stream, decoded.
func storedMessages(tb testing.TB, nc *nats.Conn, stream string) []message {
	tb.Helper()
	var out []message
	for _, m := range natstest.Messages(tb, nc, stream) {
		msg := message{Subject: m.Subject, Header: m.Header, Body: m.Data}
		require.NoError(tb, json.Unmarshal(m.Data, &msg.Event), "message %d on %s: %s", m.Sequence, m.Subject, m.Data)
		out = append(out, msg)
	}
	return out
}

// streamLen returns how many messages stream holds, and 0 while it does not
// exist. It never fails the test, so conditions polled by Eventually can
// call it.
func streamLen(nc *nats.Conn, stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	return int(st.CachedInfo().State.Msgs)
}

// waitForMessages waits until stream holds want messages and returns them.
func waitForMessages(tb testing.TB, nc *nats.Conn, stream string, want int) []message {
	tb.Helper()
	require.Eventually(tb, func() bool { return streamLen(nc, stream) >= want },
		eventWait, tick, "waiting for %d messages in stream %s", want, stream)
	msgs := storedMessages(tb, nc, stream)
	require.Len(tb, msgs, want, "messages in stream %s", stream)
	return msgs
}

// waitForPolls waits until the API has answered n more requests, which
// proves the watcher finished the polls before them: it polls one at a
// time, and one page holds every meeting of these small tests.
func waitForPolls(tb testing.TB, sim *apisim.Sim, n int) {
	tb.Helper()
	from := sim.Requests()
	require.Eventually(tb, func() bool { return sim.Requests() >= from+n },
		eventWait, tick, "waiting for %d more polls", n)
}

// byKind groups messages by event kind.
func byKind(msgs []message) map[string][]message {
	out := map[string][]message{}
	for _, m := range msgs {
		out[m.Event.kind()] = append(out[m.Event.kind()], m)
	}
	return out
}

// assertEnvelope checks what every event of a watcher polling apiURL must
// carry, on a stream whose subjects start with prefix.
func assertEnvelope(t *testing.T, m message, prefix, apiURL string) {
	t.Helper()
	e := m.Event
	host := strings.TrimPrefix(apiURL, "http://")
	assert.Equal(t, "1.0", e.SpecVersion)
	assert.NotEmpty(t, e.ID)
	assert.Equal(t, "meetwatch://"+host, e.Source)
	assert.Contains(t, []string{"started", "ended", "changed"}, e.kind(), "type %q", e.Type)
	assert.Equal(t, "application/json", e.DataContentType)
	_, err := time.Parse(time.RFC3339, e.Time)
	assert.NoError(t, err, "time %q is not RFC 3339", e.Time)
	assert.NotEmpty(t, e.Subject)
	assert.Equal(t, prefix+"."+e.kind()+"."+e.Subject, m.Subject, "NATS subject")
	assert.Equal(t, e.Subject, e.Data.Conference["confUUID"], "data.conference is the meeting's record")
	assert.Equal(t, e.ID, m.Header.Get("Nats-Msg-Id"), "Nats-Msg-Id header")
	assert.Equal(t, "application/cloudevents+json", m.Header.Get("Content-Type"), "Content-Type header")
}

func TestRunPublishesStartedEndedChanged(t *testing.T) {
	t.Parallel()
	const token = "run-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 5)
	ids := api.Sim.UUIDs()

	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_API_RATE"] = "0" // every vanished meeting is looked up: its end comes right after its poll
	lst := watchListings(api.Sim)
	mw := startMeetwatch(t, env, "run")

	started := waitForMessages(t, nc, "MEETINGS", 5)
	var gotIDs []string
	for _, m := range started {
		assertEnvelope(t, m, "meetings", api.URL)
		assert.Equal(t, "meetwatch.meeting.started", m.Event.Type)
		assert.True(t, m.Event.Data.Initial, "the first snapshot's started events are initial")
		gotIDs = append(gotIDs, m.Event.Subject)
	}
	assert.ElementsMatch(t, ids, gotIDs, "one started event per meeting")

	// One poll sees a meeting end, another change and a third start: the
	// listing's events go out as changed, then started, at the listing's
	// time; the end, which a lookup confirms once the poll is committed,
	// follows at the lookup's (docs/events.md).
	blocked, release := lst.holdNext(t)
	waitBlocked(t, blocked)
	endedID, changedID := ids[1], ids[3]
	oldRec, ok := api.Sim.Get(changedID)
	require.True(t, ok)
	require.True(t, api.Sim.End(endedID))
	require.True(t, api.Sim.Update(changedID, func(r apisim.Record) { r["subject"] = "Quarterly review, moved" }))
	startedID := api.Sim.AddN(1)[0]
	release()

	msgs := waitForMessages(t, nc, "MEETINGS", 8)
	var order []string
	for _, m := range msgs[5:] {
		assertEnvelope(t, m, "meetings", api.URL)
		order = append(order, m.Event.Type+" "+m.Event.Subject)
	}
	assert.Equal(t, []string{"meetwatch.meeting.changed " + changedID, "meetwatch.meeting.started " + startedID, "meetwatch.meeting.ended " + endedID}, order)
	assert.Equal(t, msgs[5].Event.Time, msgs[6].Event.Time, "one poll's events")
	assert.True(t, eventTime(t, msgs[6]).Before(eventTime(t, msgs[7])), "the end its lookup confirmed, observed after the listing")
	kinds := byKind(msgs[5:])
	require.Len(t, kinds["ended"], 1, "ended events")
	require.Len(t, kinds["changed"], 1, "changed events")

	ended := kinds["ended"][0].Event
	assert.Equal(t, endedID, ended.Subject)
	if assert.NotNil(t, ended.Data.LastSeen, "data.lastSeen on an ended event") {
		lastSeen, err := time.Parse(time.RFC3339, *ended.Data.LastSeen)
		require.NoError(t, err)
		at, err := time.Parse(time.RFC3339, ended.Time)
		require.NoError(t, err)
		assert.False(t, lastSeen.After(at), "lastSeen %s after the event's time %s", lastSeen, at)
	}

	changed := kinds["changed"][0].Event
	assert.Equal(t, changedID, changed.Subject)
	assert.Contains(t, changed.changedFields(), "subject")
	assert.Equal(t, "Quarterly review, moved", changed.Data.Conference["subject"])
	assert.Equal(t, oldRec["subject"], changed.Data.Previous["subject"], "data.previous is the record before")
	assert.False(t, changed.Data.Initial)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.KeyValue(t.Context(), "meetwatch-state")
	assert.NoError(t, err, "the default state bucket")

	mw.stop(t, syscall.SIGTERM)
	assert.Empty(t, mw.stdout.String(), "run logs to stderr only")
}

// eventTime returns m's event's time.
func eventTime(tb testing.TB, m message) time.Time {
	tb.Helper()
	at, err := time.Parse(time.RFC3339, m.Event.Time)
	require.NoError(tb, err)
	return at
}

func TestRunRestartResumesFromCommittedState(t *testing.T) {
	t.Parallel()
	const (
		token  = "restart-token"
		prefix = "acme.meetings"
		stream = "ACME_MEETINGS"
		bucket = "acme-state"
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 5)
	ids := api.Sim.UUIDs()
	env := runEnv(api.URL, token, srv.ClientURL())
	env["MEETWATCH_SUBJECT_PREFIX"] = prefix
	env["MEETWATCH_STREAM"] = stream
	env["MEETWATCH_STATE_BUCKET"] = bucket

	first := startMeetwatch(t, env, "run")
	for _, m := range waitForMessages(t, nc, stream, 5) {
		assertEnvelope(t, m, prefix, api.URL)
		assert.True(t, m.Event.Data.Initial)
	}
	// A poll begins only after the one before it has returned, so the
	// first poll has committed once a second one has started.
	waitForPolls(t, api.Sim, 1)
	first.stop(t, syscall.SIGTERM)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), bucket)
	require.NoError(t, err, "state bucket %s", bucket)
	status, err := kv.Status(t.Context())
	require.NoError(t, err)
	assert.NotZero(t, status.Values(), "the state bucket holds the committed snapshot")

	// While meetwatch is down, one meeting ends, one changes, one starts.
	endedID, changedID := ids[0], ids[2]
	require.True(t, api.Sim.End(endedID))
	require.True(t, api.Sim.Update(changedID, func(r apisim.Record) { r["subject"] = "Renamed while nobody watched" }))
	startedID := api.Sim.AddN(1)[0]

	second := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, stream, 8)
	waitForPolls(t, api.Sim, 2)
	msgs := storedMessages(t, nc, stream)
	require.Len(t, msgs, 8, "nothing more after the restart's first poll")

	added := byKind(msgs[5:])
	require.Len(t, added["ended"], 1)
	require.Len(t, added["changed"], 1)
	require.Len(t, added["started"], 1)
	assert.Equal(t, endedID, added["ended"][0].Event.Subject)
	assert.NotNil(t, added["ended"][0].Event.Data.LastSeen, "lastSeen comes from the committed state")
	assert.Equal(t, changedID, added["changed"][0].Event.Subject)
	assert.Contains(t, added["changed"][0].Event.changedFields(), "subject")
	assert.Equal(t, startedID, added["started"][0].Event.Subject)
	assert.False(t, added["started"][0].Event.Data.Initial, "a meeting started after the first snapshot is not initial")
	for _, m := range msgs[5:] {
		assertEnvelope(t, m, prefix, api.URL)
	}

	startedPerMeeting := map[string]int{}
	for _, m := range byKind(msgs)["started"] {
		startedPerMeeting[m.Event.Subject]++
	}
	want := map[string]int{startedID: 1}
	for _, id := range ids {
		want[id] = 1
	}
	assert.Equal(t, want, startedPerMeeting, "started events per confUUID over the whole stream")

	second.stop(t, syscall.SIGINT)
}

// simURL matches the line `meetwatch sim` prints once it listens.
var simURL = regexp.MustCompile(`simulated meeting API on (http://127\.0\.0\.1:\d+) \(token "([^"]*)"\)`)

// startTail starts `meetwatch tail` and waits until it is subscribed.
func startTail(tb testing.TB, natsURL string, args ...string) *process {
	tb.Helper()
	p := startMeetwatch(tb, map[string]string{"MEETWATCH_NATS_URL": natsURL}, append([]string{"tail"}, args...)...)
	require.Eventually(tb, func() bool { return strings.Contains(p.stderr.String(), "meetwatch tail:") },
		eventWait, tick, "waiting for tail %v to subscribe", args)
	return p
}

func TestSeparateProcessesSimRunTail(t *testing.T) {
	t.Parallel()
	const (
		token    = "sep-token"
		meetings = 4
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)

	sim := startMeetwatch(t, nil, "sim", "--addr", "127.0.0.1:0", "--token", token, "--meetings", strconv.Itoa(meetings), "--churn", "0")
	require.Eventually(t, func() bool { return simURL.MatchString(sim.stdout.String()) },
		eventWait, tick, "waiting for the simulator's address")
	m := simURL.FindStringSubmatch(sim.stdout.String())
	url := m[1]
	assert.Equal(t, token, m[2], "the token the simulator accepts")

	startedTail := startTail(t, srv.ClientURL(), "meetings.started.>")
	jsonTail := startTail(t, srv.ClientURL(), "--json")

	run := startMeetwatch(t, runEnv(url, token, srv.ClientURL()), "run")
	msgs := waitForMessages(t, nc, "MEETINGS", meetings)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		assertEnvelope(t, m, "meetings", url)
		ids[i] = m.Event.Subject
	}

	require.Eventually(t, func() bool { return len(startedTail.stdout.Lines()) >= meetings },
		eventWait, tick, "waiting for tail to print %d events", meetings)
	lines := startedTail.stdout.Lines()
	assert.Len(t, lines, meetings)
	for _, id := range ids {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, id) {
				n++
				assert.Contains(t, l, "started")
			}
		}
		assert.Equal(t, 1, n, "tail lines naming %s:\n%s", id, strings.Join(lines, "\n"))
	}

	// A late tail with --all replays what the stream already holds.
	replay := startTail(t, srv.ClientURL(), "--all", "--json", "meetings.started.>")

	for _, tail := range []*process{jsonTail, replay} {
		require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= meetings },
			eventWait, tick, "waiting for tail to print %d events", meetings)
		var gotIDs []string
		for _, l := range tail.stdout.Lines() {
			var e event
			if assert.NoError(t, json.Unmarshal([]byte(l), &e), "line %q", l) {
				assert.Equal(t, "1.0", e.SpecVersion)
				assert.Equal(t, "meetwatch.meeting.started", e.Type)
				gotIDs = append(gotIDs, e.Subject)
			}
		}
		assert.ElementsMatch(t, ids, gotIDs)
	}

	run.stop(t, syscall.SIGTERM)
	startedTail.stop(t, syscall.SIGINT)
	jsonTail.stop(t, syscall.SIGTERM)
	replay.stop(t, syscall.SIGTERM)
	sim.stop(t, syscall.SIGTERM)
}

// handedOut holds every port freePort returned. A test whose server is
// down for a while (an outage) leaves its port free, and a test beside it
// must not start a server of its own there meanwhile.
var handedOut sync.Map

// freePort reserves a loopback port that it has not returned before, and
// releases it for the caller to use.
func freePort(tb testing.TB) int {
	tb.Helper()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port
		}
	}
}

// awayPort returns a free loopback port outside the range the kernel hands
// out for port 0, for a server that a test keeps away for a while: no
// other test's freePort can be given it meanwhile, so meetwatch's dials
// are refused, rather than answered by another test's server.
func awayPort(tb testing.TB) int {
	tb.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	for range 100 {
		port := 10000 + rand.IntN(max(low-10000, 1))
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			require.NoError(tb, l.Close())
			return port
		}
	}
	require.FailNow(tb, "no free port below the ephemeral range")
	return 0
}

// connectWhenUp connects to a NATS server that a meetwatch process is
// starting.
func connectWhenUp(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	var (
		mu sync.Mutex
		nc *nats.Conn
	)
	require.Eventually(tb, func() bool {
		c, err := nats.Connect(url, nats.Name(tb.Name()))
		if err != nil {
			return false
		}
		mu.Lock()
		nc = c
		mu.Unlock()
		return true
	}, eventWait, tick, "waiting for NATS on %s", url)
	mu.Lock()
	defer mu.Unlock()
	tb.Cleanup(nc.Close)
	return nc
}

func TestRunEmbeddedNATS(t *testing.T) {
	t.Parallel()
	const token = "embedded-token"
	api := startAPI(t, token, 3)
	dataDir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := runEnv(api.URL, token, "")
	delete(env, "MEETWATCH_NATS_URL")
	env["MEETWATCH_EMBEDDED_NATS_LISTEN"] = listen
	env["MEETWATCH_DATA_DIR"] = dataDir

	mw := startMeetwatch(t, env, "run")
	nc := connectWhenUp(t, "nats://"+listen)
	msgs := waitForMessages(t, nc, "MEETINGS", 3)
	var gotIDs []string
	for _, m := range msgs {
		assertEnvelope(t, m, "meetings", api.URL)
		assert.Equal(t, "meetwatch.meeting.started", m.Event.Type)
		gotIDs = append(gotIDs, m.Event.Subject)
	}
	assert.ElementsMatch(t, api.Sim.UUIDs(), gotIDs)
	waitForPolls(t, api.Sim, 1)
	nc.Close()
	mw.stop(t, syscall.SIGTERM)

	var streamDirs []string
	var files int
	require.NoError(t, filepath.WalkDir(filepath.Join(dataDir, "jetstream"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && d.Name() == "MEETINGS":
			streamDirs = append(streamDirs, path)
		case d.Type().IsRegular():
			files++
		}
		return nil
	}), "JetStream files under the data dir")
	assert.NotEmpty(t, streamDirs, "the MEETINGS stream is stored in the data dir")
	assert.NotZero(t, files)

	// The same data dir after a restart: nothing is announced twice.
	again := startMeetwatch(t, env, "run")
	nc = connectWhenUp(t, "nats://"+listen)
	waitForPolls(t, api.Sim, 2)
	assert.Len(t, storedMessages(t, nc, "MEETINGS"), 3, "a restart on the same data dir republishes nothing")
	again.stop(t, syscall.SIGTERM)
}

func TestTokenNeverPrinted(t *testing.T) {
	t.Parallel()
	const rightToken = "Rt-7f3a9c1e-right-token"
	tests := []struct {
		name       string
		token      string
		wantEvents int
		wantStderr string
	}{
		{name: "refused token", token: "Wr-51b2d8e0-wrong-token", wantStderr: "the api refused the static access token, which cannot be renewed"},
		{name: "accepted token", token: rightToken, wantEvents: 2, wantStderr: "poll committed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := natstest.Start(t)
			nc := natstest.Connect(t, srv)
			api := startAPI(t, rightToken, 2)
			env := runEnv(api.URL, tt.token, srv.ClientURL())
			env["MEETWATCH_LOG_LEVEL"] = "debug"

			mw := startMeetwatch(t, env, "run")
			require.Eventually(t, func() bool { return strings.Contains(mw.stderr.String(), tt.wantStderr) },
				eventWait, tick, "waiting for %q on stderr", tt.wantStderr)
			waitForPolls(t, api.Sim, 2)
			mw.stop(t, syscall.SIGTERM)

			assert.Equal(t, tt.wantEvents, streamLen(nc, "MEETINGS"), "events published")
			assert.NotContains(t, mw.stderr.String(), tt.token)
			assert.NotContains(t, mw.stdout.String(), tt.token)
			assert.NotContains(t, mw.stderr.String(), rightToken)
			assert.NotContains(t, mw.stderr.String(), "renewing", "a static token cannot be renewed")
		})
	}
}

func TestBrokenPagePublishesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault apisim.Fault
	}{
		{name: "server error", fault: apisim.Fault{Status: http.StatusInternalServerError}},
		{name: "truncated body", fault: apisim.Fault{Body: `{"count": 12`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const (
				token    = "paging-token"
				meetings = 1234
			)
			srv := natstest.Start(t)
			nc := natstest.Connect(t, srv)
			api := startAPI(t, token, meetings)
			env := runEnv(api.URL, token, srv.ClientURL())
			env["MEETWATCH_PAGE_SIZE"] = "500"
			env["MEETWATCH_POLL_INTERVAL"] = "500ms"
			mw := startMeetwatch(t, env, "run")

			waitForMessages(t, nc, "MEETINGS", meetings)
			// A poll asks for the page at offset 0, then two more; a
			// request at offset 0 after the publishing poll's belongs to a
			// poll that begins only once the first has committed.
			waitForPolls(t, api.Sim, 1)

			var faulted atomic.Int64
			api.Sim.SetHook(func(r *http.Request) *apisim.Fault {
				if r.URL.Query().Get("offset") == "0" || r.URL.Query().Has("searchKey") {
					return nil
				}
				faulted.Add(1)
				f := tt.fault
				return &f
			})
			endedID := api.Sim.UUIDs()[42]
			require.True(t, api.Sim.End(endedID))
			from := faulted.Load()
			require.Eventually(t, func() bool { return faulted.Load() >= from+3 },
				eventWait, tick, "waiting for three polls to meet the broken page")
			assert.Equal(t, meetings, streamLen(nc, "MEETINGS"), "an incomplete listing publishes nothing")

			api.Sim.SetHook(nil)
			msgs := waitForMessages(t, nc, "MEETINGS", meetings+1)
			waitForPolls(t, api.Sim, 6)
			assert.Equal(t, meetings+1, streamLen(nc, "MEETINGS"), "one event once the listing is whole")
			last := msgs[len(msgs)-1]
			assert.Equal(t, "meetwatch.meeting.ended", last.Event.Type)
			assert.Equal(t, endedID, last.Event.Subject)
			assert.Equal(t, "meetings.ended."+endedID, last.Subject)
			assert.Len(t, byKind(msgs)["started"], meetings)
			mw.stop(t, syscall.SIGTERM)
		})
	}
}

func TestBadConfigurationExits2(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		command  string
		variable string
		value    string
		unset    bool
	}{
		{name: "poll interval not a duration", variable: "MEETWATCH_POLL_INTERVAL", value: "abc"},
		{name: "poll interval too short", variable: "MEETWATCH_POLL_INTERVAL", value: "10ms"},
		{name: "page size above 500", variable: "MEETWATCH_PAGE_SIZE", value: "501"},
		{name: "page size zero", variable: "MEETWATCH_PAGE_SIZE", value: "0"},
		{name: "page size not a number", variable: "MEETWATCH_PAGE_SIZE", value: "many"},
		{name: "query all not a bool", variable: "MEETWATCH_QUERY_ALL", value: "maybe"},
		{name: "duplicate window shorter than a restart", variable: "MEETWATCH_DUPLICATE_WINDOW", value: "1m"},
		{name: "api url not http", variable: "MEETWATCH_API_URL", value: "ftp://x"},
		{name: "access token missing", variable: "MEETWATCH_ACCESS_TOKEN", unset: true},
		{name: "subject prefix with a space", variable: "MEETWATCH_SUBJECT_PREFIX", value: "a b"},
		{name: "subject prefix with a wildcard", variable: "MEETWATCH_SUBJECT_PREFIX", value: "meetings.>"},
		{name: "stream name with a dot", variable: "MEETWATCH_STREAM", value: "MEET.INGS"},
		{name: "log level unknown", variable: "MEETWATCH_LOG_LEVEL", value: "loud"},
		{name: "log format unknown", variable: "MEETWATCH_LOG_FORMAT", value: "xml"},
		{name: "api time zone unknown", variable: "MEETWATCH_API_TIME_ZONE", value: "Mars/Olympus"},
		{name: "api time zone of the machine", variable: "MEETWATCH_API_TIME_ZONE", value: "Local"},
		{name: "embedded listen without a port", variable: "MEETWATCH_EMBEDDED_NATS_LISTEN", value: "localhost"},
		{name: "tail with a bad prefix", command: "tail", variable: "MEETWATCH_SUBJECT_PREFIX", value: "a b"},
		{name: "tail with a bad log level", command: "tail", variable: "MEETWATCH_LOG_LEVEL", value: "loud"},
		{name: "ls with a bad log format", command: "ls", variable: "MEETWATCH_LOG_FORMAT", value: "xml"},
		{name: "nats url with spaces", variable: "MEETWATCH_NATS_URL", value: "foo bar"},
		{name: "nats url of another scheme", variable: "MEETWATCH_NATS_URL", value: "nats://127.0.0.1:9,http://127.0.0.1:9"},
		{name: "tail with a nats url without a host", command: "tail", variable: "MEETWATCH_NATS_URL", value: "nats://:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A valid configuration that reaches nothing, in case a bad
			// value were accepted: the test then times out waiting for
			// the exit instead of talking to a real service.
			env := map[string]string{
				"MEETWATCH_API_URL":              "http://127.0.0.1:9",
				"MEETWATCH_ACCESS_TOKEN":         "config-token",
				"MEETWATCH_EMBEDDED_NATS_LISTEN": "127.0.0.1:0",
				"MEETWATCH_DATA_DIR":             t.TempDir(),
			}
			if tt.unset {
				delete(env, tt.variable)
			} else {
				env[tt.variable] = tt.value
			}
			command := "run"
			if tt.command != "" {
				command = tt.command
			}

			mw := rejectsConfiguration(t, env, command)
			stderr := mw.stderr.String()
			assert.True(t, strings.HasSuffix(stderr, "\n"), "stderr ends its line: %q", stderr)
			assert.Contains(t, stderr, tt.variable)
			assert.Empty(t, mw.stdout.String())
		})
	}
}

// rejectsConfiguration runs meetwatch with env, asserts that it exits 2
// with one line on stderr, as a bad configuration must, and returns what it
// printed for the caller's own checks of that line.
func rejectsConfiguration(tb testing.TB, env map[string]string, command string) ranInProcess {
	tb.Helper()
	mw := runInProcess(tb, env, command)
	stderr := mw.stderr.String()
	assert.Equal(tb, 2, mw.code, "exit code; stderr:\n%s", stderr)
	assert.Equal(tb, 1, strings.Count(stderr, "\n"), "stderr is one line:\n%s", stderr)
	return mw
}

// ranInProcess is what one in-process run of meetwatch printed, and how it
// exited.
type ranInProcess struct {
	code           int
	stdout, stderr *simtest.Buffer
}

// runInProcess calls run as main would, with env as the whole environment,
// for the tests that need no process of their own (configuration, help).
// A run that does not return within 10 s is stopped, as a bad value that
// were accepted would otherwise start watching.
func runInProcess(tb testing.TB, env map[string]string, args ...string) ranInProcess {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	r := ranInProcess{stdout: &simtest.Buffer{}, stderr: &simtest.Buffer{}}
	if env == nil {
		env = map[string]string{}
	}
	r.code = run(ctx, args, env, r.stdout, r.stderr)
	return r
}

func TestHelpAndUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // in stdout and stderr together
	}{
		{name: "help", args: []string{"--help"}, want: []string{"run", "demo", "tail", "audit", "sim"}},
		{name: "help command", args: []string{"help"}, want: []string{"run", "demo", "tail"}},
		{name: "run help", args: []string{"run", "--help"}, want: []string{"MEETWATCH_POLL_INTERVAL", "MEETWATCH_ACCESS_TOKEN", "MEETWATCH_NATS_URL", "MEETWATCH_STREAM"}},
		{name: "tail help", args: []string{"tail", "-h"}, want: []string{"--json", "--since", "RFC 3339", "MEETWATCH_NATS_URL"}},
		{name: "audit help", args: []string{"audit", "--help"}, want: []string{"--out", "--durable", "meetwatch-audit", "MEETWATCH_STREAM", "MEETWATCH_NATS_URL"}},
		{name: "sim help", args: []string{"sim", "--help"}, want: []string{"-addr", "-token"}},
		{name: "demo help", args: []string{"demo", "--help"}, want: []string{"-nats-listen"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, want: []string{`unknown command "frobnicate"`, "meetwatch --help"}},
		{name: "no command", args: nil, wantCode: 2, want: []string{"no command", "meetwatch --help"}},
		{name: "unknown flag", args: []string{"run", "--frobnicate"}, wantCode: 2, want: []string{"frobnicate"}},
		{name: "negative meetings, sim", args: []string{"sim", "--meetings", "-5"}, wantCode: 2, want: []string{"--meetings -5: must not be negative"}},
		{name: "negative meetings, demo", args: []string{"demo", "--meetings", "-1"}, wantCode: 2, want: []string{"--meetings -1: must not be negative"}},
		{name: "demo, extra argument", args: []string{"demo", "extra"}, wantCode: 2, want: []string{`unexpected argument "extra"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw := runInProcess(t, nil, tt.args...)
			got := mw.stdout.String() + mw.stderr.String()
			assert.Equal(t, tt.wantCode, mw.code, "exit code; output:\n%s", got)
			for _, w := range tt.want {
				assert.Contains(t, got, w)
			}
		})
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	mw := startMeetwatch(t, map[string]string{"TMPDIR": tmp},
		"demo", "--nats-listen", "127.0.0.1:0", "--interval", "300ms", "--churn", "200ms", "-v")

	started := func() int {
		n := 0
		for _, l := range mw.stdout.Lines() {
			if strings.Contains(l, "started") {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return started() > 0 }, 10*time.Second, tick, "waiting for started events")
	assert.True(t, slices.ContainsFunc(mw.stdout.Lines(), func(l string) bool {
		return strings.Contains(l, "started") && strings.Contains(l, "[already running]")
	}), "the meetings running at start are shown as already running:\n%s", mw.stdout)
	mw.stop(t, syscall.SIGINT)
	assert.Contains(t, mw.stderr.String(), "msg=leading", "info logs with --verbose")
	assert.NotContains(t, mw.stderr.String(), "serving probes", "a trial opens no port beyond its NATS")

	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, entries, "demo removes its data dir on exit")
}

// usageError is a command line that must exit 2 with want in its stderr.
type usageError struct {
	name string
	args []string
	want string
}

// assertUsageErrors runs each command line in process, each as a subtest.
func assertUsageErrors(t *testing.T, cases []usageError) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw := runInProcess(t, nil, tt.args...)
			assert.Equal(t, 2, mw.code)
			assert.Contains(t, mw.stderr.String(), tt.want)
		})
	}
}
