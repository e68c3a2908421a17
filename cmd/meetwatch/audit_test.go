package main

// These tests run `meetwatch audit` as a process against a real JetStream
// stream that they fill with events the way the daemon publishes them,
// kill it with SIGKILL at random moments and at chosen ones, and check the
// one thing an audit log promises: the file is the stream, line for
// message, in stream order, none missing and none twice. A line is the body
// byte for byte, or, for a body that is not one line of JSON, an
// audit_unreadable line that holds it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	auditStream  = "MEETINGS"
	auditDurable = "meetwatch-audit"
)

// streamRig is a JetStream server with the events stream, and a publisher
// that stores events in it as the daemon does: on meetings.<kind>.<token>,
// with the event id as Nats-Msg-Id.
type streamRig struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	pub  *publish.Publisher
	rng  *rand.Rand // the publisher's, under mu
	seed uint64

	mu sync.Mutex
	n  int // events published
}

func newStreamRig(t *testing.T, defaultSeed uint64) *streamRig {
	t.Helper()
	srv := natstest.Start(t)
	return newStreamRigOn(t, srv, natstest.Connect(t, srv), defaultSeed)
}

// newStreamRigOn is newStreamRig on a server of the test's, through nc.
func newStreamRigOn(t *testing.T, srv *server.Server, nc *nats.Conn, defaultSeed uint64) *streamRig {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pub, err := publish.New(nc, publish.Config{Stream: auditStream, Prefix: events.DefaultPrefix, Duplicates: time.Hour})
	require.NoError(t, err)
	require.NoError(t, pub.EnsureStream(t.Context()))
	seed := simtest.Seed(t, defaultSeed)
	return &streamRig{srv: srv, nc: nc, js: js, pub: pub, rng: rand.New(rand.NewPCG(seed, seed+1)), seed: seed}
}

func (r *streamRig) url() string { return r.srv.ClientURL() }

// publish stores n new events, of every kind, with records of different
// sizes so that lines differ in length.
func (r *streamRig) publish(tb testing.TB, n int) {
	tb.Helper()
	require.NoError(tb, r.tryPublish(tb.Context(), n))
}

// tryPublish is publish for a goroutine of its own, which may not fail the
// test itself.
func (r *streamRig) tryPublish(ctx context.Context, n int) error {
	r.mu.Lock()
	evs := make([]events.Event, n)
	kinds := []events.Kind{"started", "changed", "ended"}
	for i := range evs {
		k := r.n + i
		uuid := fmt.Sprintf("%032x", 0xa0d17000+k/3)
		conf, err := json.Marshal(map[string]any{
			"confUUID": uuid,
			"subject":  fmt.Sprintf("Audit %d", k),
			"notes":    strings.Repeat("x", r.rng.IntN(1500)),
		})
		if err != nil {
			r.mu.Unlock()
			return err
		}
		now := time.Now().UTC()
		evs[i] = events.Event{
			SpecVersion:     events.SpecVersion,
			ID:              fmt.Sprintf("%032x", 0x5eed0000+k),
			Source:          events.Source("127.0.0.1:1"),
			Type:            events.TypePrefix + string(kinds[k%3]),
			Subject:         uuid,
			Time:            now,
			DataContentType: events.DataContentType,
			DataSchema:      events.DataSchema(kinds[k%3]),
			Data:            events.Data{Conference: conf, Incarnation: 1},
		}
		switch kinds[k%3] {
		case events.Changed:
			evs[i].Data.Previous = conf
		case events.Ended:
			evs[i].Data.EndedAt = &now
		}
	}
	r.n += n
	r.mu.Unlock()
	res, err := r.pub.Publish(ctx, evs)
	if err != nil {
		return err
	}
	if res.Stored != n {
		return fmt.Errorf("%d of %d events stored", res.Stored, n)
	}
	return nil
}

// rawBody is a message published on the stream's subjects by something
// other than meetwatch.
type rawBody struct {
	subject string
	body    []byte
}

