package meetingapi_test

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// TestOverlappingPages changes the list while it is read, right before the
// page at offset 28 (pages of 20 sharing 6 records: offsets 0, 14, 28, 42,
// ...; the hook runs at the third), and checks what the listing makes of
// it. A listing that holds must contain every meeting that was ongoing
// throughout; one that cannot prove it must fail.
func TestOverlappingPages(t *testing.T) {
	const meetings, pageSize, overlap = 100, 20, 5
	tests := []struct {
		name     string
		change   func(sim *apisim.Sim, ids []string) // ids in list order
		wantErr  error
		wantMore int // meetings started meanwhile that the listing holds
	}{
		{name: "nothing moves"},
		{
			name: "a shift as large as the overlap",
			change: func(sim *apisim.Sim, ids []string) {
				for _, id := range ids[:overlap] {
					sim.End(id)
				}
			},
		},
		{
			name: "a shift larger than the overlap",
			change: func(sim *apisim.Sim, ids []string) {
				for _, id := range ids[:overlap+1] {
					sim.End(id)
				}
			},
			wantErr: meetingapi.ErrInconsistent,
		},
		{
			name: "the list grows past the planned pages",
			change: func(sim *apisim.Sim, _ []string) {
				for range 3 * pageSize {
					rec := sim.NewRecord()
					rec["startTime"] = "2099-01-01 00:00" // sorts last
					sim.Add(rec)
				}
			},
			wantMore: 3 * pageSize,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := apisim.NewServer(apisim.Options{Token: "tok"})
			t.Cleanup(srv.Close)
			srv.Sim.AddN(meetings)
			before := srv.Sim.UUIDs()
			var once sync.Once
			srv.Sim.SetHook(func(r *http.Request) *apisim.Fault {
				if tt.change != nil && r.URL.Query().Get("offset") == "28" {
					once.Do(func() { tt.change(srv.Sim, before) })
				}
				return nil
			})
			c, err := meetingapi.NewClient(meetingapi.ClientConfig{
				BaseURL: srv.URL, Tokens: meetingapi.StaticToken(redact.NewSecret("tok")),
				PageSize: pageSize, Overlap: overlap, Concurrency: 1, ListAttempts: 1,
			})
			require.NoError(t, err)

			snap, err := c.List(t.Context(), nil, nil)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.ErrorContains(t, err, "more than 5 records")
				return
			}
			require.NoError(t, err)
			after := srv.Sim.UUIDs()
			for _, id := range before {
				if slices.Contains(after, id) {
					assert.Contains(t, snap, id, "a meeting ongoing throughout is listed")
				}
			}
			for _, id := range after {
				if !slices.Contains(before, id) {
					assert.Contains(t, snap, id, "a meeting that started meanwhile, at the end of the list")
				}
			}
			assert.Len(t, snap, meetings+tt.wantMore, "meetings that ended meanwhile were read before they did")
		})
	}
}

// A page that does not join the one before it fails the listing at once:
// the pages after it are not requested, so that the request budget goes to
// the listing taken again instead.
func TestAListingThatBreaksStopsRequesting(t *testing.T) {
	const meetings, pageSize, overlap = 200, 20, 5 // offsets 0, 14, 28, ..., 182
	srv := apisim.NewServer(apisim.Options{Token: "tok"})
	t.Cleanup(srv.Close)
	srv.Sim.AddN(meetings)
	ids := srv.Sim.UUIDs()
	var (
		once   sync.Once
		served atomic.Int32
	)
	srv.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		served.Add(1)
		switch off, _ := strconv.Atoi(r.URL.Query().Get("offset")); {
		case off == 28:
			once.Do(func() {
				for _, id := range ids[:overlap+1] {
					srv.Sim.End(id)
				}
			})
		case off > 28:
			return &apisim.Fault{Delay: 200 * time.Millisecond} // time for the listing to see the break
		}
		return nil
	})
	c, err := meetingapi.NewClient(meetingapi.ClientConfig{
		BaseURL: srv.URL, Tokens: meetingapi.StaticToken(redact.NewSecret("tok")),
		PageSize: pageSize, Overlap: overlap, Concurrency: 1, ListAttempts: 1,
	})
	require.NoError(t, err)

	_, err = c.List(t.Context(), nil, nil)
	require.ErrorIs(t, err, meetingapi.ErrInconsistent)
	assert.ErrorContains(t, err, "do not overlap")
	assert.LessOrEqual(t, int(served.Load()), 5, "pages 0, 14 and 28, and at most two more already asked for, of 14")
}

