package watcher_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/ha"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// The tests of this file check the engine's timing (Run's schedule, its
// deadlines and backoff, token lifetimes) inside testing/synctest bubbles:
// time is fake, so the figures asserted are exact and nothing waits. The
// simulated API is reached over in-memory pipes, and the engine's ports are
// the in-memory ones of ports_test.go.

// bubbleRig is one watcher for a synctest bubble: the simulated API, the
// real client reaching it over in-memory pipes, and the engine's ports in
// memory. Build it inside the bubble.
type bubbleRig struct {
	api    *simtest.Pipe
	client *meetingapi.Client
	pub    *memPublisher
	store  *memStore
	logs   *simtest.Buffer
	t0     time.Time // fake time when the rig was built
}

// newBubbleRig builds a bubbleRig whose client holds testToken; adjust,
// when set, changes the client's configuration, whose HTTPClient and
// BaseURL already reach the simulator.
func newBubbleRig(tb testing.TB, opts apisim.Options, adjust func(*meetingapi.ClientConfig)) *bubbleRig {
	tb.Helper()
	api := simtest.NewPipe(tb, opts)
	cfg := meetingapi.ClientConfig{
		BaseURL: api.URL, HTTPClient: api.Client(), QueryAll: true,
		Tokens: meetingapi.StaticToken(redact.NewSecret(testToken)),
	}
	if adjust != nil {
		adjust(&cfg)
	}
	client, err := meetingapi.NewClient(cfg)
	require.NoError(tb, err)
	return &bubbleRig{api: api, client: client, pub: &memPublisher{}, store: &memStore{}, logs: &simtest.Buffer{}, t0: time.Now()}
}

// newWatcher returns a watcher on the rig's ports, polling every 10s, with
// the bubble's clock.
func (r *bubbleRig) newWatcher(tb testing.TB, adjust func(*watcher.Config)) *watcher.Watcher {
	tb.Helper()
	cfg := watcher.Config{
		Lister:    r.client,
		Publisher: r.pub,
		Store:     r.store,
		Builder:   events.Builder{Source: events.Source(r.client.Host()), Prefix: "meetings"},
		Interval:  10 * time.Second,
		Logger:    slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if adjust != nil {
		adjust(&cfg)
	}
	return watcher.New(cfg)
}

// run starts w.Run. stop cancels it and returns Run's error and how long,
// in fake time, Run took to return after the cancel. Run is also stopped
// when the test ends, so a failed assertion does not leave it polling.
func (r *bubbleRig) run(tb testing.TB, w *watcher.Watcher) (stop func() (time.Duration, error)) {
	tb.Helper()
	ctx, cancel := context.WithCancel(tb.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var (
		once sync.Once
		took time.Duration
		err  error
	)
	stop = func() (time.Duration, error) {
		once.Do(func() {
			cancelled := time.Now()
			cancel()
			err = <-done
			took = time.Since(cancelled)
		})
		return took, err
	}
	tb.Cleanup(func() { _, _ = stop() })
	return stop
}

// since returns each of ts as the fake time elapsed since t0.
func since(t0 time.Time, ts []time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(t0)
	}
	return out
}

// gaps returns the time between each two consecutive instants of at.
func gaps(at []time.Duration) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(at); i++ {
		out = append(out, at[i]-at[i-1])
	}
	return out
}

// recordListings makes the simulator answer its i-th listing request with
// answer(i) (nil: the normal answer), and returns when each listing request
// arrived, in fake time since recordListings was called. End confirmations
// and logins are neither counted nor answered by it.
func recordListings(tb testing.TB, sim *apisim.Sim, answer func(i int) *apisim.Fault) func() []time.Duration {
	tb.Helper()
	t0 := time.Now()
	var (
		mu sync.Mutex
		at []time.Duration
	)
	sim.SetHook(func(req *http.Request) *apisim.Fault {
		if req.URL.Path != apisim.Path || isConfirmation(req) {
			return nil
		}
		mu.Lock()
		i := len(at)
		at = append(at, time.Since(t0))
		mu.Unlock()
		if answer == nil {
			return nil
		}
		return answer(i)
	})
	return func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(at)
	}
}

