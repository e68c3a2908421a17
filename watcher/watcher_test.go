package watcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
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
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	testToken  = "s3cr3t-token-value"
	testStream = "MEETINGS"
	testBucket = "meetwatch-state"
)

// rig is one watcher wired to a real NATS server and the simulated API.
type rig struct {
	api    *apisim.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	logs   *simtest.Buffer
	now    time.Time
	client *meetingapi.Client
}

func newRig(tb testing.TB) *rig { return newRigWith(tb, nil) }

// newRigPaged is newRig with a smaller page, so that a test can page over
// few meetings.
func newRigPaged(tb testing.TB, pageSize int) *rig {
	return newRigWith(tb, func(c *meetingapi.ClientConfig) { c.PageSize = pageSize })
}

// newRigWith is newRig with the API client's configuration adjusted.
func newRigWith(tb testing.TB, adjust func(*meetingapi.ClientConfig)) *rig {
	return newRigSim(tb, apisim.Options{Token: testToken, Seed: 1}, adjust)
}

// newRigSim is newRigWith with the simulator's options given.
func newRigSim(tb testing.TB, opts apisim.Options, adjust func(*meetingapi.ClientConfig)) *rig {
	tb.Helper()
	srv := natstest.Start(tb)
	nc := natstest.Connect(tb, srv)
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	api := apisim.NewServer(opts)
	tb.Cleanup(api.Close)
	cfg := meetingapi.ClientConfig{
		BaseURL: api.URL, Tokens: meetingapi.StaticToken(redact.NewSecret(testToken)), QueryAll: true,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	client, err := meetingapi.NewClient(cfg)
	require.NoError(tb, err)
	return &rig{api: api, nc: nc, js: js, logs: &simtest.Buffer{}, now: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), client: client}
}

// newWatcher returns a fresh watcher, as after a restart: it knows only
// what the state bucket holds.
func (r *rig) newWatcher(tb testing.TB, store watcher.StateStore) *watcher.Watcher {
	tb.Helper()
	return r.newWatcherWith(tb, store, nil)
}

// newWatcherRedacting is newWatcher with a redaction policy.
func (r *rig) newWatcherRedacting(tb testing.TB, store watcher.StateStore, red *redact.Policy) *watcher.Watcher {
	tb.Helper()
	return r.newWatcherWith(tb, store, func(c *watcher.Config) {
		c.Redact = red
		c.Builder.Redact = red
	})
}

// newWatcherWith is newWatcher with its configuration adjusted.
func (r *rig) newWatcherWith(tb testing.TB, store watcher.StateStore, adjust func(*watcher.Config)) *watcher.Watcher {
	tb.Helper()
	pub, err := publish.New(r.nc, publish.Config{Stream: testStream, Prefix: "meetings", Duplicates: time.Hour})
	require.NoError(tb, err)
	require.NoError(tb, pub.EnsureStream(tb.Context()))
	if store == nil {
		store = r.store(tb)
	}
	cfg := watcher.Config{
		Lister:      r.client,
		Publisher:   pub,
		Store:       store,
		Builder:     events.Builder{Source: events.Source(r.client.Host()), Prefix: "meetings"},
		Interval:    time.Second,
		PollTimeout: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:         r.clock,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	return watcher.New(cfg)
}

func (r *rig) store(tb testing.TB) *kvstore.Store {
	tb.Helper()
	st, err := kvstore.Open(tb.Context(), r.js, kvstore.Config{Bucket: testBucket})
	require.NoError(tb, err)
	return st
}

// clock advances one second per reading, so every poll has its own time.
func (r *rig) clock() time.Time {
	r.now = r.now.Add(time.Second)
	return r.now
}

// published returns every event in the stream, checking the NATS side of
// the contract for each: subject, Nats-Msg-Id and Content-Type.
func (r *rig) published(tb testing.TB) []events.Event {
	tb.Helper()
	var out []events.Event
	for _, m := range natstest.Messages(tb, r.nc, testStream) {
		e, err := events.Decode(m.Data)
		require.NoError(tb, err)
		assert.Equal(tb, events.Subject("meetings", e.Kind(), e.Subject), m.Subject)
		assert.Equal(tb, e.ID, m.Header.Get(jetstream.MsgIDHeader))
		assert.Equal(tb, events.ContentType, m.Header.Get("Content-Type"))
		out = append(out, e)
	}
	return out
}

// publishedSince returns the events stored after the first n.
func (r *rig) publishedSince(tb testing.TB, n int) []events.Event {
	tb.Helper()
	st, err := r.js.Stream(tb.Context(), testStream)
	require.NoError(tb, err)
	info, err := st.Info(tb.Context())
	require.NoError(tb, err)
	var out []events.Event
	for seq := uint64(n) + 1; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(tb.Context(), seq)
		require.NoError(tb, err)
		natstest.CheckEvents(tb, m)
		e, err := events.Decode(m.Data)
		require.NoError(tb, err)
		out = append(out, e)
	}
	return out
}

