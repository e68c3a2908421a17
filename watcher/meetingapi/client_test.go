package meetingapi_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// The tests of this file check the client's timing (the request budget,
// retries and their backoff, Retry-After, the request timeout) inside
// testing/synctest bubbles, against the simulator over in-memory pipes:
// time is fake, so the figures asserted are exact and nothing waits.

const clientToken = "c1ient-t0ken-value"

// newPipeClient returns a Client of the simulator behind p, holding
// clientToken; adjust, when set, changes its configuration first.
func newPipeClient(tb testing.TB, p *simtest.Pipe, adjust func(*meetingapi.ClientConfig)) *meetingapi.Client {
	tb.Helper()
	cfg := meetingapi.ClientConfig{
		BaseURL: p.URL, HTTPClient: p.Client(), QueryAll: true,
		Tokens: meetingapi.StaticToken(redact.NewSecret(clientToken)),
	}
	if adjust != nil {
		adjust(&cfg)
	}
	c, err := meetingapi.NewClient(cfg)
	require.NoError(tb, err)
	return c
}

// arrival is a request as the simulator saw it.
type arrival struct {
	at     time.Duration // fake time since record was called
	path   string
	offset string
}

// record makes sim answer its i-th request (a listing or a login) with
// answer(i, r), nil meaning the normal answer, and returns the requests'
// arrivals so far.
func record(tb testing.TB, sim *apisim.Sim, answer func(i int, r *http.Request) *apisim.Fault) func() []arrival {
	tb.Helper()
	t0 := time.Now()
	var (
		mu   sync.Mutex
		seen []arrival
	)
	sim.SetHook(func(r *http.Request) *apisim.Fault {
		mu.Lock()
		i := len(seen)
		seen = append(seen, arrival{at: time.Since(t0), path: r.URL.Path, offset: r.URL.Query().Get("offset")})
		mu.Unlock()
		if answer == nil {
			return nil
		}
		return answer(i, r)
	})
	return func() []arrival {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// times returns when each of as arrived.
func times(as []arrival) []time.Duration {
	out := make([]time.Duration, len(as))
	for i, a := range as {
		out[i] = a.at
	}
	return out
}

// paths returns the path of each of as.
func paths(as []arrival) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.path
	}
	return out
}

// TestBudgetSpacesRequests: every request, pages and logins alike, waits
// for the one request budget, so at ten a second they come 100ms apart.
func TestBudgetSpacesRequests(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		login     bool // an account login shares the budget
		wantTimes []time.Duration
		wantPaths []string
	}{
		{
			name:      "pages",
			wantTimes: []time.Duration{0, 100 * ms, 200 * ms},
			wantPaths: []string{apisim.Path, apisim.Path, apisim.Path},
		},
		{
			// The first page takes its slot (0) before it asks for a token,
			// so the login waits for the next slot (100ms), and the first
			// page goes out as soon as the login is answered.
			name:      "a login and pages",
			login:     true,
			wantTimes: []time.Duration{100 * ms, 100 * ms, 200 * ms, 300 * ms},
			wantPaths: []string{apisim.AccountAuthPath, apisim.Path, apisim.Path, apisim.Path},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Token: clientToken, Account: authAccount, Password: authPassword})
				p.Sim.AddN(30)
				budget := rate.NewLimiter(rate.Limit(600.0/60), 1) // 600 requests a minute
				c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
					c.PageSize = 10
					c.Overlap = -1 // pages that meet end to end: three for 30 meetings
					c.Budget = budget
					if tt.login {
						c.Tokens = meetingapi.NewAccountLogin(meetingapi.LoginConfig{
							BaseURL: p.URL, HTTPClient: c.HTTPClient, Wait: budget.Wait,
						}, meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret(authPassword)})
						t.Cleanup(c.Tokens.Close)
					}
				})
				seen := record(t, p.Sim, nil)

				start := time.Now()
				snap, err := c.List(t.Context(), nil, nil)
				require.NoError(t, err)
				assert.Len(t, snap, 30)
				assert.Equal(t, tt.wantTimes, times(seen()))
				assert.Equal(t, tt.wantPaths, paths(seen()))
				assert.Equal(t, tt.wantTimes[len(tt.wantTimes)-1], time.Since(start), "the listing ends with its last page")
				assert.Equal(t, 300*time.Millisecond, c.BudgetTime(3), "the budget's time for three requests")
			})
		})
	}
}

