package watcher_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// failLookups answers every end lookup with a 503 while on is set, as an
// API whose budget has no room for lookups would leave them unanswered.
func failLookups(on *atomic.Bool) func(*http.Request) *apisim.Fault {
	return func(req *http.Request) *apisim.Fault {
		if isConfirmation(req) && on.Load() {
			return &apisim.Fault{Status: http.StatusServiceUnavailable}
		}
		return nil
	}
}

// An end that no lookup confirms waits for exactly one more listing, and
// keeps the time its meeting was last seen, across a restart in between.
func TestEndWithoutLookupComesWithTheNextListing(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	first, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)

	var noLookups atomic.Bool
	noLookups.Store(true)
	r.api.Sim.SetHook(failLookups(&noLookups))
	require.True(t, r.api.Sim.End(ids[3]))
	missed, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, missed.Unconfirmed, "missing for the first time, not looked up")
	assert.Zero(t, missed.Ended)
	assert.Equal(t, 12, missed.Meetings, "kept in the snapshot until the next listing")
	assert.Len(t, r.published(t), 12)
	assert.Contains(t, r.logs.String(), `level=INFO msg="end lookups failed; the next listing settles those meetings"`)
	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]time.Time{ids[3]: first.ObservedAt}, st.Missing, "stored with when it was last seen")

	// A new watcher, as after a restart, on the same state: the next
	// listing lacks the meeting too, and that settles it, without a lookup.
	lookups := r.api.Sim.Requests()
	ended, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, ended.Ended)
	assert.Zero(t, ended.Unconfirmed)
	assert.Equal(t, lookups+2, r.api.Sim.Requests(), "two pages and no lookup")
	evs := r.published(t)
	require.Len(t, evs, 13)
	e := evs[12]
	assert.Equal(t, snapshot.Ended, e.Kind())
	assert.Equal(t, ids[3], e.Subject)
	require.NotNil(t, e.Data.LastSeen)
	assert.Equal(t, first.ObservedAt, *e.Data.LastSeen, "last seen by the listing before the one that first missed it")
	require.NotNil(t, e.Data.EndedAt)
	assert.Equal(t, missed.ObservedAt.UTC(), *e.Data.EndedAt, "ended when the listing that first missed it was taken, not the one that settled it")
	assert.True(t, ended.ObservedAt.After(missed.ObservedAt), "the settling listing came later")

	st, err = r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Missing)
	assert.NotContains(t, st.Snapshot, ids[3])
	kv, err := r.js.KeyValue(t.Context(), testBucket)
	require.NoError(t, err)
	_, err = kv.Get(t.Context(), "e."+ids[3])
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the missing record goes with the end")
}

// A meeting whose record has no conferenceID cannot be looked up: one
// listing that lacks it does not end it, the next one does.
func TestEndOfAMeetingWithoutConferenceIDWaitsForTheNextListing(t *testing.T) {
	r := newRigPaged(t, 10)
	rec := r.api.Sim.NewRecord()
	delete(rec, "conferenceID")
	id := r.api.Sim.Add(rec)[0]
	r.api.Sim.AddN(4)
	_, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)

	require.True(t, r.api.Sim.End(id))
	requests := r.api.Sim.Requests()
	missed, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Zero(t, missed.Ended, "one listing is not the word on its end")
	assert.Equal(t, 1, missed.Unconfirmed)
	assert.Equal(t, requests+1, r.api.Sim.Requests(), "one page, and no lookup without a conferenceID")
	assert.Equal(t, 5, len(r.published(t)), "the starts alone")
	logs := r.logs.String()
	assert.Contains(t, logs, `level=DEBUG msg="end lookups not sent; the next listing settles those meetings" component=watcher reason="confirming the end of `+id+`: it has no conferenceID: no lookup by conferenceID"`)
	assert.NotContains(t, logs, "end lookups failed", "a lookup not sent by design is no failure")

	ended, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, ended.Ended)
	evs := r.published(t)
	require.Len(t, evs, 6)
	assert.Equal(t, snapshot.Ended, evs[5].Kind())
	assert.Equal(t, id, evs[5].Subject)
}