func kinds(evs []events.Event) map[snapshot.ChangeKind][]string {
	out := map[snapshot.ChangeKind][]string{}
	for _, e := range evs {
		out[e.Kind()] = append(out[e.Kind()], e.Subject)
	}
	return out
}

func TestPollPagesOver1234Meetings(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	want := r.api.Sim.AddN(1234)
	w := r.newWatcher(t, nil)

	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1234, res.Meetings)
	assert.Equal(t, 1234, res.Started)
	assert.Equal(t, 3, r.api.Sim.Requests(), "pages of 500: 0, 500, 1000")

	evs := r.published(t)
	require.Len(t, evs, 1234)
	assert.ElementsMatch(t, want, kinds(evs)[snapshot.Started])
	for _, e := range evs {
		assert.True(t, e.Data.Initial, "first snapshot ever: initial")
	}

	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Len(t, st.Snapshot, 1234)
	assert.True(t, st.Committed)
	assert.Equal(t, res.ObservedAt, st.ObservedAt)

	res, err = w.Poll(t.Context())
	require.NoError(t, err)
	assert.Zero(t, res.Started+res.Changed+res.Ended)
	assert.Len(t, r.published(t), 1234, "a poll with no differences publishes nothing")
}

func TestPollPublishesEachKind(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(3)
	w := r.newWatcher(t, nil)
	first, err := w.Poll(t.Context())
	require.NoError(t, err)

	require.True(t, r.api.Sim.End(ids[0]))
	require.True(t, r.api.Sim.Update(ids[1], func(rec apisim.Record) {
		rec["subject"] = "Renamed"
		cfg := rec["confConfigInfo"].(map[string]any)
		cfg["isAutoMute"] = !cfg["isAutoMute"].(bool)
		rec["newApiField"] = "flows through"
	}))
	added := r.api.Sim.AddN(1)
	_, err = w.Poll(t.Context())
	require.NoError(t, err)

	evs := r.published(t)[3:]
	require.Len(t, evs, 3)

	// The listing's own events first; then the end that a lookup
	// confirmed once the poll was committed.
	changed, started, ended := evs[0], evs[1], evs[2]
	assert.Equal(t, "meetwatch.meeting.ended", ended.Type)
	assert.Equal(t, ids[0], ended.Subject)
	require.NotNil(t, ended.Data.LastSeen)
	assert.Equal(t, first.ObservedAt, *ended.Data.LastSeen)
	assert.True(t, ended.Time.After(*ended.Data.LastSeen))
	assert.Contains(t, string(ended.Data.Conference), ids[0], "ended carries the last record seen")

	assert.Equal(t, "meetwatch.meeting.changed", changed.Type)
	assert.Equal(t, ids[1], changed.Subject)
	var fields []string
	for _, c := range changed.Data.Changes {
		fields = append(fields, c.Field)
	}
	assert.Equal(t, []string{"confConfigInfo.isAutoMute", "newApiField", "subject"}, fields)
	assert.Contains(t, string(changed.Data.Conference), `"newApiField":"flows through"`)
	assert.NotContains(t, string(changed.Data.Previous), "newApiField")

	assert.Equal(t, "meetwatch.meeting.started", started.Type)
	assert.Equal(t, added[0], started.Subject)
	assert.False(t, started.Data.Initial, "a meeting that started after the first snapshot is not initial")

	for _, e := range evs {
		assert.Equal(t, "1.0", e.SpecVersion)
		assert.Equal(t, "application/json", e.DataContentType)
		assert.Equal(t, "meetwatch://"+r.client.Host(), e.Source)
	}
}

