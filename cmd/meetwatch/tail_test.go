package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// TestTailSince: events stored before the --since moment are not shown,
// those stored after it are, in stream order, and then the live ones, with
// nothing missed or shown twice where the replay meets the live part.
func TestTailSince(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ago    time.Duration // --since as a duration; else the moment between the events before and after
		filter string
		kind   string // the only kind shown, when filtered
	}{
		{name: "RFC 3339 time"},
		{name: "RFC 3339 time and a filter", filter: "meetings.ended.>", kind: "ended"},
		{name: "duration", ago: 2 * time.Second},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newStreamRig(t, uint64(61+i))
			r.publish(t, 6)
			lastBefore := natstest.Messages(t, r.nc, auditStream)[5].Time
			if tt.ago > 0 {
				// A duration is read against tail's own clock when it
				// starts: the events before must be older than it by
				// then, and those after, published right before tail
				// starts, younger; 2 s leaves a loaded machine a wide
				// margin to start tail. Only the wall clock ages them.
				time.Sleep(time.Until(lastBefore.Add(tt.ago + 100*time.Millisecond)))
			}
			r.publish(t, 6)
			firstAfter := natstest.Messages(t, r.nc, auditStream)[6].Time
			require.True(t, firstAfter.After(lastBefore), "the events after are stored after those before")
			cut := lastBefore.Add(firstAfter.Sub(lastBefore) / 2)
			since := cut.Format(time.RFC3339Nano)
			if tt.ago > 0 {
				since = tt.ago.String()
			}

			args := []string{"--json", "--since", since}
			if tt.filter != "" {
				args = append([]string{tt.filter}, args...) // flags after the filter
			}
			tail := startTail(t, r.url(), args...)
			wantAfter, wantLive := 6, 3
			if tt.kind != "" {
				wantAfter, wantLive = 2, 1 // every third event is an ended one
			}
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= wantAfter },
				eventWait, tick, "waiting for the %d events stored since %s", wantAfter, since)
			require.Len(t, tail.stdout.Lines(), wantAfter, "lines replayed")

			// Two live rounds: a line that should not come, such as a
			// second copy where the replay meets the live part, would
			// come before the second round's.
			for round := 1; round <= 2; round++ {
				r.publish(t, 3)
				require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= wantAfter+round*wantLive },
					eventWait, tick, "waiting for the live events, round %d", round)
			}
			tail.stop(t, syscall.SIGTERM)

			var want []string
			for _, m := range natstest.Messages(t, r.nc, auditStream)[6:] {
				var e event
				require.NoError(t, json.Unmarshal(m.Data, &e))
				if tt.kind == "" || e.kind() == tt.kind {
					want = append(want, string(bytes.TrimSpace(m.Data)))
				}
			}
			assert.Equal(t, want, tail.stdout.Lines(), "the events since the cut, then the live ones, each once, in stream order")
			assert.Contains(t, tail.stderr.String(), " since ")
		})
	}
}

func TestTailSinceUsage(t *testing.T) {
	t.Parallel()
	assertUsageErrors(t, []usageError{
		{name: "not a moment", args: []string{"tail", "--since", "yesterday"}, want: "RFC 3339"},
		{name: "a negative duration", args: []string{"tail", "--since", "-5m"}, want: "negative"},
		{name: "with --all", args: []string{"tail", "--all", "--since", "5m"}, want: "--all and --since"},
	})
}

// TestTailNATSUser runs `tail`, `tail --since` and `tail --all` as a user
// with exactly the permissions docs/security.md lists for them, each of
// them needed: each shows what it should, follows, and is refused nothing.
func TestTailNATSUser(t *testing.T) {
	t.Parallel()
	const (
		user     = "tailer"
		password = "Tail-pw-0a93c4"
	)
	tests := []struct {
		name   string
		args   []string
		replay int // of the 4 events stored before tail starts
	}{
		{name: "new events", args: nil, replay: 0},
		{name: "--since", args: []string{"--since", "1h"}, replay: 4},
		{name: "--all", args: []string{"--all"}, replay: 4},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startPermissionedNATS(t, nil, readerUser(user, password,
				"$JS.API.CONSUMER.CREATE."+auditStream+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+auditStream+".>",
			))
			r := newStreamRigOn(t, srv, connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword)), uint64(67+i))
			r.publish(t, 4)

			env := map[string]string{"MEETWATCH_NATS_URL": r.url(), "MEETWATCH_NATS_USER": user, "MEETWATCH_NATS_PASSWORD": password}
			tail := startMeetwatch(t, env, append([]string{"tail", "--json"}, tt.args...)...)
			require.Eventually(t, func() bool { return strings.Contains(tail.stderr.String(), "meetwatch tail:") }, eventWait, tick, "waiting for tail")
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= tt.replay }, eventWait, tick, "waiting for the replay")
			r.publish(t, 2)
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= tt.replay+2 }, eventWait, tick, "waiting for the new events")
			tail.stop(t, syscall.SIGTERM)

			var want []string
			for _, m := range natstest.Messages(t, r.nc, auditStream)[4-tt.replay:] {
				want = append(want, string(bytes.TrimSpace(m.Data)))
			}
			assert.Equal(t, want, tail.stdout.Lines())
			assert.NotContains(t, tail.stderr.String(), "Permissions Violation")
			assert.NotContains(t, tail.stderr.String(), password)
		})
	}
}

