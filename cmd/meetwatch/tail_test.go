package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
		wait   time.Duration // between the events before and those after
		since  func(cut time.Time) string
		filter string
		kind   string // the only kind shown, when filtered
	}{
		{name: "RFC 3339 time", wait: 20 * time.Millisecond, since: func(cut time.Time) string { return cut.Format(time.RFC3339Nano) }},
		{name: "RFC 3339 time and a filter", wait: 20 * time.Millisecond, since: func(cut time.Time) string { return cut.Format(time.RFC3339Nano) },
			filter: "meetings.ended.>", kind: "ended"},
		// The events before are 3 s old when tail starts, and those
		// after a moment old: 2s lies between, with a wide margin.
		{name: "duration", wait: 3 * time.Second, since: func(time.Time) string { return "2s" }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newStreamRig(t, uint64(61+i))
			r.publish(t, 6)
			time.Sleep(tt.wait / 2)
			cut := time.Now()
			time.Sleep(tt.wait / 2)
			r.publish(t, 6)

			args := []string{"--json", "--since", tt.since(cut)}
			if tt.filter != "" {
				args = append(args, tt.filter)
			}
			tail := startTail(t, r.url(), args...)
			wantAfter := 6
			if tt.kind != "" {
				wantAfter = 2 // every third event is an ended one
			}
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= wantAfter },
				eventWait, tick, "waiting for the %d events stored since %s", wantAfter, cut)
			time.Sleep(200 * time.Millisecond) // for any line that should not come
			require.Len(t, tail.stdout.Lines(), wantAfter, "lines replayed")

			r.publish(t, 3)
			wantLive := 3
			if tt.kind != "" {
				wantLive = 1
			}
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= wantAfter+wantLive },
				eventWait, tick, "waiting for the live events")
			time.Sleep(200 * time.Millisecond)
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

// TestTailReplayNATSUser runs `tail --since` and `tail --all` as a user
// with exactly the permissions docs/security.md lists for them, each of
// them needed: each replays, follows, and is refused nothing.
func TestTailReplayNATSUser(t *testing.T) {
	t.Parallel()
	const (
		user     = "tailer"
		password = "Tail-pw-0a93c4"
	)
	for _, args := range [][]string{{"--since", "1h"}, {"--all"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			srv := startPermissionedNATS(t, nil, readerUser(user, password,
				"$JS.API.CONSUMER.CREATE."+auditStream+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+auditStream+".>",
			))
			r := newStreamRigOn(t, srv, connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword)), 67)
			r.publish(t, 4)

			env := map[string]string{"MEETWATCH_NATS_URL": r.url(), "MEETWATCH_NATS_USER": user, "MEETWATCH_NATS_PASSWORD": password}
			tail := startMeetwatch(t, env, append([]string{"tail", "--json"}, args...)...)
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= 4 }, eventWait, tick, "waiting for the replay")
			r.publish(t, 2)
			require.Eventually(t, func() bool { return len(tail.stdout.Lines()) >= 6 }, eventWait, tick, "waiting for the live events")
			tail.stop(t, syscall.SIGTERM)
			assert.Len(t, tail.stdout.Lines(), 6)
			assert.NotContains(t, tail.stderr.String(), "Permissions Violation")
			assert.NotContains(t, tail.stderr.String(), password)
		})
	}
}

// slowWriter counts the lines written to it, a little slowly, as a pipe to
// a slow reader takes them.
type slowWriter struct {
	mu    sync.Mutex
	lines int
}

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(100 * time.Microsecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines += bytes.Count(p, []byte("\n"))
	return len(p), nil
}

func (w *slowWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines
}

// TestTailLiveLosesNothingToASlowReader: a burst of events printed to a
// slow reader waits in the client; none is dropped as a slow consumer's.
func TestTailLiveLosesNothingToASlowReader(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	out, stderr := &slowWriter{}, &simtest.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- runTail(ctx, []string{"--json"}, map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()}, out, stderr)
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "meetwatch tail:") }, eventWait, tick, "waiting for tail to subscribe")

	const n = 2000 // eight times what the subscription used to hold
	for range n {
		require.NoError(t, nc.Publish("meetings.started.x", []byte(`{"id":"x"}`)))
	}
	require.NoError(t, nc.Flush())
	assert.Eventually(t, func() bool { return out.count() == n }, 30*time.Second, tick, "every event printed")
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, n, out.count())
	assert.NotContains(t, stderr.String(), "slow consumer")
}
