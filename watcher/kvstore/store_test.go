package kvstore_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

func TestCommitIsFencedByTheMetaRevision(t *testing.T) {
	js := newJetStream(t)
	stale := openStore(t, js)
	_, err := stale.Load(t.Context())
	require.NoError(t, err)

	fresh := openStore(t, js)
	_, err = fresh.Load(t.Context())
	require.NoError(t, err)
	announce(t, fresh, started(t, "u1")...)
	require.NoError(t, fresh.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 1}))

	err = stale.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now()})
	require.ErrorIs(t, err, watcher.ErrFenced, "a replica that read the state before another committed cannot commit over it")
	st, err := fresh.Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, []string{"u1"}, slices.Collect(maps.Keys(st.Snapshot)))
}

// A key's last write says what was announced: an intent may not have
// been, whatever was committed after it; a record was, committed or not.
func TestLoadTellsIntentsFromRecords(t *testing.T) {
	store := openStore(t, newJetStream(t))
	_, err := store.Load(t.Context())
	require.NoError(t, err)
	first := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	starts := started(t, "a", "b", "c")
	require.NoError(t, store.Intend(t.Context(), starts, first))

	st, err := store.Load(t.Context())
	require.NoError(t, err)
	assert.False(t, st.Committed)
	assert.Equal(t, first, st.ObservedAt, "the first listing's time is every pending meeting's lastSeen")
	assert.Empty(t, st.Snapshot)
	require.Len(t, st.Pending, 3, "every start may still be unannounced")

	require.NoError(t, store.Record(t.Context(), starts, first))
	st, err = store.Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Pending, "announced")
	assert.Len(t, st.Snapshot, 3)
	assert.False(t, st.Committed)
	assert.Equal(t, first, st.ObservedAt, "a record keeps its listing's time until a commit")
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: first, Meetings: 3}))

	// The next poll: a start intended, a change and an end recorded.
	renamed := snapshot.Change{Kind: snapshot.Changed, Key: "a", Old: record(t, "a", "a"), New: record(t, "a", "renamed")}
	require.NoError(t, store.Intend(t.Context(), started(t, "d"), time.Now()))
	announce(t, store, renamed, snapshot.Change{Kind: snapshot.Ended, Key: "b", Old: record(t, "b", "b")})
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 3}))

	st, err = store.Load(t.Context())
	require.NoError(t, err)
	assert.True(t, st.Committed)
	require.Len(t, st.Pending, 1, "committed or not, an intent stays pending")
	assert.Equal(t, "d", st.Pending[0].Key)
	assert.ElementsMatch(t, []string{"a", "c"}, slices.Collect(maps.Keys(st.Snapshot)))
	assert.Equal(t, "renamed", st.Snapshot["a"].Subject)
}

// A bucket an earlier version committed keeps its started meetings' keys
// marked as intents, covered by meta's "through": Load takes those as
// records, and writes them unmarked, so that they stay records once a
// commit of this version has replaced meta. An intent past "through" is
// pending.
func TestLoadTakesAnEarlierVersionsCommittedIntentsAsRecords(t *testing.T) {
	js := newJetStream(t)
	store := openStore(t, js)
	put := func(key, data string, h nats.Header) uint64 {
		msg := &nats.Msg{Subject: "$KV.meetwatch-state." + key, Header: h, Data: []byte(data)}
		ack, err := js.PublishMsg(t.Context(), msg)
		require.NoError(t, err)
		return ack.Sequence
	}
	intent := func() nats.Header { return nats.Header{"Meetwatch-Intent": []string{"started"}} }
	put("m.a", `{"confUUID":"a"}`, intent())
	through := put("m.b", `{"confUUID":"b"}`, intent())
	put("meta", `{"observedAt":"2026-12-01T09:00:00Z","meetings":2,"through":`+fmt.Sprint(through)+`}`, nil)
	put("m.c", `{"confUUID":"c"}`, intent())

	for range 2 {
		st, err := store.Load(t.Context())
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"a", "b"}, slices.Collect(maps.Keys(st.Snapshot)))
		require.Len(t, st.Pending, 1)
		assert.Equal(t, "c", st.Pending[0].Key)
		require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 2}))
	}
	stream, err := js.Stream(t.Context(), "KV_meetwatch-state")
	require.NoError(t, err)
	a, err := stream.GetLastMsgForSubject(t.Context(), "$KV.meetwatch-state.m.a")
	require.NoError(t, err)
	assert.Empty(t, a.Header.Get("Meetwatch-Intent"), "written unmarked")
}

