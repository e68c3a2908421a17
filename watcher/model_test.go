package watcher_test

// Tests of the state model (see package kvstore) as consumers see it: a
// late intent of a former leader, a meeting that comes back after its end,
// and each meeting's events in order while publishes are retried.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// TestALateIntentIsAnnouncedBeforeItsEnd: a leader paused with the intent
// of a start in flight wakes after another replica loaded the state; the
// intent lands, and its event never goes out. The new leader, which never
// saw that meeting, commits a poll that writes keys of its own, and the
// meeting ends. Whoever loads the state next finds the intent pending: the
// meeting's started goes out, then its ended, never an ended alone.
func TestALateIntentIsAnnouncedBeforeItsEnd(t *testing.T) {
	r := newRigPaged(t, 10)
	r.api.Sim.AddN(5)
	var pub *cutPublisher
	former := r.newWatcherWith(t, nil, func(c *watcher.Config) {
		pub = &cutPublisher{Publisher: c.Publisher}
		c.Publisher = pub
	})
	_, err := former.Poll(t.Context())
	require.NoError(t, err)
	next := r.newWatcher(t, nil)
	_, err = next.Poll(t.Context())
	require.NoError(t, err, "the new leader loads the state")

	late := r.api.Sim.AddN(1)[0]
	pub.down.Store(true) // the former leader's connection dies after its intent
	_, err = former.Poll(t.Context())
	require.Error(t, err)
	require.True(t, r.api.Sim.End(late))
	r.api.Sim.AddN(1)
	_, err = next.Poll(t.Context())
	require.NoError(t, err, "the new leader commits a start of its own")

	st, err := kvstore.Read(t.Context(), r.js, testBucket, "")
	require.NoError(t, err)
	_, held := st.Snapshot[late]
	assert.False(t, held, "never taken for announced")
	var pending []string
	for _, c := range st.Pending {
		pending = append(pending, c.Key)
	}
	assert.Equal(t, []string{late}, pending, "the late intent is pending")

	_, err = r.newWatcher(t, nil).Poll(t.Context()) // whoever leads next
	require.NoError(t, err)
	assert.Equal(t, []string{"started 1", "ended 1"}, eventsOf(t, r)[late], "its start, then its end")
}

// TestAMeetingBackAfterItsEndStartsAgain: a meeting that ends (its ended
// published) and is listed again is started again, as its next
// incarnation: a new id, stored rather than dropped as a duplicate, then
// its ended under a new id too. The incarnation is kept in the state
// bucket, so a restart between the end and the return changes nothing.
func TestAMeetingBackAfterItsEndStartsAgain(t *testing.T) {
	r := newRigPaged(t, 10)
	back := r.api.Sim.AddN(12)[5]
	rec, ok := r.api.Sim.Get(back)
	require.True(t, ok)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)
	end := func(w *watcher.Watcher) {
		t.Helper()
		require.True(t, r.api.Sim.End(back))
		res, err := w.Poll(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, res.Ended, "a lookup confirms the end")
	}
	ret := func(w *watcher.Watcher) {
		t.Helper()
		r.api.Sim.Add(rec)
		res, err := w.Poll(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, res.Started)
	}
	end(w)
	ret(w)
	end(w)
	w = r.newWatcher(t, nil) // a restart between its end and its return
	ret(w)
	end(w)

	want := []string{"started 1", "ended 1", "started 2", "ended 2", "started 3", "ended 3"}
	assert.Equal(t, want, eventsOf(t, r)[back], "every start and end stored, in order")
	ids := map[string]bool{}
	for _, m := range natstest.Messages(t, r.nc, testStream) {
		if strings.HasSuffix(m.Subject, "."+back) {
			ids[m.Header.Get("Nats-Msg-Id")] = true
		}
	}
	assert.Len(t, ids, len(want), "each under an id of its own")
	assert.True(t, ids[events.ID("", snapshot.Change{Kind: snapshot.Started, Key: back})],
		"the first incarnation's started keeps the id it always had")
}