// TestTailBoundedBehindAStalledReader runs tail with its standard output a
// pipe that nobody reads while far more events are stored than the pipe
// holds: tail's memory stays within a bound well below the events' size,
// the rest waiting in the stream, and once the pipe is read every event
// comes out, in stream order, exactly once.
func TestTailBoundedBehindAStalledReader(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("reads the resident memory from /proc")
	}
	const (
		n    = 20000
		size = 2 << 10 // each event, about the size of one with a meeting record
		// The bound on what tail may grow by: the pull buffer (twice the
		// 1 MiB max payload) and the garbage of the events printed, well
		// below the 40 MB of events.
		bound = 16 << 20
	)
	r := newStreamRig(t, 73)
	rd, wr, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { rd.Close() })
	cmd := exec.Command(binary, "tail", "--json")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "MEETWATCH_NATS_URL=" + r.url()}
	stderr := &simtest.Buffer{}
	cmd.Stdout, cmd.Stderr = wr, stderr
	require.NoError(t, cmd.Start())
	wr.Close() // the child holds the write end
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("tail stderr:\n%s", stderr)
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "meetwatch tail:") }, eventWait, tick, "waiting for tail")
	base, err := residentBytes(cmd.Process.Pid)
	require.NoError(t, err)

	// The memory is sampled while the events are stored: a client that
	// takes in whatever comes grows as they arrive.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			if rss, err := residentBytes(cmd.Process.Pid); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stopSampling:
				return
			case <-tk.C:
			}
		}
	}()
	bodies := make([][]byte, n)
	for i := range bodies {
		body := fmt.Sprintf(`{"id":"%032x","n":%d,"pad":"`, i, i)
		bodies[i] = []byte(body + strings.Repeat("x", size-len(body)-2) + `"}`)
	}
	js, err := jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(512))
	require.NoError(t, err)
	for i, b := range bodies {
		// A loaded machine acknowledges slowly: the publisher waits for
		// room in its window rather than fail.
		_, err := js.PublishAsync(fmt.Sprintf("meetings.started.%032x", i), b, jetstream.WithStallWait(eventWait))
		require.NoError(t, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(eventWait):
		require.FailNow(t, "the events were not all stored")
	}
	require.Equal(t, n, streamLen(r.nc, auditStream))
	close(stopSampling)
	<-sampled
	grown := peak.Load() - base
	t.Logf("tail's resident memory: %d MB at start, grew by %.1f MB while %d MB of events waited", base>>20, float64(grown)/(1<<20), n*size>>20)
	assert.Less(t, grown, int64(bound), "tail's memory grew with the events held back")

	// Now the reader comes: every event, in order, once.
	lines := make(chan string, n)
	go func() {
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(eventWait)
	for i := range n {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "the output ended after %d events", i)
			require.Equal(t, string(bodies[i]), l, "event %d", i)
		case <-deadline:
			require.FailNow(t, "events missing", "%d of %d printed", i, n)
		}
	}
	select {
	case l := <-lines:
		assert.Fail(t, "a line more than the events", "%.80s", l)
	default:
	}
	assert.NotContains(t, stderr.String(), "slow consumer")
}

// residentBytes reads a process's resident set size from /proc.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// TestTailNewEventsSurviveAReconnection: a tail of the new events that has
// shown none yet loses none across a NATS restart either. Its consumer is
// gone with the server and made again on the reconnection; an event stored
// before tail is back is still shown, once.
func TestTailNewEventsSurviveAReconnection(t *testing.T) {
	t.Parallel()
	port, dir := freePort(t), t.TempDir()
	srv := startNATSAt(t, port, dir)
	r := newStreamRigOn(t, srv, natstest.Connect(t, srv), 79)
	r.publish(t, 2) // before tail: not shown
	tail := startTail(t, srv.ClientURL(), "--json")

	srv.Shutdown()
	srv.WaitForShutdown()
	srv = startNATSAt(t, port, dir)
	// Stored at once, while tail waits to reconnect.
	again := newStreamRigOn(t, srv, natstest.Connect(t, srv), 83)
	again.n = r.n // new events, not duplicates of the first two
	r = again
	r.publish(t, 1)
	require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= 1 }, eventWait, tick, "waiting for the event stored while tail was away")
	r.publish(t, 1)
	require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= 2 }, eventWait, tick, "waiting for the next event")
	tail.stop(t, syscall.SIGTERM)

	var want []string
	for _, m := range natstest.Messages(t, r.nc, auditStream)[2:] {
		want = append(want, string(bytes.TrimSpace(m.Data)))
	}
	assert.Equal(t, want, tail.stdout.Lines(), "the events stored after tail started, each once")
}