// A former leader's intent that lands after a new leader loaded, and
// before the new leader commits a poll of its own, stays pending: the new
// leader's commit does not cover it, and the next load announces it.
func TestALateIntentStaysPending(t *testing.T) {
	js := newJetStream(t)
	former := openStore(t, js)
	_, err := former.Load(t.Context())
	require.NoError(t, err)
	announce(t, former, started(t, "a")...)
	require.NoError(t, former.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 1}))

	next := openStore(t, js)
	_, err = next.Load(t.Context())
	require.NoError(t, err)
	require.NoError(t, former.Intend(t.Context(), started(t, "x"), time.Now()), "the late intent lands")
	announce(t, next, started(t, "b")...)
	require.NoError(t, next.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 2}))

	st, err := openStore(t, js).Load(t.Context())
	require.NoError(t, err)
	require.Len(t, st.Pending, 1, "the late intent, which nothing announced")
	assert.Equal(t, "x", st.Pending[0].Key)
	assert.ElementsMatch(t, []string{"a", "b"}, slices.Collect(maps.Keys(st.Snapshot)))
}

// A missing meeting's key is part of the commit that wrote it: one whose
// commit never landed, or a former leader's that landed late, names
// another listing than meta, and is not taken for missing, which would end
// its meeting with the next listing that lacks it; Load clears it.
func TestMissingRecordsOfAnotherListingAreNotMissing(t *testing.T) {
	js := newJetStream(t)
	store := openStore(t, js)
	_, err := store.Load(t.Context())
	require.NoError(t, err)
	lastSeen := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	observed := lastSeen.Add(time.Minute)
	announce(t, store, started(t, "a", "b")...)
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: observed, Meetings: 2, Missed: map[string]time.Time{"a": lastSeen}}))

	kv, err := js.KeyValue(t.Context(), "meetwatch-state")
	require.NoError(t, err)
	late, err := json.Marshal(map[string]any{"confUUID": "b", "lastSeen": lastSeen, "observedAt": observed.Add(time.Minute)})
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "e.b", late) // no commit follows
	require.NoError(t, err)

	st, err := openStore(t, js).Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]time.Time{"a": lastSeen}, st.Missing, "the committed one only")
	_, err = kv.Get(t.Context(), "e.b")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "cleared")
	_, err = kv.Get(t.Context(), "e.a")
	assert.NoError(t, err)
}

// Until a first commit, every meeting's lastSeen is when the earliest
// listing that recorded one of them was observed, however many polls
// failed after it: a meeting it recorded and a later one missed was last
// seen then.
func TestLastSeenBeforeAFirstCommitIsTheEarliestListings(t *testing.T) {
	js := newJetStream(t)
	t1 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	first := openStore(t, js)
	_, err := first.Load(t.Context())
	require.NoError(t, err)
	require.NoError(t, first.Intend(t.Context(), started(t, "a"), t1))
	require.NoError(t, first.Intend(t.Context(), started(t, "b"), t1.Add(time.Minute))) // the next poll, which failed too

	again := openStore(t, js) // and after a restart
	st, err := again.Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, t1, st.ObservedAt)
	require.NoError(t, again.Intend(t.Context(), started(t, "c"), t1.Add(2*time.Minute)))
	st, err = openStore(t, js).Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, t1, st.ObservedAt)
	assert.Len(t, st.Pending, 3)
}