// oddBodies are bodies that are not one line of JSON: the audit log writes
// them as audit_unreadable lines.
var oddBodies = []rawBody{
	{subject: "meetings.note.pretty", body: []byte("{\n  \"id\": \"note-1\",\n  \"text\": \"pretty-printed by hand\"\n}\n")},
	{subject: "meetings.note.text", body: []byte("room 4 is free now")},
	{subject: "meetings.note.empty", body: []byte{}},
	{subject: "meetings.note.crlf", body: []byte("{\"id\":\"note-2\"}\r\n")},
}

// publishRaw stores bodies as they are, in order.
func (r *streamRig) publishRaw(tb testing.TB, bodies ...rawBody) {
	tb.Helper()
	require.NoError(tb, r.tryPublishRaw(tb.Context(), bodies...))
}

func (r *streamRig) tryPublishRaw(ctx context.Context, bodies ...rawBody) error {
	for _, b := range bodies {
		if _, err := r.js.Publish(ctx, b.subject, b.body); err != nil {
			return fmt.Errorf("publishing on %s: %w", b.subject, err)
		}
	}
	return nil
}

// publishing publishes a few events every few milliseconds, and now and
// then a body that is not one line of JSON, until the returned stop is
// called, which waits for the last publish.
func (r *streamRig) publishing(t *testing.T) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(4 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				r.mu.Lock()
				n, odd := 1+r.rng.IntN(4), r.rng.IntN(len(oddBodies)*3)
				r.mu.Unlock()
				if err := r.tryPublish(t.Context(), n); err != nil {
					t.Errorf("publishing: %v", err)
					return
				}
				if odd < len(oddBodies) {
					if err := r.tryPublishRaw(t.Context(), oddBodies[odd]); err != nil {
						t.Errorf("publishing: %v", err)
						return
					}
				}
			}
		}
	})
	stop = sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	t.Cleanup(stop)
	return stop
}

// consumerState returns the durable's ack floor and last delivered stream
// sequence, zero while it does not exist.
func (r *streamRig) consumerState(tb testing.TB, durable string) (floor, delivered uint64) {
	tb.Helper()
	c, err := r.js.Consumer(tb.Context(), auditStream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, 0
	}
	require.NoError(tb, err, "durable %s", durable)
	info, err := c.Info(tb.Context())
	require.NoError(tb, err)
	return info.AckFloor.Stream, info.Delivered.Stream
}

// startAudit starts `meetwatch audit` on r's server (or url, when given).
func startAudit(tb testing.TB, url string, args ...string) *process {
	tb.Helper()
	env := map[string]string{"MEETWATCH_NATS_URL": url, "MEETWATCH_LOG_LEVEL": "debug"}
	return startMeetwatch(tb, env, append([]string{"audit"}, args...)...)
}

// auditFile is what an audit file holds: its whole lines, and the bytes
// after the last newline.
type auditFile struct {
	lines [][]byte
	torn  int
}

func readAuditFile(tb testing.TB, path string) auditFile {
	tb.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return auditFile{}
	}
	require.NoError(tb, err)
	var f auditFile
	end := bytes.LastIndexByte(b, '\n')
	f.torn = len(b) - end - 1
	if end >= 0 {
		f.lines = bytes.Split(b[:end], []byte("\n"))
	}
	return f
}

// waitForLines waits until the file holds n whole lines.
func waitForLines(tb testing.TB, path string, n int) {
	tb.Helper()
	require.Eventually(tb, func() bool { return len(readAuditFile(tb, path).lines) >= n },
		eventWait, tick, "waiting for %d lines in %s", n, path)
}

// auditLine is the line an audit file holds for a stream message: its body
// when that is valid JSON without a '\n' or '\r' byte, else an
// audit_unreadable line. The line is spelled out here byte for byte, as the
// docs give it, so that any change of the format fails the tests.
func auditLine(m *jetstream.RawStreamMsg) []byte {
	if json.Valid(m.Data) && !bytes.ContainsAny(m.Data, "\n\r") {
		return m.Data
	}
	return fmt.Appendf(nil, `{"audit_unreadable":{"seq":%d,"subject":%q,"body_base64":%q}}`,
		m.Sequence, m.Subject, base64.StdEncoding.EncodeToString(m.Data))
}