func TestRunPollsEveryInterval(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration // every listing takes this long
	}{
		{name: "quick listings"},
		{name: "slow listings keep the cadence", delay: 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
				ids := r.api.Sim.AddN(3)
				arrivals := recordListings(t, r.api.Sim, func(int) *apisim.Fault {
					if tt.delay == 0 {
						return nil
					}
					return &apisim.Fault{Delay: tt.delay}
				})
				w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = 10 * time.Second })
				stop := r.run(t, w)
				time.Sleep(35 * time.Second)
				_, err := stop()
				require.NoError(t, err)

				assert.Equal(t, []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second}, arrivals(),
					"a poll starts every interval, however long the last one took")
				d := tt.delay
				assert.Equal(t, []time.Duration{d, 10*time.Second + d, 20*time.Second + d, 30*time.Second + d},
					since(r.t0, r.store.commitTimes()), "each poll commits once its listing is in")
				var got []string
				for _, e := range r.pub.events() {
					got = append(got, e.Subject)
				}
				assert.ElementsMatch(t, ids, got, "the first poll announces the meetings, the others find nothing new")
			})
		})
	}
}

// pollStarts returns the distinct instants of at, in order: when each poll
// sent its requests, when a poll sends several at once.
func pollStarts(at []time.Duration) []time.Duration {
	return slices.Compact(slices.Clone(at))
}

// assertBackoff checks the gaps between the starts of polls that failed in
// a row: after the k-th failure (0-based), a jittered wait in the upper
// half of interval doubled k times, capped at most, and never less than
// the interval.
func assertBackoff(t *testing.T, interval, most time.Duration, gaps []time.Duration) {
	t.Helper()
	for k, got := range gaps {
		d := min(interval<<k, most)
		assert.GreaterOrEqual(t, got, max(d/2, interval), "wait after failure %d", k+1)
		assert.LessOrEqual(t, got, d, "wait after failure %d", k+1)
	}
}

// TestRunBacksOffAfterFailedPolls: every failed poll, whatever failed,
// waits a jittered backoff before the next one: from the interval,
// doubling up to the larger of the interval and 30 s, never sooner than
// the interval; a success
// polls again after the interval and starts the backoff over. The
// messages for a refused token and a rejected configuration stay.
func TestRunBacksOffAfterFailedPolls(t *testing.T) {
	const interval = time.Second
	// failing reports whether poll i fails: polls 0 to 9, and 11.
	failing := func(i int) bool { return i < 10 || i == 11 }
	tests := []struct {
		name string
		// fault answers listing request i; perPoll is how many requests
		// a failing poll sends.
		fault   func(i int) *apisim.Fault
		perPoll int
		// commitFails makes the i-th poll's commit fail instead.
		commitFails bool
		wantMsg     string
		wantAttrs   string
	}{
		{
			name: "rejected configuration (403)",
			fault: func(i int) *apisim.Fault {
				if failing(i) {
					return &apisim.Fault{Status: http.StatusForbidden, Code: "USG.000000002", Msg: "not an administrator"}
				}
				return nil
			},
			perPoll:   1,
			wantMsg:   "rejected the request as configured",
			wantAttrs: "error_code=USG.000000002",
		},
		{
			// A refused static token cannot be renewed, so it is not
			// tried again at once: one request a failing poll, and the
			// error says why.
			name: "refused static token (401)",
			fault: func(i int) *apisim.Fault {
				if failing(i) {
					return &apisim.Fault{Status: http.StatusUnauthorized}
				}
				return nil
			},
			perPoll:   1,
			wantMsg:   "authentication failed: the API refused the access token",
			wantAttrs: "the api refused the static access token, which cannot be renewed",
		},
		{
			// The events went out before the commit failed: the line
			// says so, until a poll that publishes nothing fails.
			name: "committing fails", commitFails: true, perPoll: 1, wantMsg: " published=",
			wantAttrs: `msg="poll failed after publishing some of its events; nothing committed: the next poll publishes again, under the same ids, those it finds unrecorded" component=watcher err="committing state: nats unreachable" consecutive_errors=1 published=1`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
				r.api.Sim.AddN(1)
				wantRequests := 10*tt.perPoll + 1 + tt.perPoll + 1
				reached := make(chan struct{})
				arrivals := recordListings(t, r.api.Sim, func(i int) *apisim.Fault {
					if i == wantRequests-1 {
						close(reached)
					}
					if tt.fault != nil {
						return tt.fault(i)
					}
					return nil
				})
				if tt.commitFails {
					r.store.failCommit = func(i int) error {
						if failing(i) {
							return errors.New("nats unreachable")
						}
						return nil
					}
				}
				w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = interval })
				stop := r.run(t, w)
				<-reached
				_, err := stop()
				require.NoError(t, err)

				at := arrivals()
				require.Len(t, at, wantRequests, "%d requests a failing poll, none more", tt.perPoll)
				got := gaps(pollStarts(at))
				require.Len(t, got, 12, "13 polls")
				assertBackoff(t, interval, watcher.MaxBackoff(interval), got[:10])
				assert.Equal(t, interval, got[10], "after a success, the next poll comes after the interval")
				assert.Equal(t, interval, got[11], "a new failure backs off from the start again: the interval")
				t.Logf("waits after 10 failures in a row: %v", got[:10])

				commits := since(r.t0, r.store.commitTimes())
				require.NotEmpty(t, commits)
				assert.Equal(t, pollStarts(at)[10], commits[0], "poll 10 is the first to succeed")
				logs := r.logs.String()
				assert.Equal(t, 11, strings.Count(logs, tt.wantMsg), logs)
				assert.Contains(t, logs, tt.wantAttrs)
				assert.Regexp(t, `polling recovered.* consecutive_errors=10`, logs)
			})
		})
	}
}