// The key of a changed meeting is written before its event too, as an
// intent carrying the record before the change: Load returns the change
// as Pending, with what its event is built from, until Record replaces the
// intent once the event is acknowledged.
func TestLoadTellsUnannouncedChangesByTheirIntent(t *testing.T) {
	store := openStore(t, newJetStream(t))
	rec := func(id, subject string) snapshot.Meeting { return record(t, id, subject) }
	_, err := store.Load(t.Context())
	require.NoError(t, err)
	announce(t, store, started(t, "a")...)
	require.NoError(t, store.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 1}))

	base := store.Revision("a")
	require.NotZero(t, base, "the revision of the record before the change")
	renamed := snapshot.Change{Kind: snapshot.Changed, Key: "a", Old: rec("a", "a"), New: rec("a", "renamed"), Base: base}
	require.NoError(t, store.Intend(t.Context(), []snapshot.Change{renamed}, time.Now()))
	assert.Greater(t, store.Revision("a"), base, "the intent's")
	st, err := store.Load(t.Context())
	require.NoError(t, err)
	require.Len(t, st.Pending, 1)
	c := st.Pending[0]
	assert.Equal(t, snapshot.Changed, c.Kind)
	assert.Equal(t, base, c.Base, "the change's base, part of its event's id")
	assert.Equal(t, "a", c.Old.Subject)
	assert.Equal(t, "renamed", c.New.Subject)
	assert.Equal(t, []snapshot.FieldChange{{Field: "subject", Old: []byte(`"a"`), New: []byte(`"renamed"`)}}, c.Fields)
	assert.Equal(t, "a", st.Snapshot["a"].Subject, "the record before the change stands until the change is announced")

	require.NoError(t, store.Record(t.Context(), []snapshot.Change{renamed}, time.Now()))
	st, err = store.Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Pending, "announced and recorded")
	assert.Equal(t, "renamed", st.Snapshot["a"].Subject)
}

// A meeting listed again after its end starts its next incarnation: the
// delete marker of its key keeps the incarnation that ended, for the
// replica that ended it and for one loaded afresh, and every write of the
// key carries the one it is in.
func TestAMeetingBackAfterItsEndIsItsNextIncarnation(t *testing.T) {
	js := newJetStream(t)
	store := openStore(t, js)
	_, err := store.Load(t.Context())
	require.NoError(t, err)
	end := func(s *kvstore.Store, inc int) {
		announce(t, s, snapshot.Change{Kind: snapshot.Ended, Key: "a", Old: record(t, "a", "a"), Incarnation: inc})
	}
	start := func(s *kvstore.Store) int {
		c := started(t, "a")
		announce(t, s, c...)
		return c[0].Incarnation
	}
	assert.Equal(t, 1, start(store))
	end(store, 1)
	assert.Equal(t, 2, start(store), "back after its end, by the replica that ended it")
	st, err := openStore(t, js).Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"a": 2}, st.Incarnations)
	end(store, 2)

	again := openStore(t, js)
	_, err = again.Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 3, start(again), "and by a replica loaded afresh")
}

// Every write of a meeting's key expects the revision this replica last
// saw of it, so the server refuses the write of a former leader made over a
// newer leader's: a replica that wakes with writes in flight cannot undo
// the state that replaced it.
func TestTheServerRefusesAStaleWriteOfAMeetingKey(t *testing.T) {
	js := newJetStream(t)
	open := func() *kvstore.Store {
		s := openStore(t, js)
		_, err := s.Load(t.Context())
		require.NoError(t, err)
		return s
	}
	rec := func(subject string) snapshot.Meeting { return record(t, "a", subject) }
	first := open()
	announce(t, first, snapshot.Change{Kind: snapshot.Started, Key: "a", New: rec("first")})
	require.NoError(t, first.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: 1}))

	stale, fresh := open(), open()
	renamed := snapshot.Change{Kind: snapshot.Changed, Key: "a", Old: rec("first"), New: rec("renamed")}
	announce(t, fresh, renamed)

	late := []snapshot.Change{{Kind: snapshot.Changed, Key: "a", Old: rec("first"), New: rec("stale")}}
	err := stale.Record(t.Context(), late, time.Now())
	require.ErrorIs(t, err, kvstore.ErrKeyMoved)
	require.ErrorIs(t, err, watcher.ErrFenced, "a refused write ends the term")
	require.ErrorIs(t, stale.Intend(t.Context(), late, time.Now()), kvstore.ErrKeyMoved)
	ended := []snapshot.Change{{Kind: snapshot.Ended, Key: "a", Old: rec("first")}}
	require.ErrorIs(t, stale.Record(t.Context(), ended, time.Now()), kvstore.ErrKeyMoved, "nor can it end the meeting")
	// Nor start one the newer leader recorded since: the key holds a
	// record, not the marker of an earlier end, which a start may write
	// over.
	announce(t, fresh, snapshot.Change{Kind: snapshot.Started, Key: "b", New: record(t, "b", "new")})
	err = stale.Intend(t.Context(), []snapshot.Change{{Kind: snapshot.Started, Key: "b", New: record(t, "b", "stale")}}, time.Now())
	require.ErrorIs(t, err, kvstore.ErrKeyMoved, "nor can it start a meeting over the newer leader's")

	st, err := open().Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "renamed", st.Snapshot["a"].Subject, "the newer leader's record stands")

	// The newer leader goes on writing the key from its own revisions.
	announce(t, fresh, snapshot.Change{Kind: snapshot.Changed, Key: "a", Old: rec("renamed"), New: rec("renamed again")})
	announce(t, fresh, snapshot.Change{Kind: snapshot.Ended, Key: "a", Old: rec("renamed again")})
	st, err = open().Load(t.Context())
	require.NoError(t, err)
	assert.NotContains(t, st.Snapshot, "a")
}