// A meeting that one listing lacked and the next holds again never ended:
// no event, and no trace of it having been missing.
func TestMeetingListedAgainIsNotEnded(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	var noLookups atomic.Bool
	noLookups.Store(true)
	r.api.Sim.SetHook(failLookups(&noLookups))
	rec, ok := r.api.Sim.Get(ids[5])
	require.True(t, ok)
	require.True(t, r.api.Sim.End(ids[5]))
	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, res.Unconfirmed)

	r.api.Sim.Add(rec) // back, as the same instance
	res, err = w.Poll(t.Context())
	require.NoError(t, err)
	assert.Zero(t, res.Ended+res.Started+res.Changed, "nothing happened to it")
	assert.Len(t, r.published(t), 12)
	st, err := r.store(t).Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, st.Missing)
	assert.Contains(t, st.Snapshot, ids[5])
}

// A meeting listed again after its end, under the same confUUID, is
// ongoing again: its key, purged at the end, is written over the purge's
// marker, by the watcher that ended it and by one started afresh, without
// either taking the marker for another replica's write.
func TestMeetingListedAfterItsEndIsRecordedAgain(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)
	rec, ok := r.api.Sim.Get(ids[5])
	require.True(t, ok)

	for round, w := range []*watcher.Watcher{w, r.newWatcher(t, nil)} {
		require.True(t, r.api.Sim.End(ids[5]))
		res, err := w.Poll(t.Context())
		require.NoError(t, err, "round %d", round)
		require.Equal(t, 1, res.Ended, "round %d: a lookup confirms the end", round)

		r.api.Sim.Add(rec)
		res, err = w.Poll(t.Context())
		require.NoError(t, err, "round %d: the key is written over the marker", round)
		assert.Equal(t, 1, res.Started, "round %d", round)
		st, err := r.store(t).Load(t.Context())
		require.NoError(t, err)
		assert.Contains(t, st.Snapshot, ids[5], "round %d", round)
	}
}

// A poll looks up at most ConfirmConcurrency of the meetings its listing
// missed, so that a mass end costs one round of lookups, not one lookup
// each; the rest end with the next listing.
func TestLookupsAreOneRoundAPoll(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	w := r.newWatcherWith(t, nil, func(c *watcher.Config) { c.ConfirmConcurrency = 2 })
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	var lookups atomic.Int32
	r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
		if isConfirmation(req) {
			lookups.Add(1)
		}
		return nil
	})
	for _, id := range ids[:5] {
		require.True(t, r.api.Sim.End(id))
	}
	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 2, lookups.Load(), "one round of two lookups")
	assert.Equal(t, 2, res.Ended, "the two looked up end now")
	assert.Equal(t, 3, res.Unconfirmed, "the other three wait for the next listing")

	res, err = w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 3, res.Ended)
	assert.EqualValues(t, 2, lookups.Load(), "the second listing settles them without a lookup")
	ended := map[string]bool{}
	for _, e := range r.published(t) {
		if e.Kind() == snapshot.Ended {
			assert.False(t, ended[e.Subject], "ended twice: %s", e.Subject)
			ended[e.Subject] = true
		}
	}
	assert.Len(t, ended, 5)
}

// A lookup only speeds an end up: however long it takes to answer, the
// listing's own events are out, and the poll committed, before it does.
func TestLookupsNeverHoldTheListingsEventsBack(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	asked, answer := make(chan struct{}), make(chan struct{})
	var askOnce, answerOnce sync.Once
	t.Cleanup(func() { answerOnce.Do(func() { close(answer) }) })
	r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
		if isConfirmation(req) {
			askOnce.Do(func() { close(asked) })
			<-answer
		}
		return nil
	})
	require.True(t, r.api.Sim.End(ids[2]))
	added := r.api.Sim.AddN(1)[0]
	type polled struct {
		res watcher.PollResult
		err error
	}
	done := make(chan polled, 1)
	go func() {
		res, err := w.Poll(t.Context())
		done <- polled{res, err}
	}()

	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no lookup was asked for")
	}
	evs := r.publishedSince(t, 12)
	require.Len(t, evs, 1, "the listing's start is out while the lookup waits")
	assert.Equal(t, snapshot.Started, evs[0].Kind())
	assert.Equal(t, added, evs[0].Subject)
	st, err := kvstore.Read(t.Context(), r.js, testBucket, "")
	require.NoError(t, err)
	assert.Contains(t, st.Snapshot, added, "and committed")
	assert.Contains(t, st.Missing, ids[2], "with the vanished meeting missing, not ended")

	answerOnce.Do(func() { close(answer) })
	var p polled
	select {
	case p = <-done:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the poll did not finish once the lookup answered")
	}
	require.NoError(t, p.err)
	assert.Equal(t, [3]int{1, 0, 1}, [3]int{p.res.Started, p.res.Changed, p.res.Ended})
	evs = r.publishedSince(t, 13)
	require.Len(t, evs, 1)
	assert.Equal(t, snapshot.Ended, evs[0].Kind())
	assert.Equal(t, ids[2], evs[0].Subject)
	st, err = kvstore.Read(t.Context(), r.js, testBucket, "")
	require.NoError(t, err)
	assert.NotContains(t, st.Snapshot, ids[2], "its end committed")
	assert.Empty(t, st.Missing)
}