// TestRunWaitsForRetryAfter: a 429 with Retry-After holds the poll
// scheduler too. A pause that outlasts the poll's deadline fails the poll,
// and the next poll starts when the pause ends rather than after the
// interval or the backoff, with PollTimeout again (a slow listing right
// after gets 1s); a pause that fits is waited for within the poll.
func TestRunWaitsForRetryAfter(t *testing.T) {
	s := time.Second
	tests := []struct {
		name        string
		interval    time.Duration // 10s when zero
		pollTimeout time.Duration
		retryAfter  string
		slowAfter   bool            // the listing after the pause takes 1.5s
		watch       time.Duration   // how long Run runs
		wantAt      []time.Duration // when each listing request arrived
		wantCommits []time.Duration
		wantLogs    map[string]int
	}{
		{
			name: "a pause past the poll's deadline", pollTimeout: s, retryAfter: "30", slowAfter: true, watch: 50 * s,
			wantAt:      []time.Duration{0, 10 * s, 40 * s},
			wantCommits: []time.Duration{0},
			wantLogs: map[string]int{
				"longer than its deadline (1s)": 2, "(2s)": 0, "api answered 429": 1,
				"the api asked for a pause; the next poll waits for it": 1,
			},
		},
		{
			name: "a pause within the poll's deadline", pollTimeout: 5 * s, retryAfter: "2", watch: 55 * s,
			wantAt:      []time.Duration{0, 10 * s, 12 * s, 20 * s, 30 * s, 40 * s, 50 * s},
			wantCommits: []time.Duration{0, 12 * s, 20 * s, 30 * s, 40 * s, 50 * s},
			wantLogs:    map[string]int{"longer than its deadline": 0, "asked for a pause": 0, "poll failed": 0},
		},
		{
			// Over by the time the poll is: the next poll, due already,
			// starts at once, and nothing says it waits.
			name: "a pause within the poll, longer than the interval", interval: s, pollTimeout: 5 * s, retryAfter: "2", watch: 5500 * time.Millisecond,
			wantAt:      []time.Duration{0, s, 3 * s, 3 * s, 4 * s, 5 * s},
			wantCommits: []time.Duration{0, 3 * s, 3 * s, 4 * s, 5 * s},
			wantLogs:    map[string]int{"asked for a pause": 0, "poll failed": 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
				r.api.Sim.AddN(2)
				arrivals := recordListings(t, r.api.Sim, func(i int) *apisim.Fault {
					switch {
					case i == 1:
						return &apisim.Fault{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {tt.retryAfter}}}
					case i == 2 && tt.slowAfter:
						return &apisim.Fault{Delay: 1500 * time.Millisecond}
					}
					return nil
				})
				w := r.newWatcher(t, func(c *watcher.Config) {
					c.Interval = cmp.Or(tt.interval, 10*s)
					c.PollTimeout = tt.pollTimeout
				})
				stop := r.run(t, w)
				time.Sleep(tt.watch)
				_, err := stop()
				require.NoError(t, err)

				assert.Equal(t, tt.wantAt, arrivals())
				assert.Equal(t, tt.wantCommits, since(r.t0, r.store.commitTimes()))
				logs := r.logs.String()
				for msg, n := range tt.wantLogs {
					assert.Equal(t, n, strings.Count(logs, msg), "%q in the logs:\n%s", msg, logs)
				}
			})
		})
	}
}