// A lookup sends nothing when it cannot help. It only speeds an end up, so
// it never waits for the budget: with no room, Confirm fails at once, with
// an error that tells the watcher it was skipped. And
// while the listings are filtered by a search key, no meeting is looked
// up: a lookup by its ID would find a meeting that left the filtered list
// still ongoing, where the listings end it.
func TestLookupSendsNothingWhenItCannotHelp(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(c *meetingapi.ClientConfig, rec apisim.Record)
		want   error
	}{
		{"no room in the budget", func(c *meetingapi.ClientConfig, _ apisim.Record) {
			c.Budget = rate.NewLimiter(rate.Every(time.Hour), 1) // spent by the listing
		}, meetingapi.ErrNoBudget},
		{"listings filtered by a search key", func(c *meetingapi.ClientConfig, rec apisim.Record) {
			c.SearchKey = rec["subject"].(string)
		}, meetingapi.ErrNoLookup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := apisim.NewServer(apisim.Options{Token: "tok"})
			t.Cleanup(srv.Close)
			id := srv.Sim.AddN(1)[0]
			rec, ok := srv.Sim.Get(id)
			require.True(t, ok)
			cfg := meetingapi.ClientConfig{BaseURL: srv.URL, Tokens: meetingapi.StaticToken(redact.NewSecret("tok"))}
			tt.adjust(&cfg, rec)
			c, err := meetingapi.NewClient(cfg)
			require.NoError(t, err)
			snap, err := c.List(t.Context(), nil, nil)
			require.NoError(t, err)
			require.Contains(t, snap, id)

			requests := srv.Sim.Requests()
			_, _, err = c.Confirm(t.Context(), snap[id], nil)
			require.ErrorIs(t, err, tt.want)
			assert.ErrorIs(t, err, watcher.ErrSkipped, "the watcher knows that nothing failed")
			assert.Equal(t, requests, srv.Sim.Requests(), "no request sent")
		})
	}
}

// A page is decoded without holding a request slot: while one page's
// records are read, the next page is requested, and never more requests
// than Concurrency are in flight. In a synctest bubble, so that each
// request's time to answer is fake.
func TestAPageIsDecodedWhileTheNextIsRequested(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := simtest.NewPipe(t, apisim.Options{Token: "tok"})
		p.Sim.AddN(60)
		var (
			inFlight, most atomic.Int32
			waiting        atomic.Bool
		)
		requested := make(chan struct{}, 1)
		p.Sim.SetHook(func(*http.Request) *apisim.Fault {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if waiting.Load() {
				select {
				case requested <- struct{}{}:
				default:
				}
			}
			time.Sleep(10 * time.Millisecond) // the other pages cannot all pass the one that waits
			return nil
		})
		c, err := meetingapi.NewClient(meetingapi.ClientConfig{
			BaseURL: p.URL, HTTPClient: p.Client(), Tokens: meetingapi.StaticToken(redact.NewSecret("tok")),
			PageSize: 10, Overlap: -1, Concurrency: 1, ListAttempts: 1,
		})
		require.NoError(t, err)

		var (
			records            atomic.Int32
			waited, overlapped atomic.Bool
		)
		snap, err := c.List(t.Context(), func(raw []byte) (snapshot.Meeting, error) {
			// Past the first page, which is read alone, one record waits
			// for a request sent while it does; the others go on.
			if records.Add(1) > 10 && waited.CompareAndSwap(false, true) {
				waiting.Store(true)
				select {
				case <-requested:
					overlapped.Store(true)
				case <-time.After(5 * time.Second):
				}
			}
			return snapshot.ParseMeeting(raw)
		}, nil)
		require.NoError(t, err)
		assert.Len(t, snap, 60)
		assert.True(t, overlapped.Load(), "a page was requested while another was decoded")
		assert.EqualValues(t, 1, most.Load(), "one request in flight at most")
	})
}