// assertLogIsStream checks that lines are the stream's messages: the line
// of each, byte for byte, one per line, in stream order, none missing,
// none twice. It returns the lines the stream's messages make.
func assertLogIsStream(t *testing.T, nc *nats.Conn, lines [][]byte) [][]byte {
	t.Helper()
	var want [][]byte
	for _, m := range natstest.Messages(t, nc, auditStream) {
		want = append(want, auditLine(m))
	}
	seen := map[string]int{}
	doubled := 0
	for _, l := range lines {
		seen[string(l)]++
		if seen[string(l)] == 2 {
			doubled++
		}
	}
	missing := 0
	for _, w := range want {
		if seen[string(w)] == 0 {
			missing++
		}
	}
	assert.Zero(t, missing, "stream messages missing from the log")
	assert.Zero(t, doubled, "stream messages in the log more than once")
	assert.Len(t, lines, len(want), "lines in the log, messages in the stream")
	for i := range min(len(lines), len(want)) {
		if !bytes.Equal(lines[i], want[i]) {
			assert.Failf(t, "the log is not the stream", "line %d differs from stream message %d:\n got %.120s\nwant %.120s", i+1, i+1, lines[i], want[i])
			break
		}
	}
	return want
}

// stopAudit waits until the file holds the whole stream, stops the process
// with SIGTERM, and checks the file.
func stopAudit(t *testing.T, r *streamRig, p *process, path string) [][]byte {
	t.Helper()
	waitForLines(t, path, streamLen(r.nc, auditStream))
	p.stop(t, syscall.SIGTERM)
	f := readAuditFile(t, path)
	assert.Zero(t, f.torn, "bytes after the last newline")
	return assertLogIsStream(t, r.nc, f.lines)
}