// TestEachMeetingsEventsKeepTheirOrderUnderRetries: over polls that start,
// change, end and bring back meetings, the first publish of one event in
// three is lost on its way, so the publisher's acknowledgement wait runs
// out and it sends the event again, after events sent later. Across
// meetings the stream's order is then not the order sent; each meeting's
// events are stored in the order they happened.
func TestEachMeetingsEventsKeepTheirOrderUnderRetries(t *testing.T) {
	t.Parallel()
	r := newRigPaged(t, 10)
	live := r.api.Sim.AddN(20)
	want := map[string][]string{}
	inc := map[string]int{}
	for _, id := range live {
		want[id], inc[id] = []string{"started 1"}, 1
	}
	n := 0
	proxy := startDropProxy(t, r.nc.ConnectedUrl(), func(string) bool { n++; return n%3 == 0 })
	nc, err := nats.Connect(proxy.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	pub, err := publish.New(nc, publish.Config{Stream: testStream, Prefix: "meetings", Duplicates: time.Hour, AckTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	w := r.newWatcherWith(t, nil, func(c *watcher.Config) { c.Publisher = pub })
	_, err = w.Poll(t.Context())
	require.NoError(t, err)

	var ended []string
	records := map[string]apisim.Record{}
	for round := range 6 {
		for _, id := range r.api.Sim.AddN(2) {
			live = append(live, id)
			want[id], inc[id] = []string{"started 1"}, 1
		}
		for _, id := range live[round : round+3] {
			r.api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = fmt.Sprintf("round %d", round) })
			want[id] = append(want[id], "changed "+strconv.Itoa(inc[id]))
		}
		if len(ended) > 0 { // one that ended in an earlier round comes back
			id := ended[0]
			ended = ended[1:]
			r.api.Sim.Add(records[id])
			live = append(live, id)
			inc[id]++
			want[id] = append(want[id], "started "+strconv.Itoa(inc[id]))
		}
		for _, id := range live[len(live)-6 : len(live)-4] {
			records[id], _ = r.api.Sim.Get(id)
			require.True(t, r.api.Sim.End(id))
			want[id] = append(want[id], "ended "+strconv.Itoa(inc[id]))
			ended = append(ended, id)
		}
		live = slices.DeleteFunc(live, func(id string) bool { return slices.Contains(ended, id) })
		_, err := w.Poll(t.Context())
		require.NoError(t, err, "round %d", round)
	}

	assert.Equal(t, want, eventsOf(t, r), "each meeting's events in the order they happened")
	sent, dropped := proxy.sentOrder()
	require.NotZero(t, dropped, "publishes were lost and sent again")
	var stored []string
	for _, m := range natstest.Messages(t, r.nc, testStream) {
		stored = append(stored, m.Header.Get("Nats-Msg-Id"))
	}
	assert.NotEqual(t, sent, stored, "across meetings, the retries changed the order")
	t.Logf("%d events, %d first publishes lost and sent again", len(stored), dropped)
}

// eventsOf returns, for each meeting, its events in the stream's order, as
// "<kind> <incarnation>"; an event without data.incarnation is in the
// first.
func eventsOf(tb testing.TB, r *rig) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, m := range natstest.Messages(tb, r.nc, testStream) {
		var e struct {
			Type    string `json:"type"`
			Subject string `json:"subject"`
			Data    struct {
				Incarnation int `json:"incarnation"`
			} `json:"data"`
		}
		require.NoError(tb, json.Unmarshal(m.Data, &e))
		kind := strings.TrimPrefix(e.Type, events.TypePrefix)
		out[e.Subject] = append(out[e.Subject], kind+" "+strconv.Itoa(max(e.Data.Incarnation, 1)))
	}
	return out
}

// dropProxy forwards one NATS client's connections to a server, and drops
// the first publish of each event whose id drop picks.
type dropProxy struct {
	ln     net.Listener
	target string
	drop   func(id string) bool

	mu      sync.Mutex
	seen    map[string]bool
	sent    []string // event ids in the order their first publish came
	dropped int
}

func startDropProxy(tb testing.TB, target string, drop func(id string) bool) *dropProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	p := &dropProxy{ln: ln, target: strings.TrimPrefix(target, "nats://"), drop: drop, seen: map[string]bool{}}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			srv, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, srv)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(client, srv); _ = client.Close() })
			wg.Go(func() { p.forward(client, srv); _ = srv.Close() })
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *dropProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// forward copies the client's protocol messages to the server, a whole
// message at a time, leaving out the publishes it drops.
func (p *dropProxy) forward(client, srv net.Conn) {
	r := bufio.NewReader(client)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		msg := line
		if f := bytes.Fields(line); len(f) >= 3 && bytes.EqualFold(f[0], []byte("HPUB")) {
			n, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil {
				return
			}
			payload := make([]byte, n+2)
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			if strings.HasPrefix(string(f[1]), "meetings.") && p.lose(payload) {
				continue
			}
			msg = append(msg, payload...)
		}
		if _, err := srv.Write(msg); err != nil {
			return
		}
	}
}

// lose reports whether to drop an event's publish: its first, when drop
// picks its id.
func (p *dropProxy) lose(payload []byte) bool {
	_, rest, _ := bytes.Cut(payload, []byte(jetstream.MsgIDHeader+": "))
	id, _, _ := bytes.Cut(rest, []byte("\r\n"))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[string(id)] {
		return false
	}
	p.seen[string(id)] = true
	p.sent = append(p.sent, string(id))
	if p.drop(string(id)) {
		p.dropped++
		return true
	}
	return false
}

// sentOrder returns the event ids in the order their first publish came,
// and how many of those were dropped.
func (p *dropProxy) sentOrder() ([]string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent), p.dropped
}