// TestListingRequestsCountsAListing checks ListingRequests, and the plan a
// listing tells after its first page, against the requests the listing
// really sends, for lists around the page boundaries, and that FirstPage
// sends exactly one request and tells the count.
func TestListingRequestsCountsAListing(t *testing.T) {
	tests := []struct {
		meetings, pageSize, overlap int
		want                        int
	}{
		{meetings: 0, pageSize: 500, overlap: 20, want: 1},
		{meetings: 500, pageSize: 500, overlap: 20, want: 1},
		{meetings: 501, pageSize: 500, overlap: 20, want: 2},
		{meetings: 1234, pageSize: 500, overlap: 20, want: 3}, // strides of 479: 0, 479, 958
		{meetings: 1458, pageSize: 500, overlap: 20, want: 3}, // the third page ends at 958+500
		{meetings: 1459, pageSize: 500, overlap: 20, want: 4},
		{meetings: 100, pageSize: 10, overlap: -1, want: 10}, // no overlap: pages end to end
		{meetings: 100, pageSize: 20, overlap: 5, want: 7},   // strides of 14
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.meetings)+" in pages of "+strconv.Itoa(tt.pageSize), func(t *testing.T) {
			t.Parallel()
			srv := apisim.NewServer(apisim.Options{Token: "tok"})
			t.Cleanup(srv.Close)
			srv.Sim.AddN(tt.meetings)
			c, err := meetingapi.NewClient(meetingapi.ClientConfig{
				BaseURL: srv.URL, Tokens: meetingapi.StaticToken(redact.NewSecret("tok")),
				PageSize: tt.pageSize, Overlap: tt.overlap,
			})
			require.NoError(t, err)

			first, err := c.FirstPage(t.Context())
			require.NoError(t, err)
			assert.Equal(t, 1, srv.Sim.Requests(), "FirstPage sends one request")
			assert.Equal(t, tt.meetings, first.Count)
			assert.Len(t, first.Records, min(tt.meetings, tt.pageSize))
			assert.Equal(t, tt.want, c.ListingRequests(first))

			var plans []watcher.Plan
			snap, err := c.List(t.Context(), nil, func(p watcher.Plan) {
				plans = append(plans, p)
				assert.Equal(t, 1+1, srv.Sim.Requests(), "planned after the first page")
			})
			require.NoError(t, err)
			require.Len(t, snap, tt.meetings)
			assert.Equal(t, tt.want, srv.Sim.Requests()-1, "requests of a listing")
			rounds := (tt.want - 1 + 3) / 4 // the pages after the first, 4 at a time
			assert.Equal(t, []watcher.Plan{{Requests: tt.want, Rounds: rounds}}, plans, "one plan")
		})
	}
}

// TestFirstPageDoesNotRetry checks that FirstPage reports the API's first
// answer, where a listing would retry it or log in again.
func TestFirstPageDoesNotRetry(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			srv := apisim.NewServer(apisim.Options{Token: "tok"})
			t.Cleanup(srv.Close)
			srv.Sim.FailOnce(0, apisim.Fault{Status: status})
			c, err := meetingapi.NewClient(meetingapi.ClientConfig{BaseURL: srv.URL, Tokens: meetingapi.StaticToken(redact.NewSecret("tok"))})
			require.NoError(t, err)
			_, err = c.FirstPage(t.Context())
			var apiErr *meetingapi.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, status, apiErr.Status)
			assert.Equal(t, 1, srv.Sim.Requests())
		})
	}
}