// TestRunTimesAPollByItsFirstPage: without a request budget, a listing of
// pages slower than PollTimeout allows is not cut short: its first page
// sets the poll's deadline to what the pages after it need at twice that
// page's pace, with a heartbeat, and every poll commits. A hung API still
// gives way after PollTimeout, at every poll: a poll that ran out of time
// gives the next one no longer.
func TestRunTimesAPollByItsFirstPage(t *testing.T) {
	s := time.Second
	tests := []struct {
		name        string
		delay       time.Duration // of every listing request
		watch       time.Duration // how long Run runs
		wantCommits []time.Duration
		wantBeats   []time.Duration // the deadlines Health heard
	}{
		{
			// Five pages a second each, one at a time: the first page, at
			// 1s, moves the deadline to 1s + 4 rounds of 2s.
			name: "slow pages", delay: s, watch: 24500 * time.Millisecond,
			wantCommits: []time.Duration{5 * s, 15 * s},
			wantBeats:   []time.Duration{2 * s, 9 * s, 10 * s, 12 * s, 19 * s, 20 * s, 22 * s, 29 * s},
		},
		{name: "a hung api", delay: time.Minute, watch: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newBubbleRig(t, apisim.Options{Token: testToken}, func(c *meetingapi.ClientConfig) {
					c.PageSize = 10
					c.Overlap = -1 // pages that meet end to end
					c.Concurrency = 1
				})
				r.api.Sim.AddN(50)
				arrivals := recordListings(t, r.api.Sim, func(int) *apisim.Fault { return &apisim.Fault{Delay: tt.delay} })
				health := &memHealth{t0: r.t0}
				w := r.newWatcher(t, func(c *watcher.Config) {
					c.Interval = 10 * s
					c.PollTimeout = 2 * s
					c.Health = health
				})
				stop := r.run(t, w)
				time.Sleep(tt.watch)
				_, err := stop()
				require.NoError(t, err)

				commits := since(r.t0, r.store.commitTimes())
				logs := r.logs.String()
				if tt.wantCommits == nil {
					polls := pollStarts(arrivals())
					require.GreaterOrEqual(t, len(polls), 4)
					assert.Empty(t, commits)
					over := 0 // the polls whose deadline came before Run stopped
					for _, start := range polls {
						if start+2*s < tt.watch {
							over++
						}
					}
					assert.Equal(t, over, strings.Count(logs, "longer than its deadline (2s)"), "every poll gives way after PollTimeout:\n%s", logs)
					assert.NotContains(t, logs, "(4s)")
					beats := health.heard()
					require.GreaterOrEqual(t, len(beats), 2*len(polls)-1)
					for k, start := range polls {
						assert.Equal(t, start+2*s, beats[2*k], "poll %d beats its deadline, PollTimeout, and never moves it", k)
						if k+1 < len(polls) {
							assert.Equal(t, polls[k+1], beats[2*k+1], "then the end of its wait")
						}
					}
					return
				}
				assert.Equal(t, tt.wantCommits, commits)
				assert.Equal(t, tt.wantBeats, health.heard())
				assert.NotContains(t, logs, "poll failed")
				assert.Len(t, r.pub.events(), 50)
			})
		})
	}
}