// started returns the started changes of meetings ids, each with a record
// whose subject is its id.
func started(t *testing.T, ids ...string) []snapshot.Change {
	t.Helper()
	cs := make([]snapshot.Change, 0, len(ids))
	for _, id := range ids {
		cs = append(cs, snapshot.Change{Kind: snapshot.Started, Key: id, New: record(t, id, id)})
	}
	return cs
}

// announce records changes as a poll does: intents, then (their events
// acknowledged) the records.
func announce(t *testing.T, s *kvstore.Store, changes ...snapshot.Change) {
	t.Helper()
	require.NoError(t, s.Intend(t.Context(), changes, time.Now()))
	require.NoError(t, s.Record(t.Context(), changes, time.Now()))
}

// newJetStream starts a server for one test and connects to it.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	require.NoError(t, err)
	return js
}

// openStore opens the state bucket on js.
func openStore(t *testing.T, js jetstream.JetStream) *kvstore.Store {
	t.Helper()
	s, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state"})
	require.NoError(t, err)
	return s
}

// record is a meeting record with a subject.
func record(t *testing.T, id, subject string) snapshot.Meeting {
	t.Helper()
	m, err := snapshot.ParseMeeting(fmt.Appendf(nil, `{"confUUID":%q,"subject":%q}`, id, subject))
	require.NoError(t, err)
	return m
}

// holdingProxy forwards one NATS client's TCP connections to a server.
// While it holds, nothing the server sends reaches the client: the
// client's requests go out and get no answer, as while a stream has lost
// its leader.
type holdingProxy struct {
	ln   net.Listener
	gate sync.RWMutex // the server-to-client copies take it to write; hold locks it
	sent atomic.Int64 // bytes the server sent that were passed on
	trap atomic.Pointer[proxyTrap]
}

// proxyTrap stops the server-to-client copy once sent reaches at: it
// closes held and waits for release.
type proxyTrap struct {
	at            int64
	held, release chan struct{}
}

// holdAfter stops what the server sends once about n more bytes have
// passed, until the returned release, which the test's cleanup calls too;
// held is closed when it stops.
func (p *holdingProxy) holdAfter(t *testing.T, n int64) (held <-chan struct{}, release func()) {
	tr := &proxyTrap{at: p.sent.Load() + n, held: make(chan struct{}), release: make(chan struct{})}
	p.trap.Store(tr)
	release = sync.OnceFunc(func() { close(tr.release) })
	t.Cleanup(release)
	return tr.held, release
}

// hold stops what the server sends until the returned release, which the
// test's cleanup calls too.
func (p *holdingProxy) hold(t *testing.T) (release func()) {
	p.gate.Lock()
	release = sync.OnceFunc(p.gate.Unlock)
	t.Cleanup(release)
	return release
}