// TestFailedPollPublishesAndCommitsNothing drives every kind of bad answer
// through a real poll: each must fail the poll, publish nothing, leave the
// stored state alone, and the meeting that really ended must be reported
// by the next good poll.
func TestFailedPollPublishesAndCommitsNothing(t *testing.T) {
	tests := []struct {
		name  string
		fault apisim.Fault
		want  error
	}{
		{name: "server error", fault: apisim.Fault{Status: 500}},
		{name: "token refused", fault: apisim.Fault{Status: 401, Code: "USG.000000004", Msg: "token " + testToken + " expired"}, want: meetingapi.ErrUnauthorized},
		{name: "truncated body", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":[{"confUUID":"x"`}, want: meetingapi.ErrBadPage},
		{name: "not json", fault: apisim.Fault{Body: `hello`}, want: meetingapi.ErrBadPage},
		{name: "html error page", fault: apisim.Fault{Body: `<html><body>502 Bad Gateway</body></html>`}, want: meetingapi.ErrBadPage},
		{name: "empty 200", fault: apisim.Fault{Body: " "}, want: meetingapi.ErrBadPage},
		{name: "count as string", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":"59","data":[]}`}, want: meetingapi.ErrBadPage},
		{name: "data as object", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":{}}`}, want: meetingapi.ErrBadPage},
		{name: "data null where records are due", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":null}`}, want: meetingapi.ErrIncomplete},
		{name: "record without confUUID", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":[{"subject":"x"}]}`}, want: snapshot.ErrNoUUID},
		{name: "duplicate confUUID on a page", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":[{"confUUID":"x"},{"confUUID":"x"}]}`}, want: meetingapi.ErrInconsistent},
		{name: "short page", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":59,"data":[{"confUUID":"x"}]}`}, want: meetingapi.ErrIncomplete},
		{name: "empty page inside the count", fault: apisim.Fault{Body: `{"offset":500,"limit":500,"count":60,"data":[]}`}, want: meetingapi.ErrIncomplete},
		{name: "negative count", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":-1,"data":[]}`}, want: meetingapi.ErrBadPage},
		{name: "huge count", fault: apisim.Fault{Body: `{"offset":20,"limit":20,"count":99999999999,"data":[]}`}, want: meetingapi.ErrBadPage},
		{name: "invalid utf-8", fault: apisim.Fault{Body: "{\"offset\":20,\"limit\":20,\"count\":59,\"data\":[{\"confUUID\":\"x\",\"subject\":\"\xff\"}]}"}, want: snapshot.ErrInvalidUTF8},
		{name: "connection reset mid-body", fault: apisim.Fault{Reset: true}},
		{name: "rejected as configured", fault: apisim.Fault{Status: 403, Code: "USG.000000002"}, want: meetingapi.ErrRejected},
		{name: "invalid parameters", fault: apisim.Fault{Status: 400}, want: meetingapi.ErrRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRigPaged(t, 20)
			ids := r.api.Sim.AddN(60)
			w := r.newWatcher(t, nil)
			_, err := w.Poll(t.Context())
			require.NoError(t, err)
			before, err := r.store(t).Load(t.Context())
			require.NoError(t, err)

			require.True(t, r.api.Sim.End(ids[0]))
			// Every try at every page after the first fails, retries
			// included.
			r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
				if req.URL.Query().Get("offset") != "0" {
					return &tt.fault
				}
				return nil
			})
			_, err = w.Poll(t.Context())
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.NotContains(t, err.Error(), testToken)
			assert.Len(t, r.published(t), 60, "a failed poll publishes nothing")
			after, err := r.store(t).Load(t.Context())
			require.NoError(t, err)
			assert.Equal(t, before, after, "a failed poll commits nothing")

			r.api.Sim.SetHook(nil)
			_, err = w.Poll(t.Context())
			require.NoError(t, err)
			evs := r.published(t)
			require.Len(t, evs, 61)
			assert.Equal(t, snapshot.Ended, evs[60].Kind())
			assert.Equal(t, ids[0], evs[60].Subject)
		})
	}
}

func TestListingThatKeepsChangingIsDiscarded(t *testing.T) {
	r := newRigPaged(t, 10)
	r.api.Sim.AddN(30)
	ids := r.api.Sim.UUIDs() // in list order
	// Pages of 10 overlap by 5; ending 6 meetings ahead of the second page
	// shifts the list by more than the overlap, every time.
	var ended atomic.Int32
	r.api.Sim.SetHook(beforeSecondPage(func() {
		for range 6 {
			r.api.Sim.End(ids[ended.Add(1)])
		}
	}))
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.Error(t, err)
	assert.ErrorIs(t, err, meetingapi.ErrInconsistent)
	assert.ErrorContains(t, err, "after 3 attempts")
	assert.Equal(t, int32(3*6), ended.Load(), "the listing was taken three times")
	assert.Empty(t, r.published(t))
	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.False(t, st.Committed)
}

// TestRestartNeitherRepeatsNorLoses stops a watcher, changes the world while
// it is down, and starts another on the same state.
func TestRestartNeitherRepeatsNorLoses(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(5)
	first, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)

	// While no watcher runs:
	r.api.Sim.End(ids[0])
	r.api.Sim.End(ids[1])
	r.api.Sim.Update(ids[2], func(rec apisim.Record) { rec["subject"] = "moved" })
	added := r.api.Sim.AddN(1)

	second := r.newWatcher(t, nil)
	res, err := second.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Started)
	assert.Equal(t, 1, res.Changed)
	assert.Equal(t, 2, res.Ended)

	evs := r.published(t)
	require.Len(t, evs, 5+4)
	perMeeting := map[string]int{}
	for _, e := range evs {
		if e.Kind() == snapshot.Started {
			perMeeting[e.Subject]++
		}
	}
	for id, n := range perMeeting {
		assert.Equal(t, 1, n, "started events for %s", id)
	}
	k := kinds(evs[5:])
	assert.ElementsMatch(t, ids[:2], k[snapshot.Ended])
	assert.Equal(t, []string{ids[2]}, k[snapshot.Changed])
	assert.Equal(t, added, k[snapshot.Started])
	for _, e := range evs[5:] {
		assert.False(t, e.Data.Initial)
		if e.Kind() == snapshot.Ended {
			require.NotNil(t, e.Data.LastSeen)
			assert.Equal(t, first.ObservedAt, *e.Data.LastSeen, "lastSeen survives the restart")
		}
	}
}

// failingStore records nothing of what was announced, as if the process
// died once the events were acknowledged.
type failingStore struct{ watcher.StateStore }

func (failingStore) Record(context.Context, []snapshot.Change, time.Time) error {
	return errors.New("killed before recording")
}

func TestRepublishAfterLostRecordsIsDeduplicated(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(20)
	_, err := r.newWatcher(t, failingStore{r.store(t)}).Poll(t.Context())
	require.ErrorContains(t, err, "killed before recording")
	require.Len(t, r.published(t), 20, "events were acknowledged before the records failed")

	// The meeting's live fields move before the restart; its start is still
	// the same transition and must keep its id.
	r.api.Sim.Update(ids[3], func(rec apisim.Record) { rec["onlineAttendeeAmount"] = 42 })

	res, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 20, res.Started, "the pending starts are published again")
	assert.Equal(t, 20, res.Duplicates, "under the same ids")
	assert.Equal(t, 1, res.Changed, "and what moved since is a change of its own")
	assert.Equal(t, 1, res.Stored)
	k := kinds(r.published(t))
	assert.Len(t, k[snapshot.Started], 20, "no second started after the restart")
	assert.Equal(t, []string{ids[3]}, k[snapshot.Changed])
}

// A record that flaps back to a value it had (an attendee count going 3, 4,
// 3, 4) changes each time: every change is an event of its own, none
// dropped as a duplicate of an earlier one with the same records. A change
// published again after a lost commit keeps its id all the same.
func TestAFlappingRecordChangesEachTime(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(3)
	attendees := func(n int) {
		require.True(t, r.api.Sim.Update(ids[1], func(rec apisim.Record) { rec["onlineAttendeeAmount"] = n }))
	}
	attendees(3)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)
	for _, n := range []int{4, 3, 4, 3} {
		attendees(n)
		res, err := w.Poll(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1, res.Changed, "to %d", n)
		assert.Zero(t, res.Duplicates, "to %d", n)
	}
	flaps := r.publishedSince(t, 3)
	require.Equal(t, 4, len(flaps), "every change stored")
	seen := map[string]bool{}
	for _, e := range flaps {
		assert.Equal(t, snapshot.Changed, e.Kind())
		assert.False(t, seen[e.ID], "id %s used twice", e.ID)
		seen[e.ID] = true
	}

	attendees(4)
	_, err = r.newWatcher(t, &lostWriteStore{Store: r.store(t)}).Poll(t.Context())
	require.ErrorContains(t, err, "killed after the acknowledgements")
	require.Len(t, r.publishedSince(t, 7), 1)
	res, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Changed, "the change published again from its intent")
	assert.Equal(t, 1, res.Duplicates, "under its id")
	assert.Len(t, r.publishedSince(t, 7), 1)
}