// TestBudgetThatCannotFitTheDeadline: a listing fails with ErrOverBudget as
// soon as the budget cannot allow its next request before the deadline,
// rather than when the deadline comes.
func TestBudgetThatCannotFitTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
		p.Sim.AddN(30)
		c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
			c.PageSize = 10
			c.Budget = rate.NewLimiter(rate.Limit(600.0/60), 1)
		})
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()

		start := time.Now()
		_, err := c.List(ctx, nil, nil)
		require.ErrorIs(t, err, meetingapi.ErrOverBudget)
		assert.Zero(t, time.Since(start), "the third page would come at 200ms, after the deadline: no need to wait for it")
		assert.Equal(t, 1, p.Sim.Requests())
	})
}

// TestRetries: network errors, broken bodies, 429 and 5xx are retried
// after a jittered exponential backoff (the upper half of BackoffBase,
// doubled per retry, capped at BackoffMax); a refused token is tried again
// at once with a renewed one; 400 and 403 are not retried.
func TestRetries(t *testing.T) {
	s := time.Second
	unavailable := apisim.Fault{Status: http.StatusServiceUnavailable}
	tests := []struct {
		name       string
		faults     []apisim.Fault // the first answers, in turn
		wantErr    error          // with wantStatus 0 too: the listing succeeds after the faults
		wantStatus int            // the status of the last answer, when the listing fails
		wantWaits  [][2]time.Duration
	}{
		{name: "503 is retried", faults: []apisim.Fault{unavailable}, wantWaits: [][2]time.Duration{{s / 2, s}}},
		{name: "502 html page is retried", faults: []apisim.Fault{{Status: 502, Body: "<html>bad gateway</html>"}}, wantWaits: [][2]time.Duration{{s / 2, s}}},
		{name: "429 is retried", faults: []apisim.Fault{{Status: 429, Code: "100000429"}}, wantWaits: [][2]time.Duration{{s / 2, s}}},
		{name: "reset mid-body is retried", faults: []apisim.Fault{{Reset: true}}, wantWaits: [][2]time.Duration{{s / 2, s}}},
		{name: "truncated body is retried", faults: []apisim.Fault{{Body: `{"count":`}}, wantWaits: [][2]time.Duration{{s / 2, s}}},
		{
			name:      "the backoff doubles up to its cap",
			faults:    []apisim.Fault{unavailable, unavailable, unavailable},
			wantWaits: [][2]time.Duration{{s / 2, s}, {s, 2 * s}, {3 * s / 2, 3 * s}},
		},
		{
			name:       "three retries, then the error",
			faults:     []apisim.Fault{unavailable, unavailable, unavailable, unavailable},
			wantStatus: http.StatusServiceUnavailable,
			wantWaits:  [][2]time.Duration{{s / 2, s}, {s, 2 * s}, {3 * s / 2, 3 * s}},
		},
		{name: "a refused static token is not tried again", faults: []apisim.Fault{{Status: 401}}, wantErr: meetingapi.ErrStaticTokenRefused, wantStatus: 401},
		{name: "403 is not retried", faults: []apisim.Fault{{Status: 403, Code: "USG.000000002"}}, wantErr: meetingapi.ErrRejected, wantStatus: 403},
		{name: "400 is not retried", faults: []apisim.Fault{{Status: 400}}, wantErr: meetingapi.ErrRejected, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
				p.Sim.AddN(3)
				c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
					c.BackoffBase, c.BackoffMax = time.Second, 3*time.Second
				})
				for _, f := range tt.faults {
					p.Sim.FailOnce(0, f)
				}
				seen := record(t, p.Sim, nil)

				snap, err := c.List(t.Context(), nil, nil)
				if tt.wantErr == nil && tt.wantStatus == 0 {
					require.NoError(t, err)
					assert.Len(t, snap, 3)
				} else {
					require.Error(t, err)
					if tt.wantErr != nil {
						assert.ErrorIs(t, err, tt.wantErr)
					}
					var apiErr *meetingapi.APIError
					require.ErrorAs(t, err, &apiErr)
					assert.Equal(t, tt.wantStatus, apiErr.Status)
				}
				at := times(seen())
				require.Len(t, at, len(tt.wantWaits)+1, "one request, and one per retry")
				for i, w := range tt.wantWaits {
					wait := at[i+1] - at[i]
					assert.GreaterOrEqual(t, wait, w[0], "wait before retry %d", i+1)
					assert.LessOrEqual(t, wait, w[1], "wait before retry %d", i+1)
				}
			})
		})
	}
}