// countLines counts the lines of a process's stderr that contain s.
func countLines(p *process, s string) int {
	n := 0
	for _, l := range p.stderr.Lines() {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// TestAuditSurvivesKill9 is the audit log's acceptance test: while events
// are being published, the audit process is killed with SIGKILL five times
// at random moments and started again each time; then the file must be
// the stream, exactly.
func TestAuditSurvivesKill9(t *testing.T) {
	t.Parallel()
	const kills = 5
	r := newStreamRig(t, 20261210)
	rng := rand.New(rand.NewPCG(r.seed, r.seed^0x9e3779b9)) // the kills'
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	r.publish(t, 200)
	stop := r.publishing(t)

	where := map[string]int{}
	var procs []*process
	for i := range kills {
		p := startAudit(t, r.url(), "--out", path)
		procs = append(procs, p)
		// From 20 ms, which is usually before the process has
		// reconciled, to 600 ms, well into following.
		time.Sleep(time.Duration(20+rng.IntN(580)) * time.Millisecond)
		kill9(t, p)

		f := readAuditFile(t, path)
		floor, delivered := r.consumerState(t, auditDurable)
		lines := uint64(len(f.lines))
		var at []string
		switch {
		case f.torn > 0:
			at = append(at, "mid-write, a torn last line")
		case lines > floor:
			at = append(at, "after writing a batch, before its acknowledgement")
		case lines == floor && delivered == floor:
			at = append(at, "between batches, nothing pending")
		}
		if delivered > lines {
			at = append(at, "messages delivered but not written")
		}
		if lines < floor {
			assert.Fail(t, "the file is behind the ack floor", "kill %d: %d lines, ack floor %d", i+1, lines, floor)
		}
		for _, a := range at {
			where[a]++
		}
		t.Logf("kill %d: %d lines (%d torn bytes), ack floor %d, delivered %d, stream %d: %s",
			i+1, lines, f.torn, floor, delivered, streamLen(r.nc, auditStream), strings.Join(at, "; "))
	}
	stop()
	last := startAudit(t, r.url(), "--out", path)
	procs = append(procs, last)
	want := stopAudit(t, r, last, path)

	var repaired, behind, copied, gaps int
	for _, p := range procs {
		repaired += countLines(p, "removed a torn last line")
		behind += countLines(p, "the file holds messages not yet acknowledged")
		gaps += countLines(p, "delivered out of order")
		for _, l := range p.stderr.Lines() {
			if strings.Contains(l, "audit started") && !strings.Contains(l, " copied=0") {
				copied++
			}
		}
	}
	t.Logf("audit: %d events, %d kills; kill points %v; restarts that removed a torn line %d, found unacknowledged lines %d, "+
		"copied messages delivered to a killed process %d; gaps filled while following %d",
		len(want), kills, where, repaired, behind, copied, gaps)
}

// ackKind tells an acknowledgement apart from the other messages a client
// sends, for the gate.
func ackKind(subject string, _ []byte) string {
	if strings.HasPrefix(subject, "$JS.ACK.") {
		return "ack"
	}
	return ""
}

// TestAuditKillPoints kills the audit process at chosen points: with a
// batch written and synced but its acknowledgement held back (the first
// batch of a new durable, and a later one), with a torn line after that,
// and with messages delivered to a process that died before writing them;
// and, in a stream of bodies that are not one line of JSON, with an
// unacknowledged audit_unreadable line last and a torn one after it.
// Each time, a restart must leave the file equal to the stream.
func TestAuditKillPoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		acks int  // acknowledgements let through before one is held
		torn bool // append half of the next line after the kill
		odd  bool // publish only bodies that are not one line of JSON
	}{
		{name: "first batch written, unacknowledged", acks: 0},
		{name: "later batch written, unacknowledged", acks: 1},
		{name: "batch unacknowledged, then a torn line", acks: 1, torn: true},
		{name: "unreadable bodies, batch unacknowledged, then a torn line", acks: 1, torn: true, odd: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newStreamRig(t, uint64(41+i))
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if tt.odd {
				for range 600 / len(oddBodies) {
					r.publishRaw(t, oddBodies...)
				}
			} else {
				r.publish(t, 600)
			}
			gate := startGateKinds(t, r.url(), ackKind)
			held := gate.holdFrom(nth("ack", tt.acks))

			p := startAudit(t, gate.URL(), "--out", path)
			select {
			case <-held:
			case <-time.After(eventWait):
				require.FailNow(t, "no acknowledgement held")
			}
			// The acknowledgement goes out after the sync: the file holds
			// its batch once the gate holds it.
			kill9(t, p)
			floor, delivered := r.consumerState(t, auditDurable)
			f := readAuditFile(t, path)
			lines := uint64(len(f.lines))
			require.Zero(t, f.torn)
			require.Greater(t, lines, floor, "the file holds a batch the durable has not acknowledged")
			require.GreaterOrEqual(t, delivered, lines)
			if tt.odd {
				require.True(t, bytes.HasPrefix(f.lines[lines-1], []byte(`{"audit_unreadable":`)), "the last line: %s", f.lines[lines-1])
			}
			if tt.torn {
				next := auditLine(natstest.Messages(t, r.nc, auditStream)[lines])
				fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
				require.NoError(t, err)
				_, err = fh.Write(next[:len(next)/2])
				require.NoError(t, err)
				require.NoError(t, fh.Close())
			}

			again := startAudit(t, r.url(), "--out", path)
			r.publish(t, 50)
			stopAudit(t, r, again, path)
			assert.Equal(t, 1, countLines(again, "the file holds messages not yet acknowledged"))
			assert.Equal(t, b2i(tt.torn), countLines(again, "removed a torn last line"))
			t.Logf("killed with %d lines in the file, ack floor %d, delivered %d, torn line %v; restarted and matched",
				lines, floor, delivered, tt.torn)
		})
	}

	t.Run("delivered to a process that died before writing", func(t *testing.T) {
		t.Parallel()
		r := newStreamRig(t, 47)
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		r.publish(t, 300)
		first := startAudit(t, r.url(), "--out", path)
		waitForLines(t, path, 300)
		first.stop(t, syscall.SIGTERM)
		r.publish(t, 100)

		// A reader on the durable takes 60 messages and dies without
		// acknowledging them: what a process killed between receiving
		// a batch and writing it leaves. The server delivers them
		// again only after 30 s.
		cons, err := r.js.Consumer(t.Context(), auditStream, auditDurable)
		require.NoError(t, err)
		batch, err := cons.Fetch(60, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for range batch.Messages() {
			got++
		}
		require.NoError(t, batch.Error())
		require.Equal(t, 60, got)
		floor, delivered := r.consumerState(t, auditDurable)
		require.Equal(t, uint64(300), floor)
		require.Equal(t, uint64(360), delivered)

		begun := time.Now()
		again := startAudit(t, r.url(), "--out", path)
		waitForLines(t, path, 400)
		took := time.Since(begun)
		assert.Less(t, took, 10*time.Second, "the messages delivered before are written without waiting for their redelivery")
		r.publish(t, 20)
		stopAudit(t, r, again, path)
		assert.Equal(t, 1, countLines(again, "copied=60"), "stderr:\n%s", again.stderr)
		t.Logf("60 messages delivered to a dead reader: copied from the stream at start, all 400 lines after %s", took.Round(time.Millisecond))
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestAuditWritesUnreadableBodies: bodies that something else published on
// the stream's subjects and that are not one line of JSON (pretty-printed,
// not JSON, empty, ending in "\r\n") do not stop the audit. Each becomes an
// audit_unreadable line in its place that gives back its sequence, subject
// and exact body, and is logged at WARN by sequence and subject, without
// the body; a one-line JSON body that is no event is written as it is. A
// restart with an unreadable line last in the file and a torn line after
// it goes on with nothing doubled or lost.
func TestAuditWritesUnreadableBodies(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 23)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	oneLine := rawBody{subject: "meetings.note.line", body: []byte(`{"note":"one line, with an escaped \n and \r"}`)}
	r.publish(t, 3)
	r.publishRaw(t, oddBodies[0])
	r.publish(t, 2)
	r.publishRaw(t, oddBodies[1], oddBodies[2], oneLine)
	r.publish(t, 1)
	r.publishRaw(t, oddBodies[3])
	odd := map[uint64]rawBody{4: oddBodies[0], 7: oddBodies[1], 8: oddBodies[2], 11: oddBodies[3]}

	p := startAudit(t, r.url(), "--out", path)
	lines := stopAudit(t, r, p, path)
	require.Len(t, lines, 11)
	msgs := natstest.Messages(t, r.nc, auditStream)
	for i, line := range lines {
		seq := uint64(i + 1)
		want, ok := odd[seq]
		if !ok {
			assert.Equal(t, msgs[i].Data, line, "line %d is the body as stored", seq)
			continue
		}
		var got struct {
			Unreadable struct {
				Seq        uint64 `json:"seq"`
				Subject    string `json:"subject"`
				BodyBase64 string `json:"body_base64"`
			} `json:"audit_unreadable"`
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&got), "line %d: %s", seq, line)
		body, err := base64.StdEncoding.DecodeString(got.Unreadable.BodyBase64)
		require.NoError(t, err, "line %d", seq)
		assert.Equal(t, seq, got.Unreadable.Seq, "line %d", seq)
		assert.Equal(t, want.subject, got.Unreadable.Subject, "line %d", seq)
		assert.Equal(t, want.body, body, "line %d gives back the body", seq)

		logged := 0
		for _, l := range p.stderr.Lines() {
			if strings.Contains(l, "audit_unreadable") && strings.Contains(l, fmt.Sprintf(" seq=%d ", seq)) &&
				strings.Contains(l, " subject="+want.subject) && strings.Contains(l, "level=WARN") {
				logged++
			}
		}
		assert.Equal(t, 1, logged, "a warning for line %d; stderr:\n%s", seq, p.stderr)
	}
	for _, b := range []string{"pretty-printed", "room 4", base64.StdEncoding.EncodeToString(oddBodies[1].body)} {
		assert.NotContains(t, p.stderr.String(), b, "bodies stay out of the log")
	}
	assert.Equal(t, 1, countLines(p, "audit stopped"))
	assert.Equal(t, 2, countLines(p, "unreadable_total=4"), "the last warning and the stop")

	// Killed while writing the next, unreadable, line: half of it is
	// left after an unreadable line that the durable acknowledged.
	r.publishRaw(t, oddBodies[0])
	next := auditLine(natstest.Messages(t, r.nc, auditStream)[11])
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = fh.Write(next[:len(next)/2])
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	r.publish(t, 2)
	q := startAudit(t, r.url(), "--out", path)
	lines = stopAudit(t, r, q, path)
	assert.Len(t, lines, 14)
	assert.Equal(t, 1, countLines(q, "removed a torn last line"))
	assert.Equal(t, 1, countLines(q, "written as audit_unreadable"), "only the new body is logged")
	assert.Equal(t, 2, countLines(q, "unreadable_total=1"), "the warning and the stop")
}

// TestAuditToStdout: with --out -, the lines go to standard output, one
// per message, and the logs to standard error.
func TestAuditToStdout(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 3)
	r.publish(t, 5)
	r.publishRaw(t, oddBodies[1])
	p := startAudit(t, r.url(), "--out", "-")
	require.Eventually(t, func() bool { return len(p.stdout.Lines()) >= 6 }, eventWait, tick, "waiting for 6 lines on stdout")
	r.publish(t, 1)
	require.Eventually(t, func() bool { return len(p.stdout.Lines()) >= 7 }, eventWait, tick, "waiting for the live event")
	p.stop(t, syscall.SIGTERM)

	var lines [][]byte
	for _, l := range p.stdout.Lines() {
		lines = append(lines, []byte(l))
	}
	assertLogIsStream(t, r.nc, lines)
	assert.Contains(t, p.stderr.String(), "audit started")
	assert.True(t, strings.HasSuffix(p.stdout.String(), "\n"))
}

