package watcher_test

import (
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// isConfirmation tells the watcher's end confirmations from its listings.
func isConfirmation(r *http.Request) bool { return r.URL.Query().Get("searchKey") != "" }

// thirtyInPagesOfTen returns a rig listing 30 meetings in pages of 10 that
// overlap by overlap records, one page at a time, so that a shift planned
// before a page is the one it sees; the meetings' ids in list order (by
// start time); and a watcher that has taken its first poll.
func thirtyInPagesOfTen(t *testing.T, overlap int) (*rig, []string, *watcher.Watcher) {
	t.Helper()
	r := newRigWith(t, func(c *meetingapi.ClientConfig) {
		c.PageSize = 10
		c.Overlap = overlap
		c.Concurrency = 1
	})
	r.api.Sim.AddN(30)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)
	return r, r.api.Sim.UUIDs(), w
}

// shiftBeforeSecondPage makes the list shift under the next listing, once:
// right before its second page, ids[0] (on the first page, read already)
// ends and a meeting that sorts last starts, and then also runs, when not
// nil. It returns where the started meeting's id is put.
func shiftBeforeSecondPage(r *rig, ids []string, also func()) *[]string {
	var (
		once  sync.Once
		pages atomic.Int32
		added []string
	)
	r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
		if !isConfirmation(req) && pages.Add(1) == 2 {
			once.Do(func() {
				r.api.Sim.End(ids[0])
				late := r.api.Sim.NewRecord()
				late["startTime"] = "2099-01-01 00:00" // sorts last
				added = r.api.Sim.Add(late)
				if also != nil {
					also()
				}
			})
		}
		return nil
	})
	return &added
}

// beforeSecondPage returns a simulator hook that calls change once per
// listing, right before the listing's first page after offset 0 is served:
// whichever page that is, some two pages that follow each other straddle
// the change.
func beforeSecondPage(change func()) func(*http.Request) *apisim.Fault {
	var (
		mu      sync.Mutex
		pending bool
	)
	return func(req *http.Request) *apisim.Fault {
		if isConfirmation(req) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case req.URL.Query().Get("offset") == "0":
			pending = true
		case pending:
			pending = false
			change()
		}
		return nil
	}
}

// TestShiftBetweenPagesIsNotAnEnd plays the failure offset paging invites:
// a meeting near the front ends between two page requests while another
// starts, so the count holds, every later record moves forward by one, and
// without an overlap one record falls between the pages. Only the meeting
// that really ended may be reported: with overlapping pages the shifted
// record is read anyway; without, the end lookup finds it still ongoing.
func TestShiftBetweenPagesIsNotAnEnd(t *testing.T) {
	tests := []struct {
		name      string
		overlap   int
		wantProbe int // records that only a lookup found still ongoing
	}{
		{name: "pages overlap", overlap: 0 /* the default: half a page of 10 */, wantProbe: 0},
		{name: "pages meet end to end", overlap: -1, wantProbe: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, ids, w := thirtyInPagesOfTen(t, tt.overlap)

			added := shiftBeforeSecondPage(r, ids, nil)
			res, err := w.Poll(t.Context())
			require.NoError(t, err)
			assert.Equal(t, tt.wantProbe, res.StillOngoing, "meetings only a lookup found")

			// The page at offset 0 was read before ids[0] ended, so this
			// listing still holds it.
			k := kinds(r.published(t)[30:])
			assert.Empty(t, k[snapshot.Ended], "no phantom end for the shifted meeting")
			assert.Equal(t, *added, k[snapshot.Started])
			assert.Empty(t, k[snapshot.Changed])
			st, err := r.store(t).Load(t.Context())
			require.NoError(t, err)
			assert.Equal(t, 31, len(st.Snapshot))
			assert.Contains(t, st.Snapshot, ids[10], "the shifted meeting stays in the state")

			r.api.Sim.SetHook(nil)
			res, err = w.Poll(t.Context())
			require.NoError(t, err)
			assert.Zero(t, res.StillOngoing)
			k = kinds(r.published(t)[31:])
			assert.Equal(t, []string{ids[0]}, k[snapshot.Ended], "the meeting that really ended is reported, once")
			assert.Len(t, r.published(t), 32)
		})
	}
}

