package meetingapi_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// slowestRefusalBackoff spaces logins after refusals like failed polls at
// a 15s interval, with the jitter always drawing the longest wait, so that
// the test can name every instant.
var slowestRefusalBackoff = backoff.Backoff{Base: 15 * time.Second, Max: 5 * time.Minute, Jitter: func(n int64) int64 { return n - 1 }}

// refuseLogins makes the simulator refuse logins (401 USG.000000004, as for
// a wrong password) while refuse is true, and counts every login request.
func refuseLogins(sim *apisim.Sim, refuse *atomic.Bool) (logins func() int) {
	var n atomic.Int64
	sim.SetHook(func(r *http.Request) *apisim.Fault {
		if r.URL.Path == apisim.Path {
			return nil
		}
		n.Add(1)
		if refuse.Load() {
			return &apisim.Fault{Status: http.StatusUnauthorized, Code: "USG.000000004", Msg: "wrong account or password"}
		}
		return nil
	})
	return func() int { return int(n.Load()) }
}

// TestRefusedLoginIsHeldBack: once the API refuses the credentials, Token
// fails at once with the refusal and sends no login until the backoff has
// passed, to the nanosecond; the waits double up to five minutes, and a
// login that succeeds starts them over.
func TestRefusedLoginIsHeldBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newAuthRig(t, 0)
		var refuse atomic.Bool
		refuse.Store(true)
		logins := refuseLogins(r.api.Sim, &refuse)
		r.cfg.Backoff = slowestRefusalBackoff
		src := r.accountLogin()
		t.Cleanup(src.Close)
		start := time.Now()

		var at []time.Duration // when each refused login was sent
		for _, wait := range []time.Duration{0, 15, 30, 60, 120, 240, 300, 300} {
			if wait > 0 {
				time.Sleep(wait*time.Second - time.Nanosecond)
				_, err := src.Token(t.Context())
				require.ErrorIs(t, err, meetingapi.ErrLoginRefused, "a nanosecond early")
				assert.Contains(t, err.Error(), "no login before")
				require.Len(t, at, logins(), "no login a nanosecond early")
				time.Sleep(time.Nanosecond)
			}
			_, err := src.Token(t.Context())
			require.ErrorIs(t, err, meetingapi.ErrLoginRefused)
			require.ErrorIs(t, err, meetingapi.ErrLoginFailed)
			assert.NotErrorIs(t, err, meetingapi.ErrUnauthorized)
			at = append(at, time.Since(start))
			require.Len(t, at, logins())
			assert.Equal(t, time.Since(start)+min(15*time.Second<<(len(at)-1), 5*time.Minute), src.NotBefore().Sub(start),
				"NotBefore tells when the next login may go")
		}
		s := time.Second
		assert.Equal(t, []time.Duration{0, 15 * s, 45 * s, 105 * s, 225 * s, 465 * s, 765 * s, 1065 * s}, at)

		refuse.Store(false)
		time.Sleep(5 * time.Minute)
		tok := mustToken(t, src)
		assert.True(t, src.NotBefore().IsZero(), "nothing held back once a login succeeds")
		src.Invalidate(tok)
		refuse.Store(true)
		_, err := src.Token(t.Context())
		require.ErrorIs(t, err, meetingapi.ErrLoginRefused)
		assert.Equal(t, 15*time.Second, time.Until(src.NotBefore()), "the backoff starts over")
		assert.Contains(t, r.logs.String(), "the api refused the credentials; no login before the backoff has passed")
		assert.NotContains(t, r.logs.String(), authPassword)
	})
}

// TestRefusedLoginIsNotRetriedWithinAListing: when the API refuses the
// credentials, a listing fails with ErrLoginRefused after one login: the
// page that needed the token does not retry it, and the concurrent page
// fetchers that need a new token too fail at once instead of each logging
// in.
func TestRefusedLoginIsNotRetriedWithinAListing(t *testing.T) {
	tests := []struct {
		name       string
		refuseFrom int  // the first login refused (0-based)
		refuseRest bool // the API refuses the token of the pages after the first, together
		wantLogins int
		wantPages  int
	}{
		{name: "the first login", refuseFrom: 0, wantLogins: 1, wantPages: 0},
		{name: "a new login for four pages in flight", refuseFrom: 1, refuseRest: true, wantLogins: 2, wantPages: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newAuthRig(t, 0)
				r.api.Sim.AddN(50)
				var logins, pages atomic.Int64
				together := make(chan struct{}) // closed once the four later pages are in
				r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
					if req.URL.Path == apisim.Path {
						n := pages.Add(1)
						if n == 1 || !tt.refuseRest {
							return nil
						}
						if n == 5 {
							close(together)
						}
						<-together
						return &apisim.Fault{Status: http.StatusUnauthorized, Code: "USG.000000004"}
					}
					if logins.Add(1) > int64(tt.refuseFrom) {
						return &apisim.Fault{Status: http.StatusUnauthorized, Code: "USG.000000004"}
					}
					return nil
				})
				r.cfg.Backoff = slowestRefusalBackoff
				src := r.accountLogin()
				t.Cleanup(src.Close)
				c, err := meetingapi.NewClient(meetingapi.ClientConfig{
					BaseURL: r.api.URL, HTTPClient: r.cfg.HTTPClient, Tokens: src,
					PageSize: 10, Overlap: -1, Concurrency: 4,
				})
				require.NoError(t, err)

				start := time.Now()
				_, err = c.List(t.Context(), nil, nil)
				require.ErrorIs(t, err, meetingapi.ErrLoginRefused)
				assert.Zero(t, time.Since(start), "no retry, no backoff")
				assert.Equal(t, tt.wantLogins, int(logins.Load()), "one login for the whole listing")
				assert.Equal(t, tt.wantPages, int(pages.Load()))
				assert.Equal(t, 15*time.Second, c.NotBefore().Sub(start), "the client says when a login may go again")

				_, err = c.List(t.Context(), nil, nil)
				require.ErrorIs(t, err, meetingapi.ErrLoginRefused)
				assert.Equal(t, tt.wantLogins, int(logins.Load()), "a listing before then fails at once")
			})
		})
	}
}

// TestRefusedRenewalKeepsTheToken: a renewal the API refuses leaves the
// token in use while it works, and no other login goes until the backoff
// has passed; once the token has expired, Token fails at once until then.
func TestRefusedRenewalKeepsTheToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newAuthRig(t, 100*time.Second)
		var refuse atomic.Bool
		logins := refuseLogins(r.api.Sim, &refuse)
		r.cfg.Backoff = slowestRefusalBackoff
		src := r.accountLogin()
		t.Cleanup(src.Close)
		first := mustToken(t, src)

		refuse.Store(true)
		time.Sleep(80 * time.Second) // due for renewal
		assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal(), "the refused renewal keeps the token")
		require.Equal(t, 2, logins())
		assert.True(t, src.NotBefore().IsZero(), "nothing to wait for while the token works")
		for range 10 {
			time.Sleep(time.Second)
			assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal())
		}
		assert.Equal(t, 2, logins(), "no login for 15s after the refusal")

		time.Sleep(5 * time.Second) // 95s: the backoff has passed
		assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal())
		require.Equal(t, 3, logins(), "one login when the backoff has passed; refused, it waits 30s more")

		time.Sleep(5 * time.Second) // 100s: the token has expired
		_, err := src.Token(t.Context())
		require.ErrorIs(t, err, meetingapi.ErrLoginRefused)
		assert.Equal(t, 3, logins())
		assert.Equal(t, 25*time.Second, time.Until(src.NotBefore()))
	})
}
