package main

import (
	"context"
	"encoding/json"
	"fmt"
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
)

// TestPausedLeaderWakesFenced: the leader is stopped with SIGSTOP for
// longer than its lease while three meetings are renamed every 250 ms; the
// standby takes over; the old leader is continued. It must publish and
// write nothing more: every meeting's changed events chain, each one's
// previous subject the one before's, the renames in the order they
// happened, and the state bucket ends where the stream does.
func TestPausedLeaderWakesFenced(t *testing.T) {
	t.Parallel()
	const (
		token    = "pause-token"
		meetings = 10
		ttl      = 2 * time.Second
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, meetings)
	renamed := api.Sim.UUIDs()[:3]

	a := startMeetwatch(t, haEnv(api.URL, token, srv.ClientURL(), "a", ttl), "run")
	waitForMessages(t, nc, "MEETINGS", meetings)
	b := startMeetwatch(t, haEnv(api.URL, token, srv.ClientURL(), "b", ttl), "run")
	require.True(t, leadsNow(a))

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			id := renamed[n%len(renamed)]
			api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = fmt.Sprintf("rename %d", n) })
		}
	})
	defer func() { stop(); wg.Wait() }()

	waitForMore(t, nc, 3, eventWait, "renamed by a")
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	paused := time.Now()
	require.Eventually(t, func() bool { return leadsNow(b) }, eventWait, tick, "waiting for b to lead")
	took := time.Since(paused)
	waitForMore(t, nc, 3, eventWait, "renamed by b while a sleeps")
	before := streamLen(nc, "MEETINGS")
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	woke := time.Now()
	// a wakes into the poll it was stopped in, finds its term over, and
	// says so; b goes on publishing the renames meanwhile.
	require.Eventually(t, func() bool { return !leadsNow(a) }, eventWait, tick, "waiting for a to stop leading")
	waitForMore(t, nc, 6, eventWait, "renamed by b after a woke")
	stop()
	wg.Wait()
	// b publishes the last renames, and commits the poll that did.
	require.Eventually(t, func() bool { return publishedLast(nc, api.Sim, renamed) },
		eventWait, tick, "waiting for the last renames")
	waitForPolls(t, api.Sim, 1)
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)

	msgs := storedMessages(t, nc, "MEETINGS")
	require.Greater(t, len(msgs), before, "b went on publishing after a woke")
	last := map[string]string{}
	renames, broken := 0, 0
	for _, m := range msgs {
		e := m.Event
		subject, _ := e.Data.Conference["subject"].(string)
		switch e.kind() {
		case "started":
			last[e.Subject] = subject
		case "changed":
			renames++
			prev, _ := e.Data.Previous["subject"].(string)
			if !assert.Equal(t, last[e.Subject], prev, "%s: a changed event whose previous is not the event before's", e.Subject) {
				broken++
			}
			if n, m := renameNumber(last[e.Subject]), renameNumber(subject); n >= 0 && m <= n {
				assert.Fail(t, "a rename undone", "%s: %q after %q", e.Subject, subject, last[e.Subject])
				broken++
			}
			last[e.Subject] = subject
		}
	}
	kv, err := newStateView(t, nc).kv(t.Context())
	require.NoError(t, err)
	for _, id := range renamed {
		entry, err := kv.Get(t.Context(), "m."+id)
		require.NoError(t, err)
		var rec struct{ Subject string }
		require.NoError(t, json.Unmarshal(entry.Value(), &rec))
		assert.Equal(t, last[id], rec.Subject, "%s: the state ends where the stream does", id)
	}
	aLog := a.stderr.String()
	afterWake := 0
	for _, e := range slogEntries(a) {
		if e.msg == "poll committed" && e.at.After(woke) {
			afterWake++
		}
	}
	assert.Zero(t, afterWake, "a committed a poll after it woke")
	assert.Contains(t, aLog, "stopped leading")
	t.Logf("paused leader: b led %s after a was stopped (lease %s); a woke fenced: renames published %d, broken chains %d, polls a committed after waking %d",
		took.Round(10*time.Millisecond), ttl, renames, broken, afterWake)
}

// publishedLast reports whether the last changed event stored of each
// meeting of ids carries the subject the API lists for it now. It never
// fails the test, so that Eventually can poll it.
func publishedLast(nc *nats.Conn, sim *apisim.Sim, ids []string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	st, err := js.Stream(ctx, "MEETINGS")
	if err != nil {
		return false
	}
	for _, id := range ids {
		m, err := st.GetLastMsgForSubject(ctx, "meetings.changed."+id)
		if err != nil {
			return false
		}
		var e event
		rec, ok := sim.Get(id)
		if json.Unmarshal(m.Data, &e) != nil || !ok || e.Data.Conference["subject"] != rec["subject"] {
			return false
		}
	}
	return true
}

// renameNumber reads n from "rename n", or -1.
func renameNumber(subject string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(subject, "rename "))
	if err != nil || !strings.HasPrefix(subject, "rename ") {
		return -1
	}
	return n
}