// TestAnnouncedButUnrecordedMeetingStillEnds: a started event was
// acknowledged, its record was lost, and the meeting ended before the next
// poll. The next poll must still publish its end.
func TestAnnouncedButUnrecordedMeetingStillEnds(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(3)
	_, err := r.newWatcher(t, failingStore{r.store(t)}).Poll(t.Context())
	require.ErrorContains(t, err, "killed before recording")
	require.Len(t, r.published(t), 3)

	r.api.Sim.End(ids[1])
	res, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Ended)
	k := kinds(r.published(t))
	assert.Len(t, k[snapshot.Started], 3)
	assert.Equal(t, []string{ids[1]}, k[snapshot.Ended])

	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Pending, "nothing left pending once committed")
	assert.Equal(t, 2, len(st.Snapshot))
}

func BenchmarkPoll10k(b *testing.B) {
	r := newRig(b)
	ids := r.api.Sim.AddN(10_000)
	w := r.newWatcher(b, nil)
	_, err := w.Poll(b.Context())
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		// 1% churn per poll: 50 changed, 25 ended, 25 started.
		for j := range 50 {
			r.api.Sim.Update(ids[(i*50+j)%len(ids)], func(rec apisim.Record) { rec["onlineAttendeeAmount"] = i })
		}
		_, err := w.Poll(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// halfWriteStore lands half of the keys of its first Record, and not the
// meta key, then fails: a process killed in the middle of a commit.
type halfWriteStore struct {
	*kvstore.Store
	failed bool
}

func (s *halfWriteStore) Record(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	if s.failed {
		return s.Store.Record(ctx, changes, observedAt)
	}
	s.failed = true
	if err := s.Store.Record(ctx, changes[:len(changes)/2], observedAt); err != nil {
		return err
	}
	return errors.New("killed mid-commit")
}

func TestPartialCommitIsRepairedByTheNextPoll(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(20)
	w := r.newWatcher(t, &halfWriteStore{Store: r.store(t), failed: true})
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	for _, id := range ids[:10] {
		r.api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = "renamed " + id })
	}
	w = r.newWatcher(t, &halfWriteStore{Store: r.store(t)})
	_, err = w.Poll(t.Context())
	require.ErrorContains(t, err, "killed mid-commit")

	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 5, res.Changed, "only the meetings whose keys did not land are diffed again")
	assert.Equal(t, 5, res.Duplicates, "and their events keep their ids")
	k := kinds(r.published(t))
	assert.Len(t, k[snapshot.Started], 20)
	assert.ElementsMatch(t, ids[:10], k[snapshot.Changed], "one changed event each")
	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Len(t, st.Snapshot, 20)
	assert.True(t, st.Committed)
}

