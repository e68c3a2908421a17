package meetingapi_test

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// TestRetryAfterHoldsEveryPage: a 429 or 503 with Retry-After holds every
// page request of the listing until the pause is over, those of the
// concurrent fetchers that already waited for their turn in the budget as
// much as the retry of the page that was answered; another status only
// delays its own retry.
func TestRetryAfterHoldsEveryPage(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		status     int
		retryAfter func(now time.Time) string
		wantTimes  []time.Duration
		wantHeld   time.Duration // NotBefore after the listing, since it began; 0: never held
	}{
		{
			name: "429, seconds", status: http.StatusTooManyRequests,
			retryAfter: func(time.Time) string { return "2" },
			// The pages booked at 200, 300 and 400ms wait for the pause,
			// and go out with the retry when it ends at 100ms + 2s.
			wantTimes: []time.Duration{0, 100 * ms, 2100 * ms, 2100 * ms, 2100 * ms, 2100 * ms},
			wantHeld:  2100 * ms,
		},
		{
			name: "503, HTTP date", status: http.StatusServiceUnavailable,
			// A date has whole seconds: 100ms + 3s is written 3s.
			retryAfter: func(now time.Time) string { return now.Add(3 * time.Second).Format(http.TimeFormat) },
			wantTimes:  []time.Duration{0, 100 * ms, 3 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second},
			wantHeld:   3 * time.Second,
		},
		{
			name: "502 holds only its own retry", status: http.StatusBadGateway,
			retryAfter: func(time.Time) string { return "2" },
			wantTimes:  []time.Duration{0, 100 * ms, 200 * ms, 300 * ms, 400 * ms, 2100 * ms},
		},
		{
			name: "a day asked by a 500 is five minutes", status: http.StatusInternalServerError,
			retryAfter: func(time.Time) string { return "86400" },
			wantTimes:  []time.Duration{0, 100 * ms, 200 * ms, 300 * ms, 400 * ms, 5*time.Minute + 100*ms},
		},
		{
			name: "429, more seconds than a number holds", status: http.StatusTooManyRequests,
			retryAfter: func(time.Time) string { return "99999999999999999999" },
			wantTimes:  []time.Duration{0, 100 * ms, 5*time.Minute + 100*ms, 5*time.Minute + 100*ms, 5*time.Minute + 100*ms, 5*time.Minute + 100*ms},
			wantHeld:   5*time.Minute + 100*ms,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
				p.Sim.AddN(50)
				c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
					c.PageSize = 10
					c.Overlap = -1 // five pages that meet end to end
					c.Concurrency = 4
					c.Budget = rate.NewLimiter(rate.Limit(10), 1) // one request every 100ms
				})
				start := time.Now()
				seen := record(t, p.Sim, func(i int, _ *http.Request) *apisim.Fault {
					if i != 1 {
						return nil
					}
					return &apisim.Fault{Status: tt.status, Header: http.Header{"Retry-After": {tt.retryAfter(time.Now())}}}
				})

				snap, err := c.List(t.Context(), nil, nil)
				require.NoError(t, err)
				assert.Len(t, snap, 50)
				assert.Equal(t, tt.wantTimes, times(seen()))
				if tt.wantHeld == 0 {
					assert.True(t, c.NotBefore().IsZero(), "a %d holds nothing", tt.status)
				} else {
					assert.Equal(t, tt.wantHeld, c.NotBefore().Sub(start), "NotBefore is when the pause ends")
				}
			})
		})
	}
}

// TestRetryAfterHoldsLookupsAndLogins: the pause a page's answer asked for
// holds an end lookup, and the pause a login's answer asked for holds the
// pages and the next login, when the client and its token source share
// the gate. A request that cannot wait until the pause ends, within its
// deadline, fails at once without being sent.
func TestRetryAfterHoldsLookupsAndLogins(t *testing.T) {
	held := func(status int, secs string) *apisim.Fault {
		return &apisim.Fault{Status: status, Header: http.Header{"Retry-After": {secs}}}
	}
	t.Run("a lookup waits for the pause a page asked for", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
			id := p.Sim.AddN(1)[0]
			rec, _ := p.Sim.Get(id)
			c := newPipeClient(t, p, nil)
			seen := record(t, p.Sim, func(i int, _ *http.Request) *apisim.Fault {
				if i == 0 {
					return held(http.StatusTooManyRequests, "2")
				}
				return nil
			})

			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			_, err := c.List(ctx, nil, nil)
			require.Error(t, err, "a retry at 2s cannot fit a deadline of 1s")
			_, err = c.List(ctx, nil, nil)
			require.ErrorIs(t, err, meetingapi.ErrThrottled, "nor can a new listing")
			require.Len(t, seen(), 1, "neither sends a request")

			start := time.Now()
			_, ongoing, err := c.Confirm(t.Context(), snapshot.Meeting{UUID: id, ConferenceID: rec["conferenceID"].(string)}, nil)
			require.NoError(t, err)
			assert.True(t, ongoing)
			assert.Equal(t, 2*time.Second, time.Since(start), "the lookup goes out when the pause ends")
			assert.Equal(t, []time.Duration{0, 2 * time.Second}, times(seen()))
		})
	})
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run("a login answered "+http.StatusText(status)+" holds pages and logins", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Account: authAccount, Password: authPassword})
				p.Sim.AddN(3)
				gate := &meetingapi.Gate{}
				c := newPipeClient(t, p, func(c *meetingapi.ClientConfig) {
					c.Gate = gate
					c.Tokens = meetingapi.NewAccountLogin(meetingapi.LoginConfig{BaseURL: p.URL, HTTPClient: c.HTTPClient, Gate: gate},
						meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret(authPassword)})
					t.Cleanup(c.Tokens.Close)
				})
				seen := record(t, p.Sim, func(i int, _ *http.Request) *apisim.Fault {
					if i == 0 {
						return held(status, "2")
					}
					return nil
				})

				snap, err := c.List(t.Context(), nil, nil)
				require.NoError(t, err)
				assert.Len(t, snap, 3)
				assert.Equal(t, []time.Duration{0, 2 * time.Second, 2 * time.Second}, times(seen()),
					"the page's retry, after a backoff of under a second, waits for the pause; so does its login")
				assert.Equal(t, []string{apisim.AccountAuthPath, apisim.AccountAuthPath, apisim.Path}, paths(seen()))
			})
		})
	}
	t.Run("a pause is capped at five minutes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := simtest.NewPipe(t, apisim.Options{Token: clientToken})
			p.Sim.AddN(1)
			c := newPipeClient(t, p, nil)
			seen := record(t, p.Sim, func(i int, _ *http.Request) *apisim.Fault {
				if i == 0 {
					return held(http.StatusTooManyRequests, "86400")
				}
				return nil
			})
			start := time.Now()
			_, err := c.List(t.Context(), nil, nil)
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{0, 5 * time.Minute}, times(seen()))
			assert.Equal(t, 5*time.Minute, c.NotBefore().Sub(start))
		})
	})
}