// TestInconsistentListingIsTakenAgain shifts the list by more than the
// overlap between two pages once: that listing is discarded, and the next
// try, on a list that holds still, is published.
func TestInconsistentListingIsTakenAgain(t *testing.T) {
	r := newRigPaged(t, 10) // overlap 5
	r.api.Sim.AddN(30)
	ids := r.api.Sim.UUIDs() // in list order
	var once sync.Once
	r.api.Sim.SetHook(beforeSecondPage(func() {
		once.Do(func() {
			for _, id := range ids[1:7] {
				r.api.Sim.End(id)
			}
		})
	}))
	res, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 24, res.Meetings)
	assert.Equal(t, 24, res.Started)
	started := kinds(r.published(t))[snapshot.Started]
	for _, id := range ids[1:7] {
		assert.NotContains(t, started, id)
	}
	assert.GreaterOrEqual(t, r.api.Sim.Requests(), 2+5, "the listing was taken again")
}

func TestEndsThatCannotBeConfirmedWait(t *testing.T) {
	r := newRigPaged(t, 10)
	ids := r.api.Sim.AddN(12)
	w := r.newWatcher(t, nil)
	_, err := w.Poll(t.Context())
	require.NoError(t, err)

	r.api.Sim.End(ids[3])
	var fail atomic.Bool
	fail.Store(true)
	r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
		if isConfirmation(req) && fail.Load() {
			return &apisim.Fault{Status: http.StatusBadRequest}
		}
		return nil
	})
	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Unconfirmed)
	assert.Zero(t, res.Ended, "an end that cannot be confirmed is not published")
	assert.Len(t, r.published(t), 12)

	fail.Store(false)
	res, err = w.Poll(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Ended, "and is published once it can be")
	evs := r.published(t)
	require.Len(t, evs, 13)
	assert.Equal(t, ids[3], evs[12].Subject)
	assert.Equal(t, snapshot.Ended, evs[12].Kind())
}

// TestPropertyEventsMatchGroundTruth drives the simulator with a random
// schedule: meetings start, change and end between polls and during
// listings, and pages fail at random. The simulator's own record of what
// happened is the ground truth the published stream must match.
func TestPropertyEventsMatchGroundTruth(t *testing.T) {
	t.Parallel()
	for _, lookups := range []bool{true, false} {
		name := "lookups answered"
		if !lookups {
			name = "lookups never answered" // every end waits for a second listing
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			propertyEventsMatchGroundTruth(t, lookups)
		})
	}
}