// TestAuditNewDurableStartsFromFirst: a second durable, on a file of its
// own, gets the whole stream from its first message, although the default
// durable has already consumed it; the default durable's file goes on
// where it stopped.
func TestAuditNewDurableStartsFromFirst(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 5)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.jsonl"), filepath.Join(dir, "second.jsonl")
	r.publish(t, 40)
	p := startAudit(t, r.url(), "--out", first)
	stopAudit(t, r, p, first)

	r.publish(t, 10)
	q := startAudit(t, r.url(), "--out", second, "--durable", "second-audit")
	got := stopAudit(t, r, q, second)
	assert.Len(t, got, 50)
	floor, _ := r.consumerState(t, "second-audit")
	assert.Equal(t, uint64(50), floor, "the new durable acknowledged everything")

	p = startAudit(t, r.url(), "--out", first)
	stopAudit(t, r, p, first)

	c, err := r.js.Consumer(t.Context(), auditStream, auditDurable)
	require.NoError(t, err, "the default durable's name")
	assert.Equal(t, jetstream.AckAllPolicy, c.CachedInfo().Config.AckPolicy)
}

// TestAuditRefusesAMismatchedFile: a file that holds events continues only
// with the durable that wrote it; given a new durable, or an empty file for
// a durable that has acknowledged events, the audit stops with exit code 1
// and says why, writing nothing.
func TestAuditRefusesAMismatchedFile(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 11)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	r.publish(t, 20)
	p := startAudit(t, r.url(), "--out", path)
	stopAudit(t, r, p, path)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "a full file with a new durable", args: []string{"--out", path, "--durable", "newcomer"}, want: "is new"},
		{name: "an empty file with a used durable", args: []string{"--out", filepath.Join(dir, "empty.jsonl")}, want: "has acknowledged"},
	}
	for _, tt := range tests {
		q := startAudit(t, r.url(), tt.args...)
		assert.Equal(t, 1, q.wait(t, exitWait), "%s: exit code; stderr:\n%s", tt.name, q.stderr)
		assert.Contains(t, q.stderr.String(), tt.want, tt.name)
		assert.Contains(t, q.stderr.String(), "does not match", tt.name)
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the file is left as it was")
	assert.NoFileExists(t, filepath.Join(dir, "empty.jsonl"), "a failed audit leaves no file it made")
}

