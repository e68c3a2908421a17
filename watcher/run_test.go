package watcher_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
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

// TestRunBacksOffWhileRejected: while the API refuses the configuration
// (403), polls back off from twice the interval, doubling up to five
// minutes, with jitter in the upper half of each wait; a success polls
// again after the interval and starts the backoff over.
func TestRunBacksOffWhileRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
		id := r.api.Sim.AddN(1)[0]
		reached := make(chan struct{})
		// Listings 0 to 9, and 11, are refused; 10, 12 and 13 succeed.
		arrivals := recordListings(t, r.api.Sim, func(i int) *apisim.Fault {
			if i == 13 {
				close(reached)
			}
			if i < 10 || i == 11 {
				return &apisim.Fault{Status: http.StatusForbidden, Code: "USG.000000002", Msg: "not an administrator"}
			}
			return nil
		})
		w := r.newWatcher(t, func(c *watcher.Config) { c.Interval = interval })
		stop := r.run(t, w)
		<-reached
		_, err := stop()
		require.NoError(t, err)

		at := arrivals()
		require.Len(t, at, 14, "one request a poll: a 403 is not retried")
		got := gaps(at)
		for k := range 10 {
			d := min(2*interval<<k, 5*time.Minute)
			assert.GreaterOrEqual(t, got[k], d/2, "wait after rejection %d", k+1)
			assert.LessOrEqual(t, got[k], d, "wait after rejection %d", k+1)
		}
		assert.Equal(t, interval, got[10], "after a success, the next poll comes after the interval")
		assert.GreaterOrEqual(t, got[11], interval, "a new rejection backs off from the start again")
		assert.LessOrEqual(t, got[11], 2*interval, "a new rejection backs off from the start again")
		assert.Equal(t, interval, got[12])

		evs := r.pub.events()
		require.Len(t, evs, 1, "nothing is published while the API rejects the listing")
		assert.Equal(t, id, evs[0].Subject)
		assert.Equal(t, []time.Duration{at[10]}, since(r.t0, r.pub.times()), "published by the first poll that succeeded")
		logs := r.logs.String()
		assert.Equal(t, 11, strings.Count(logs, "rejected the request as configured"))
		assert.Contains(t, logs, "error_code=USG.000000002")
		assert.Regexp(t, `polling recovered.* consecutive_errors=10`, logs)
	})
}

// TestRunLengthensTheDeadlineOfASlowListing: a listing that outlasts the
// API deadline gets twice as long at the next poll, until it fits; once a
// poll succeeds, the deadline goes back to PollTimeout.
func TestRunLengthensTheDeadlineOfASlowListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, nil)
		r.api.Sim.AddN(2)
		arrivals := recordListings(t, r.api.Sim, func(int) *apisim.Fault { return &apisim.Fault{Delay: 5 * time.Second} })
		w := r.newWatcher(t, func(c *watcher.Config) {
			c.Interval = 10 * time.Second
			c.PollTimeout = 2 * time.Second
		})
		stop := r.run(t, w)
		time.Sleep(59 * time.Second)
		_, err := stop()
		require.NoError(t, err)

		s := time.Second
		assert.Equal(t, []time.Duration{0, 10 * s, 20 * s, 30 * s, 40 * s, 50 * s}, arrivals(), "one request a poll")
		assert.Equal(t, []time.Duration{25 * s, 55 * s}, since(r.t0, r.store.commitTimes()),
			"deadlines of 2s and 4s cut the 5s listing short, 8s lets it finish; then it starts from 2s again")
		logs := r.logs.String()
		assert.Equal(t, 2, strings.Count(logs, "longer than its deadline (2s)"), logs)
		assert.Equal(t, 2, strings.Count(logs, "longer than its deadline (4s)"), logs)
		assert.NotContains(t, logs, "(8s)")
		assert.Len(t, r.pub.events(), 2)
	})
}

// TestRunFitsPollsToTheBudget: a request budget too small for the
// interval fails the first polls (ErrOverBudget, as soon as the budget
// cannot fit the next request before the deadline), and each failure
// doubles the deadline until the listing fits; then the deadline is what
// the budget needs, with a margin, polls run back to back at the budget's
// pace, and the watcher warns that they do.
func TestRunFitsPollsToTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newBubbleRig(t, apisim.Options{Token: testToken}, func(c *meetingapi.ClientConfig) {
			c.PageSize = 10
			// Pages in turn, so that no reservation of the budget is
			// cancelled: which ones a failed listing gives back would
			// depend on the order its pages gave up in.
			c.Concurrency = 1
			c.Budget = rate.NewLimiter(rate.Limit(600.0/60), 1) // 10 requests a second
		})
		r.api.Sim.AddN(50) // five pages: half a second of budget, five times the interval
		arrivals := recordListings(t, r.api.Sim, nil)
		w := r.newWatcher(t, func(c *watcher.Config) {
			c.Interval = 100 * time.Millisecond
			c.PollTimeout = 0 // 90% of the interval
		})
		stop := r.run(t, w)
		time.Sleep(1750 * time.Millisecond)
		_, err := stop()
		require.NoError(t, err)

		var want []time.Duration
		for k := range 18 {
			want = append(want, time.Duration(k)*100*time.Millisecond)
		}
		assert.Equal(t, want, arrivals(), "the budget is spent at its pace, never faster")
		// Deadlines of 90ms, 180ms and 360ms leave room for 1, 2 and 3
		// pages (at 0, 100-200 and 300-500ms); 720ms fits all five (600ms
		// to 1s). The next poll gets 750ms and starts at once.
		assert.Equal(t, []time.Duration{time.Second, 1500 * time.Millisecond}, since(r.t0, r.store.commitTimes()))
		logs := r.logs.String()
		assert.Equal(t, 3, strings.Count(logs, "the request budget cannot fit the listing before the deadline"), logs)
		assert.Equal(t, 2, strings.Count(logs, "request budget cannot fit a poll into the interval; polls run back to back"), logs)
		assert.Contains(t, logs, "requests=5 budget_needs_ms=500 interval_ms=100")
		assert.Len(t, r.pub.events(), 50, "the slow poll still completes")
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

		assert.Equal(t, 2+2+1, r.api.Sim.Requests(), "a refused token is renewed and tried once more per poll")
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