// lostWriteStore stores nothing of its first Record and fails it: a process
// killed, or paused past its lease, once its events were acknowledged and
// before their keys were written.
type lostWriteStore struct {
	*kvstore.Store
	lost bool
}

func (s *lostWriteStore) Record(ctx context.Context, changes []snapshot.Change, observedAt time.Time) error {
	if s.lost {
		return s.Store.Record(ctx, changes, observedAt)
	}
	s.lost = true
	return errors.New("killed after the acknowledgements")
}

// TestChangesChainAcrossALostWrite: a rename is announced and the poll is
// cut short before its key is written; the meeting is renamed again before
// the next poll. The next poll must announce the second rename from the
// first, not the first again from the original subject: consumers follow a
// meeting's changes as a chain.
func TestChangesChainAcrossALostWrite(t *testing.T) {
	r := newRig(t)
	ids := r.api.Sim.AddN(5)
	_, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)

	r.api.Sim.Update(ids[2], func(rec apisim.Record) { rec["subject"] = "rename 1" })
	_, err = r.newWatcher(t, &lostWriteStore{Store: r.store(t)}).Poll(t.Context())
	require.ErrorContains(t, err, "killed after the acknowledgements")

	r.api.Sim.Update(ids[2], func(rec apisim.Record) { rec["subject"] = "rename 2" })
	res, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, res.Changed, "the pending change again, and the new one")
	assert.Equal(t, 1, res.Duplicates, "the pending change keeps its id")

	subject := func(raw json.RawMessage) string {
		var rec struct{ Subject string }
		require.NoError(t, json.Unmarshal(raw, &rec))
		return rec.Subject
	}
	var chain [][2]string
	for _, e := range r.published(t) {
		if e.Kind() == snapshot.Changed {
			chain = append(chain, [2]string{subject(e.Data.Previous), subject(e.Data.Conference)})
		}
	}
	require.Len(t, chain, 2)
	assert.Equal(t, "rename 1", chain[0][1])
	assert.Equal(t, [2]string{"rename 1", "rename 2"}, chain[1], "the second rename follows the first")

	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Pending)
	assert.Equal(t, "rename 2", st.Snapshot[ids[2]].Subject)
}