// TestRunSizesTheDeadlineFromTheFirstPage: a listing that the request
// budget cannot fit into PollTimeout is not cut short: once its first page
// has told how many requests the listing takes, its deadline moves to what
// the budget needs for them, plus twice the first page's time for each
// round of pages after it, with a heartbeat. Every poll succeeds, at the
// budget's pace, back to back, and the watcher warns that they run back
// to back.
func TestRunSizesTheDeadlineFromTheFirstPage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, func(c *meetingapi.ClientConfig) {
			c.PageSize = 10
			c.Overlap = -1 // pages that meet end to end
			c.Concurrency = 1
			c.Budget = rate.NewLimiter(rate.Limit(600.0/60), 1) // 10 requests a second
		})
		r.api.Sim.AddN(50) // five pages: half a second of budget, five times the interval
		arrivals := recordListings(t, r.api.Sim, nil)
		health := &memHealth{t0: r.t0}
		w := r.newWatcher(t, func(c *watcher.Config) {
			c.Interval = 100 * time.Millisecond
			c.PollTimeout = 150 * time.Millisecond // room for the first page's turn in the budget
			c.Health = health
		})
		stop := r.run(t, w)
		time.Sleep(1450 * time.Millisecond)
		_, err := stop()
		require.NoError(t, err)

		ms := time.Millisecond
		var want []time.Duration
		for k := range 15 {
			want = append(want, time.Duration(k)*100*ms)
		}
		assert.Equal(t, want, arrivals(), "the budget is spent at its pace, never faster")
		assert.Equal(t, []time.Duration{400 * ms, 900 * ms, 1400 * ms}, since(r.t0, r.store.commitTimes()),
			"each poll lists its five pages in one go")
		// Each poll starts with PollTimeout (150ms). The first page of
		// the first poll comes at once: five requests take 500ms of
		// budget. Those of the next ones wait 100ms for the budget: four
		// rounds of 200ms more. The wait for the next poll is nothing.
		assert.Equal(t, []time.Duration{
			150 * ms, 500 * ms, 400 * ms,
			550 * ms, 1800 * ms, 900 * ms,
			1050 * ms, 2300 * ms, 1400 * ms,
			1550 * ms,
		}, health.heard())
		logs := r.logs.String()
		assert.NotContains(t, logs, "longer than its deadline")
		assert.NotContains(t, logs, "poll failed")
		assert.Equal(t, 1, strings.Count(logs, "request budget cannot fit a poll into the interval; polls run back to back"), "said once, not every poll: %s", logs)
		assert.Contains(t, logs, "requests=5 budget_needs_ms=500 interval_ms=100")
		assert.Len(t, r.pub.events(), 50)
	})
}

// The warning that the budget cannot fit a poll into the interval comes
// once, when polls start to run back to back, and a line says when they
// fit again.
func TestRunSaysOnceThatTheBudgetIsTooSmall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, func(c *meetingapi.ClientConfig) {
			c.PageSize = 10
			c.Overlap = -1
			c.Concurrency = 1
			c.Budget = rate.NewLimiter(rate.Limit(10), 1) // 10 requests a second
		})
		ids := r.api.Sim.AddN(50) // five pages a poll: half a second of budget
		w := r.newWatcher(t, func(c *watcher.Config) {
			c.Interval = 200 * time.Millisecond
			c.PollTimeout = time.Second
		})
		stop := r.run(t, w)
		time.Sleep(1200 * time.Millisecond) // two polls and more
		for _, id := range ids[5:] {
			r.api.Sim.End(id) // one page a poll from now on
		}
		time.Sleep(2 * time.Second)
		_, err := stop()
		require.NoError(t, err)

		logs := r.logs.String()
		assert.Equal(t, 1, strings.Count(logs, "the request budget cannot fit a poll into the interval"), logs)
		assert.Equal(t, 1, strings.Count(logs, "the request budget fits a poll into the interval again"), logs)
		assert.Less(t, strings.Index(logs, "cannot fit a poll"), strings.Index(logs, "fits a poll into the interval again"))
	})
}