func TestAuditUsage(t *testing.T) {
	t.Parallel()
	assertUsageErrors(t, []usageError{
		{name: "no --out", args: []string{"audit"}, want: "--out is required"},
		{name: "bad durable", args: []string{"audit", "--out", "-", "--durable", "a.b"}, want: "--durable"},
		{name: "extra argument", args: []string{"audit", "--out", "-", "meetings.>"}, want: "unexpected argument"},
	})
}

// TestAuditFileLocked: a second audit on the same file stops at once.
func TestAuditFileLocked(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 13)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	r.publish(t, 3)
	p := startAudit(t, r.url(), "--out", path)
	waitForLines(t, path, 3)
	q := startAudit(t, r.url(), "--out", path, "--durable", "other")
	assert.Equal(t, 1, q.wait(t, exitWait))
	assert.Contains(t, q.stderr.String(), "another process")
	stopAudit(t, r, p, path)
}

// TestAuditAfterOldEventsLeaveTheStream: events leave the stream with age
// or a purge. An audit whose last acknowledged event has left resumes after
// it, and a new durable starts from the first event still there.
func TestAuditAfterOldEventsLeaveTheStream(t *testing.T) {
	t.Parallel()
	r := newStreamRig(t, 17)
	dir := t.TempDir()
	path, fresh := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "fresh.jsonl")
	r.publish(t, 30)
	p := startAudit(t, r.url(), "--out", path)
	old := stopAudit(t, r, p, path)

	st, err := r.js.Stream(t.Context(), auditStream)
	require.NoError(t, err)
	require.NoError(t, st.Purge(t.Context()))
	r.publish(t, 10)

	p = startAudit(t, r.url(), "--out", path)
	waitForLines(t, path, 40)
	p.stop(t, syscall.SIGTERM)
	assert.Equal(t, 1, countLines(p, "no longer in the stream"))
	var want [][]byte
	for _, m := range natstest.Messages(t, r.nc, auditStream) {
		want = append(want, auditLine(m))
	}
	require.Len(t, want, 10)
	assert.Equal(t, append(old, want...), readAuditFile(t, path).lines, "the file goes on after the purge, nothing twice")

	// A new durable's floor lies just before the stream's first message,
	// acknowledged by nobody: an empty file is right for it.
	q := startAudit(t, r.url(), "--out", fresh, "--durable", "fresh")
	stopAudit(t, r, q, fresh)
	assert.Equal(t, 1, countLines(q, "ack_floor=30"), "stderr:\n%s", q.stderr)
}