// cutStore fails the commit numbered fail (from 0) with err, and calls
// committed after each commit that succeeds.
type cutStore struct {
	watcher.StateStore
	fail      int
	err       error
	committed func(i int)
	calls     int
}

func (s *cutStore) Commit(ctx context.Context, c watcher.Commit) error {
	i := s.calls
	s.calls++
	if i == s.fail {
		return s.err
	}
	err := s.StateStore.Commit(ctx, c)
	if err == nil && s.committed != nil {
		s.committed(i)
	}
	return err
}

// cutPublisher fails every send while down is set.
type cutPublisher struct {
	watcher.Publisher
	down atomic.Bool
}

func (p *cutPublisher) Send(ctx context.Context, msgs []events.Message) (events.PublishResult, error) {
	if p.down.Load() {
		return events.PublishResult{}, errors.New("nats: no servers available for connection")
	}
	return p.Publisher.Send(ctx, msgs)
}

// The end lookups' step follows the poll's commit. Cut short anywhere
// (its events out and its commit failed, its events refused, or the term
// fenced at its commit and a new watcher taking over), it loses no end and
// announces none twice: the meeting ends once, with the time it was last
// seen, and the state settles.
func TestALookupStepCutShortEndsOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(store *cutStore, pub *cutPublisher)
	}{
		{"its commit fails", func(store *cutStore, _ *cutPublisher) {
			store.fail, store.err = 1, errors.New("nats: timeout")
		}},
		{"its events cannot go out", func(store *cutStore, pub *cutPublisher) {
			store.committed = func(i int) { pub.down.Store(i == 0) }
		}},
		{"fenced at its commit", func(store *cutStore, _ *cutPublisher) {
			store.fail, store.err = 1, watcher.ErrFenced
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigPaged(t, 10)
			ids := r.api.Sim.AddN(12)
			first, err := r.newWatcher(t, nil).Poll(t.Context())
			require.NoError(t, err)

			store := &cutStore{StateStore: r.store(t), fail: -1}
			var pub *cutPublisher
			w := r.newWatcherWith(t, store, func(c *watcher.Config) {
				pub = &cutPublisher{Publisher: c.Publisher}
				c.Publisher = pub
			})
			tc.cut(store, pub)
			require.True(t, r.api.Sim.End(ids[3]))
			if _, err := w.Poll(t.Context()); errors.Is(err, watcher.ErrFenced) {
				w = r.newWatcher(t, nil) // the next term
			} else {
				require.NoError(t, err, "a lookup's trouble only delays the end")
			}
			pub.down.Store(false) // NATS is back
			_, err = w.Poll(t.Context())
			require.NoError(t, err)

			var ends []events.Event
			for _, e := range r.published(t) {
				if e.Kind() == snapshot.Ended {
					ends = append(ends, e)
				}
			}
			require.Len(t, ends, 1)
			assert.Equal(t, ids[3], ends[0].Subject)
			require.NotNil(t, ends[0].Data.LastSeen)
			assert.Equal(t, first.ObservedAt, *ends[0].Data.LastSeen)
			st, err := r.store(t).Load(t.Context())
			require.NoError(t, err)
			assert.Empty(t, st.Missing)
			assert.Empty(t, st.Pending)
			assert.Len(t, st.Snapshot, 11)
		})
	}
}