func startHoldingProxy(t *testing.T, target string) *holdingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &holdingProxy{ln: ln}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(server, client) })
			wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					if err != nil {
						return
					}
					p.gate.RLock()
					_, err = client.Write(buf[:n])
					p.gate.RUnlock()
					if err != nil {
						return
					}
					if tr := p.trap.Load(); p.sent.Add(int64(n)) >= tr.atOr() && p.trap.CompareAndSwap(tr, nil) {
						close(tr.held)
						<-tr.release
					}
				}
			})
		}
	})
	t.Cleanup(func() {
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

func (p *holdingProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// atOr is where tr stops the copy; never, for no trap.
func (tr *proxyTrap) atOr() int64 {
	if tr == nil {
		return math.MaxInt64
	}
	return tr.at
}

// proxiedStore commits records as started meetings on a new server, and
// returns a store of that bucket whose connection goes through a holding
// proxy, with the proxy and the store's log.
func proxiedStore(t *testing.T, records ...snapshot.Meeting) (*holdingProxy, *kvstore.Store, *simtest.Buffer) {
	t.Helper()
	srv := natstest.Start(t)
	direct, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	committed := openStore(t, direct)
	_, err = committed.Load(t.Context())
	require.NoError(t, err)
	starts := make([]snapshot.Change, 0, len(records))
	for _, m := range records {
		starts = append(starts, snapshot.Change{Kind: snapshot.Started, Key: m.UUID, New: m})
	}
	announce(t, committed, starts...)
	require.NoError(t, committed.Commit(t.Context(), watcher.Commit{ObservedAt: time.Now(), Meetings: len(records)}))

	proxy := startHoldingProxy(t, srv.Addr().String())
	nc, err := nats.Connect(proxy.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	logs := &simtest.Buffer{}
	store, err := kvstore.Open(t.Context(), js, kvstore.Config{Bucket: "meetwatch-state", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	return proxy, store, logs
}

// loadInBackground starts store.Load, and returns the wait for its
// state, 10 s at most.
func loadInBackground(t *testing.T, store *kvstore.Store, logs *simtest.Buffer) (wait func() watcher.State) {
	t.Helper()
	type result struct {
		st  watcher.State
		err error
	}
	loaded := make(chan result, 1)
	go func() {
		st, err := store.Load(t.Context())
		loaded <- result{st, err}
	}()
	return func() watcher.State {
		t.Helper()
		select {
		case r := <-loaded:
			require.NoError(t, r.err)
			return r.st
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the load did not finish", logs.String())
			return watcher.State{}
		}
	}
}

// A load that gets no answer within loadStall starts again, and says so:
// a slow start-up shows why it was slow.
func TestAStalledLoadStartsAgainAndSaysSo(t *testing.T) {
	proxy, store, logs := proxiedStore(t, record(t, "a", "first"))
	release := proxy.hold(t)
	held := time.Now()
	wait := loadInBackground(t, store, logs)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "loading the state stalled") },
		10*time.Second, 10*time.Millisecond, "the stalled load says so")
	assert.GreaterOrEqual(t, time.Since(held), time.Second, "a load is given time before it counts as stalled")
	release()
	st := wait()
	assert.Contains(t, st.Snapshot, "a")
	assert.True(t, st.Committed)
}

// A load may take longer than loadStall, as long as keys keep coming: it
// is not cut where its consumer's creation was bounded, and does not start
// again.
func TestALoadLongerThanItsStallBoundIsNotCut(t *testing.T) {
	const n = 2000
	pad := strings.Repeat("x", 1000)
	records := make([]snapshot.Meeting, n)
	for i := range records {
		records[i] = record(t, fmt.Sprintf("u%04d", i), pad)
	}
	proxy, store, logs := proxiedStore(t, records...)

	// Two pauses of 1.5 s each, shorter than the 2 s a load waits for
	// its next key, stretch the load past 3 s.
	held, release := proxy.holdAfter(t, 256<<10)
	start := time.Now()
	wait := loadInBackground(t, store, logs)
	for pause := range 2 {
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the load did not get that far", "pause %d", pause)
		}
		time.Sleep(1500 * time.Millisecond)
		if pause == 0 {
			next, releaseNext := proxy.holdAfter(t, 256<<10)
			release()
			held, release = next, releaseNext
			continue
		}
		release()
	}
	st := wait()
	assert.Greater(t, time.Since(start), 3*time.Second, "the load took longer than its stall bound")
	assert.Len(t, st.Snapshot, n)
	assert.NotContains(t, logs.String(), "stalled", "it never stalled, nor started again")
}