// TestAuditNATSUser: audit connects with the MEETWATCH_NATS_* settings, as
// a user holding only the permissions docs/security.md lists for it.
func TestAuditNATSUser(t *testing.T) {
	t.Parallel()
	const (
		user     = "auditor"
		password = "Audit-pw-5d02c9"
	)
	srv := startPermissionedNATS(t, nil, readerUser(user, password,
		"$JS.API.STREAM.INFO."+auditStream,
		"$JS.API.CONSUMER.INFO."+auditStream+"."+auditDurable,
		"$JS.API.CONSUMER.CREATE."+auditStream+"."+auditDurable,
		"$JS.API.CONSUMER.MSG.NEXT."+auditStream+"."+auditDurable,
		"$JS.API.STREAM.MSG.GET."+auditStream,
		"$JS.ACK."+auditStream+"."+auditDurable+".>",
	))
	r := newStreamRigOn(t, srv, connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword)), 19)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	r.publish(t, 20)

	env := map[string]string{"MEETWATCH_NATS_URL": r.url(), "MEETWATCH_NATS_USER": user, "MEETWATCH_NATS_PASSWORD": password}
	p := startMeetwatch(t, env, "audit", "--out", path)
	waitForLines(t, path, 20)
	// A restart reconciles through the message get.
	kill9(t, p)
	r.publish(t, 5)
	p = startMeetwatch(t, env, "audit", "--out", path)
	stopAudit(t, r, p, path)
	assert.NotContains(t, p.stderr.String(), "Permissions Violation")
	assert.NotContains(t, p.stderr.String(), password)
}