// TestRunBacksOffWhileTheLoginIsRefused: while the API refuses the
// credentials, each poll sends one login and nothing else, and polls back
// off like any failed poll, waiting for the login's own backoff too. With
// the default 15s interval and the five-minute cap, an hour sees 16 logins
// when every wait is drawn longest, and never more than 28 (see
// docs/operations.md).
func TestRunBacksOffWhileTheLoginIsRefused(t *testing.T) {
	const interval = 15 * time.Second
	tests := []struct {
		name   string
		jitter func(n int64) int64 // the login backoff's
		exact  bool
	}{
		{name: "longest waits", jitter: func(n int64) int64 { return n - 1 }, exact: true},
		{name: "shortest login waits", jitter: func(int64) int64 { return 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				api := simtest.NewPipe(t, apisim.Options{Account: "ops@example.com", Password: "right"})
				api.Sim.AddN(3)
				t0 := time.Now()
				var (
					mu     sync.Mutex
					logins []time.Duration
				)
				api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
					if req.URL.Path == apisim.AccountAuthPath {
						mu.Lock()
						logins = append(logins, time.Since(t0))
						mu.Unlock()
						return &apisim.Fault{Status: http.StatusUnauthorized, Code: "USG.000000004", Msg: "wrong account or password"}
					}
					return nil
				})
				r := newBubbleRig(t, apisim.Options{}, func(c *meetingapi.ClientConfig) {
					c.BaseURL, c.HTTPClient = api.URL, api.Client()
					c.Gate = &meetingapi.Gate{}
					c.Tokens = meetingapi.NewAccountLogin(meetingapi.LoginConfig{
						BaseURL: api.URL, HTTPClient: api.Client(), Gate: c.Gate,
						Backoff: backoff.Backoff{Base: interval, Max: 5 * time.Minute, Jitter: tt.jitter},
					}, meetingapi.AccountCredentials{Account: "ops@example.com", Password: redact.NewSecret("wrong")})
					t.Cleanup(c.Tokens.Close)
				})
				w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = interval })
				stop := r.run(t, w)
				time.Sleep(time.Hour - time.Nanosecond)
				_, err := stop()
				require.NoError(t, err)

				mu.Lock()
				got := slices.Clone(logins)
				mu.Unlock()
				assert.Zero(t, api.Sim.Requests(), "no page without a token")
				assert.Equal(t, len(got), strings.Count(r.logs.String(), "poll failed"), "one login a poll")
				assert.Equal(t, len(got), strings.Count(r.logs.String(), "the api refused the credentials"), "each poll says why")
				assert.LessOrEqual(t, len(got), 28, "the most failed logins an hour")
				if tt.exact {
					s := time.Second
					assert.Equal(t, []time.Duration{
						0, 15 * s, 45 * s, 105 * s, 225 * s, 465 * s,
						765 * s, 1065 * s, 1365 * s, 1665 * s, 1965 * s, 2265 * s, 2565 * s, 2865 * s, 3165 * s, 3465 * s,
					}, got)
					return
				}
				assertBackoff(t, interval, 5*time.Minute, gaps(got))
				assert.GreaterOrEqual(t, len(got), 16)
				t.Logf("%d refused logins in an hour, at %v", len(got), got)
			})
		})
	}
}