func propertyEventsMatchGroundTruth(t *testing.T, lookups bool) {
	const polls = 120 // per mode: both run, under the race detector, in every CI run
	seed := simtest.Seed(t, 20261125)
	r := newRigSim(t, apisim.Options{Token: testToken, Seed: int64(seed)}, func(c *meetingapi.ClientConfig) {
		c.PageSize = 10
		c.BackoffBase, c.BackoffMax = time.Millisecond, 5*time.Millisecond
	})
	sim := r.api.Sim
	rng := rand.New(rand.NewPCG(seed, ^seed)) // the schedule; the records come from the simulator's Seed

	// Ground truth, on a logical clock that ticks with every mutation.
	type life struct{ born, died int64 }
	var (
		mu     sync.Mutex
		clock  int64
		truth  = map[string]*life{}
		faults int
		during int
	)
	step := func() {
		clock++
		kind, id := sim.Step(rng)
		switch kind {
		case "started":
			truth[id] = &life{born: clock}
		case "ended":
			truth[id].died = clock
		}
	}
	for _, id := range sim.AddN(40) {
		truth[id] = &life{born: 0}
	}
	var chaos atomic.Bool
	chaos.Store(true)
	sim.SetHook(func(req *http.Request) *apisim.Fault {
		if !lookups && isConfirmation(req) {
			return &apisim.Fault{Status: http.StatusServiceUnavailable}
		}
		if !chaos.Load() {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch x := rng.Float64(); { // the list changes while it is read
		case x < 0.05:
			step()
			during++
		case x < 0.10: // one ends and one starts: the count holds, records shift
			if ids := sim.UUIDs(); len(ids) > 0 {
				clock++
				id := ids[rng.IntN(len(ids))]
				sim.End(id)
				truth[id].died = clock
				clock++
				id = sim.AddN(1)[0]
				truth[id] = &life{born: clock}
				during++
			}
		}
		switch x := rng.Float64(); {
		case x < 0.04:
			faults++
			return &apisim.Fault{Status: 500}
		case x < 0.06:
			faults++
			return &apisim.Fault{Reset: true}
		case x < 0.08:
			faults++
			return &apisim.Fault{Body: `{"count":`}
		}
		return nil
	})

	w := r.newWatcher(t, nil)
	type window struct{ start, end int64 }
	var (
		windows     []window
		failedPolls int
		confirmed   int
		publishedAt = map[string]int64{} // event id → clock when its poll ended
	)
	poll := func() {
		mu.Lock()
		win := window{start: clock}
		mu.Unlock()
		res, err := w.Poll(t.Context())
		mu.Lock()
		win.end = clock
		mu.Unlock()
		windows = append(windows, win)
		if err != nil {
			failedPolls++
			return
		}
		confirmed += res.StillOngoing
		for _, e := range r.publishedSince(t, len(publishedAt)) {
			publishedAt[e.ID] = win.end
		}
	}
	for range polls {
		mu.Lock()
		for range rng.IntN(4) { // between polls
			step()
		}
		mu.Unlock()
		poll()
	}
	chaos.Store(false)
	poll()
	poll()

	evs := r.published(t)
	started, ended, changed := map[string]int{}, map[string]int{}, 0
	phantom, repeated, missedEnd, missedStart, endedUnstarted := 0, 0, 0, 0, 0
	for _, e := range evs {
		l := truth[e.Subject]
		require.NotNil(t, l, "event for a meeting that never existed: %s", e.Subject)
		switch e.Kind() {
		case snapshot.Started:
			started[e.Subject]++
		case snapshot.Changed:
			changed++
		case snapshot.Ended:
			ended[e.Subject]++
			if l.died == 0 || l.died > publishedAt[e.ID] {
				phantom++
				t.Errorf("phantom ended for %s (died at %d, published at %d)", e.Subject, l.died, publishedAt[e.ID])
			}
			if started[e.Subject] == 0 {
				endedUnstarted++
			}
		}
	}
	for id, n := range started {
		if n > 1 || ended[id] > 1 {
			repeated++
			t.Errorf("%s: %d started, %d ended events", id, n, ended[id])
		}
	}
	checkedStarts := 0
	for id, l := range truth {
		if l.died != 0 && started[id] == 1 && ended[id] == 0 {
			missedEnd++
			t.Errorf("missed ended for %s", id)
		}
		// Lasted at least two poll intervals: alive through two whole polls.
		for k := 0; k+1 < len(windows); k++ {
			if l.born <= windows[k].start && (l.died == 0 || l.died > windows[k+1].end) {
				checkedStarts++
				if started[id] == 0 {
					missedStart++
					t.Errorf("missed started for %s", id)
				}
				break
			}
		}
	}
	assert.Zero(t, phantom+repeated+missedEnd+missedStart+endedUnstarted)
	t.Logf("property: %d polls (%d failed), %d meetings, %d mutations (%d during listings), %d page faults; "+
		"checked %d started, %d ended, %d changed events, %d meetings that lasted two polls, %d confirmed still ongoing; "+
		"phantom ended %d, repeated %d, missed ended %d, missed started %d",
		len(windows), failedPolls, len(truth), clock, during, faults,
		len(started), len(ended), changed, checkedStarts, confirmed,
		phantom, repeated, missedEnd, missedStart)
}

// A meeting a listing missed that its lookup finds ongoing with a new
// record gets a changed event that says what changed, as a listing's would.
func TestLookupFindsAMissedMeetingChanged(t *testing.T) {
	r, ids, w := thirtyInPagesOfTen(t, -1) // pages end to end: a shift loses a record between them

	shiftBeforeSecondPage(r, ids, func() {
		// ids[10] moves to the end of the first page, read already.
		r.api.Sim.Update(ids[10], func(rec apisim.Record) { rec["subject"] = "Renamed while missed" })
	})
	res, err := w.Poll(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, res.StillOngoing, "the lookup found the missed meeting")
	assert.Equal(t, 1, res.Changed)

	var changed []events.Event
	for _, e := range r.published(t)[30:] {
		if e.Kind() == snapshot.Changed {
			changed = append(changed, e)
		}
	}
	require.Len(t, changed, 1)
	assert.Equal(t, ids[10], changed[0].Subject)
	require.Len(t, changed[0].Data.Changes, 1)
	assert.Equal(t, "subject", changed[0].Data.Changes[0].Field)
	assert.JSONEq(t, `"Renamed while missed"`, string(changed[0].Data.Changes[0].New))
}