// TestRetryAfter: a Retry-After header, in seconds or as an HTTP date,
// replaces the backoff's wait; one the deadline cannot allow ends the
// listing at once.
func TestRetryAfter(t *testing.T) {
	s := time.Second
	tests := []struct {
		name       string
		retryAfter func(now time.Time) string
		deadline   time.Duration // of the listing's context; 0: none
		wantWait   [2]time.Duration
		wantErr    bool
	}{
		{name: "seconds", retryAfter: func(time.Time) string { return "2" }, wantWait: [2]time.Duration{2 * s, 2 * s}},
		{name: "HTTP date", retryAfter: func(now time.Time) string { return now.Add(3 * s).Format(http.TimeFormat) }, wantWait: [2]time.Duration{3 * s, 3 * s}},
		{name: "HTTP date in the past: the backoff", retryAfter: func(now time.Time) string { return now.Add(-time.Hour).Format(http.TimeFormat) }, wantWait: [2]time.Duration{s / 2, s}},
		{name: "unreadable: the backoff", retryAfter: func(time.Time) string { return "soon" }, wantWait: [2]time.Duration{s / 2, s}},
		{name: "after the deadline: no retry", retryAfter: func(time.Time) string { return "60" }, deadline: 10 * s, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
				p.Sim.AddN(1)
				c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
					c.BackoffBase, c.BackoffMax = time.Second, 3*time.Second
				})
				seen := record(t, p.Sim, func(i int, _ *http.Request) *apisim.Fault {
					if i > 0 {
						return nil
					}
					return &apisim.Fault{Status: 429, Code: "100000429", Header: http.Header{"Retry-After": {tt.retryAfter(time.Now())}}}
				})
				ctx := t.Context()
				if tt.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
					defer cancel()
				}

				start := time.Now()
				_, err := c.List(ctx, nil, nil)
				at := times(seen())
				if tt.wantErr {
					require.Error(t, err)
					assert.Len(t, at, 1)
					assert.Zero(t, time.Since(start), "no waiting for a retry that cannot come in time")
					return
				}
				require.NoError(t, err)
				require.Len(t, at, 2)
				assert.GreaterOrEqual(t, at[1]-at[0], tt.wantWait[0])
				assert.LessOrEqual(t, at[1]-at[0], tt.wantWait[1])
			})
		})
	}
}

// TestRequestTimeoutBoundsAnAnswer: the client meetwatch builds
// (NewHTTPClient) bounds every request, body included, so an answer that
// never comes or never ends cannot stall a listing: each try ends at the
// timeout, then the retries are spent.
func TestRequestTimeoutBoundsAnAnswer(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name  string
		serve func(tb testing.TB) (dial dialFunc, requests func() int)
	}{
		{
			name: "headers that never come",
			serve: func(tb testing.TB) (dialFunc, func() int) {
				p := simtest.NewPipe(tb, apisim.Options{Token: clientToken})
				p.Sim.SetHook(func(*http.Request) *apisim.Fault { return &apisim.Fault{Delay: time.Hour} })
				return p.Dial, p.Sim.Requests
			},
		},
		{
			name: "a body that never ends",
			serve: func(tb testing.TB) (dialFunc, func() int) {
				var (
					mu sync.Mutex
					n  int
				)
				p := simtest.Serve(tb, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					mu.Lock()
					n++
					mu.Unlock()
					w.WriteHeader(http.StatusOK)
					fmt.Fprint(w, `{"offset":0,"limit":500,"count":1,"data":[`)
					for {
						select {
						case <-req.Context().Done():
							return
						case <-time.After(20 * time.Millisecond):
							fmt.Fprint(w, " ")
							w.(http.Flusher).Flush()
						}
					}
				}))
				return p.Dial, func() int {
					mu.Lock()
					defer mu.Unlock()
					return n
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dial, requests := tt.serve(t)
				hc := meetingapi.NewHTTPClient(1, timeout)
				tr := hc.Transport.(*http.Transport)
				tr.DialContext, tr.Proxy = dial, nil
				t.Cleanup(hc.CloseIdleConnections)
				c, err := meetingapi.NewClient(meetingapi.ClientConfig{
					BaseURL: "http://apisim.test", HTTPClient: hc, RequestTimeout: timeout,
					Tokens:  meetingapi.StaticToken(redact.NewSecret(clientToken)),
					Retries: 1, BackoffBase: 100 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
				})
				require.NoError(t, err)

				// A guard, should the timeout not bound the answer.
				ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
				defer cancel()
				start := time.Now()
				_, err = c.List(ctx, nil, nil)
				took := time.Since(start)
				require.Error(t, err)
				assert.ErrorContains(t, err, "offset 0")
				assert.Equal(t, 2, requests(), "a try and a retry")
				assert.GreaterOrEqual(t, took, 2*timeout+50*time.Millisecond, "two tries of 300ms and a backoff of 50 to 100ms")
				assert.LessOrEqual(t, took, 2*timeout+100*time.Millisecond, "two tries of 300ms and a backoff of 50 to 100ms")
			})
		})
	}
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)