// TestHealthFollowsTheLoop: /healthz answers for a loop that is alive,
// not for a recent poll: a first listing of ten minutes under the request
// budget stays healthy at every second, with a grace of one second only,
// while a loop stuck past its own deadline fails the probe exactly one
// grace after it.
func TestHealthFollowsTheLoop(t *testing.T) {
	probe := func(h *ha.Health) string {
		_, healthy := h.Check(time.Now())
		return healthy.Reason
	}
	t.Run("a ten-minute listing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newBubbleRig(t, apisim.Options{Token: testToken}, func(c *meetingapi.ClientConfig) {
				c.PageSize = 2
				c.Overlap = -1
				c.Budget = rate.NewLimiter(rate.Limit(1), 1) // a request a second
			})
			r.api.Sim.AddN(1201) // 601 pages: ten minutes after the first
			h := &ha.Health{LoopGrace: time.Second}
			w := r.newWatcher(t, func(c *watcher.Config) {
				c.Interval = 15 * time.Second
				c.Health = h
			})
			r.run(t, w)
			var unhealthy []string
			for range 1300 {
				if reason := probe(h); reason != "" {
					unhealthy = append(unhealthy, time.Since(r.t0).String()+": "+reason)
				}
				time.Sleep(time.Second)
			}
			assert.Empty(t, unhealthy)
			commits := since(r.t0, r.store.commitTimes())
			require.NotEmpty(t, commits)
			assert.Equal(t, 600*time.Second, commits[0], "the first poll lists every page")
			assert.NotContains(t, r.logs.String(), "poll failed")
		})
	})
	t.Run("a stuck loop", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
			r.api.Sim.AddN(3)
			r.pub.hold = func(ctx context.Context) error { // acknowledgements that never come
				<-ctx.Done()
				return ctx.Err()
			}
			h := &ha.Health{LoopGrace: time.Second}
			w := r.newWatcher(t, func(c *watcher.Config) {
				c.Interval = 10 * time.Second
				c.PollTimeout = 9 * time.Second
				c.Health = h
			})
			assert.Empty(t, probe(h), "healthy before the first heartbeat")
			r.run(t, w)
			time.Sleep(10 * time.Second)
			assert.Empty(t, probe(h), "9s of deadline and 1s of grace")
			time.Sleep(time.Nanosecond)
			assert.Equal(t, "the poll loop is more than 1s past its own deadline", probe(h))
		})
	})
}

func TestRunStopsOnCancelWithoutCommitting(t *testing.T) {
	// untilCancelled holds the acknowledgements until the poll's context
	// ends, then fails with err, or goes on when err is nil.
	untilCancelled := func(err error) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			return err
		}
	}
	tests := []struct {
		name        string
		delay       time.Duration                   // every listing takes this long
		hold        func(ctx context.Context) error // the publisher's acknowledgements
		wantCommits int
		wantEvents  int
		wantPending int // started events to announce again after a restart
	}{
		{name: "during a listing", delay: time.Minute},
		{name: "while waiting for acks", hold: untilCancelled(context.Canceled), wantPending: 3},
		{name: "as the acks come", hold: untilCancelled(nil), wantEvents: 3, wantPending: 3},
		{name: "between polls", wantCommits: 1, wantEvents: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
				r.api.Sim.AddN(3)
				r.pub.hold = tt.hold
				if tt.delay > 0 {
					r.api.Sim.SetHook(func(*http.Request) *apisim.Fault { return &apisim.Fault{Delay: tt.delay} })
				}
				w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = 10 * time.Second })
				stop := r.run(t, w)
				time.Sleep(5 * time.Second)
				require.Equal(t, 1, r.api.Sim.Requests(), "the first poll has sent its listing")

				took, err := stop()
				require.NoError(t, err)
				assert.Zero(t, took, "Run returns as soon as it is cancelled")
				assert.Len(t, r.store.commitTimes(), tt.wantCommits)
				assert.Len(t, r.pub.events(), tt.wantEvents)
				st, err := r.store.Load(t.Context())
				require.NoError(t, err)
				assert.Equal(t, tt.wantCommits > 0, st.Committed, "an abandoned poll commits nothing")
				assert.Len(t, st.Pending, tt.wantPending)
			})
		})
	}
}

// TestTokenNeverLogged: a refused token is logged with the API's error
// fields, never with its value, and Run recovers at the next tick.
func TestTokenNeverLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
		r.api.Sim.AddN(3)
		var refuse atomic.Bool
		refuse.Store(true)
		r.api.Sim.SetHook(func(*http.Request) *apisim.Fault {
			if refuse.Load() {
				return &apisim.Fault{Status: 401, Code: "USG.000000004", Msg: "bad token " + testToken}
			}
			return nil
		})
		w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = time.Second })
		_, err := w.Poll(t.Context())
		require.ErrorIs(t, err, meetingapi.ErrUnauthorized)
		assert.NotContains(t, err.Error(), testToken)

		stop := r.run(t, w)
		synctest.Wait() // Run's first poll failed, and it waits for the next tick
		require.Contains(t, r.logs.String(), "authentication failed")
		refuse.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		_, err = stop()
		require.NoError(t, err)

		assert.Equal(t, 1+1+1, r.api.Sim.Requests(), "a refused static token is not tried again within a poll")
		assert.Len(t, r.store.commitTimes(), 1)
		logs := r.logs.String()
		assert.Contains(t, logs, "error_code=USG.000000004")
		assert.Contains(t, logs, "polling recovered")
		assert.NotContains(t, logs, testToken)
		assert.NotContains(t, fmtAll(redact.NewSecret(testToken)), testToken)
	})
}

// fmtAll prints s every way a log line or an error might.
func fmtAll(s redact.Secret) string {
	j, _ := json.Marshal(struct{ T redact.Secret }{s})
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "token", s)
	return strings.Join([]string{s.String(), s.GoString(), string(j), b.String()}, " ")
}

// TestRunPollsAtOnceWhenNATSIsBack: polls that failed while NATS was away
// back off; word that NATS reconnected starts the next one at once rather
// than after the backoff, and word while nothing fails changes nothing.
func TestRunPollsAtOnceWhenNATSIsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
		r.api.Sim.AddN(1)
		var down atomic.Bool
		down.Store(true)
		r.store.failCommit = func(int) error {
			if down.Load() {
				return errors.New("nats unreachable")
			}
			return nil
		}
		wake := make(chan struct{}, 1)
		w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = time.Second; c.Wake = wake })
		stop := r.run(t, w)
		time.Sleep(20 * time.Second) // polls at 0, ~1, ~3, ~7, ~15 s: the next is due at ~31 s
		synctest.Wait()
		before := r.api.Sim.Requests()
		require.GreaterOrEqual(t, before, 4)
		down.Store(false)
		wake <- struct{}{}
		synctest.Wait()
		assert.Equal(t, before+1, r.api.Sim.Requests(), "woken, it polls at once")
		require.Len(t, r.store.commitTimes(), 1)
		assert.Equal(t, 20*time.Second, r.store.commitTimes()[0].Sub(r.t0))

		wake <- struct{}{} // nothing failing: the interval stands
		synctest.Wait()
		assert.Equal(t, before+1, r.api.Sim.Requests())
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, before+2, r.api.Sim.Requests())
		_, err := stop()
		require.NoError(t, err)
		assert.Contains(t, r.logs.String(), "nats is back; polling now")
	})
}

// TestRunEndsTheTermWhenFenced: a poll that finds this replica fenced (its
// commit refused because another replica leads) ends Run at once, with
// ErrFenced, instead of polling on.
func TestRunEndsTheTermWhenFenced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
		r.api.Sim.AddN(2)
		r.store.failCommit = func(i int) error {
			if i == 1 {
				return fmt.Errorf("committing state meta: %w", watcher.ErrFenced)
			}
			return nil
		}
		w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = time.Second })
		done := make(chan error, 1)
		go func() { done <- w.Run(t.Context()) }()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case err := <-done:
			require.ErrorIs(t, err, watcher.ErrFenced)
		default:
			require.Fail(t, "Run polls on after a fenced commit")
		}
		assert.Len(t, r.store.commitTimes(), 1, "the first poll committed, the second was fenced")
		assert.Equal(t, 2, r.api.Sim.Requests(), "no poll after the fenced one")
		assert.Contains(t, r.logs.String(), "fenced: this replica stops leading")
	})
}
