package main

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// request is one request as the simulator saw it arrive.
type request struct {
	at   time.Time
	kind string // "login", "page" or "lookup"
}

// TestRunHonoursRetryAfter runs the binary against a simulator that
// answers the first page of one poll with 429 and Retry-After: 2. Within
// the two seconds that follow, no request of any kind reaches the
// simulator: not the page's retry, nor the next poll's pages, nor the login
// that the token, renewed every 0.8s, is due for, nor an end lookup. Then
// the watcher goes on, and announces a meeting that ended meanwhile.
func TestRunHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	const (
		account, password = "polite@example.com", "polite-pa55-3e1f"
		pause             = 2 * time.Second
	)
	api := apisim.NewServer(apisim.Options{Account: account, Password: password, TokenTTL: time.Second, Seed: 5})
	t.Cleanup(api.Close)
	ids := api.Sim.AddN(6)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)

	var (
		mu       sync.Mutex
		seen     []request
		armed    atomic.Bool
		answered time.Time // when the 429 was answered
	)
	api.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		now := time.Now()
		kind := "login"
		if r.URL.Path == apisim.Path {
			kind = "page"
			if r.URL.Query().Has("searchKey") {
				kind = "lookup"
			}
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, request{at: now, kind: kind})
		// The first page of a poll: nothing of this process is in flight.
		if kind == "page" && r.URL.Query().Get("offset") == "0" && armed.CompareAndSwap(true, false) {
			answered = now
			return &apisim.Fault{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}}
		}
		return nil
	})

	env := runEnv(api.URL, "", srv.ClientURL())
	delete(env, "MEETWATCH_ACCESS_TOKEN")
	env["MEETWATCH_ACCOUNT"], env["MEETWATCH_PASSWORD"] = account, password
	env["MEETWATCH_PAGE_SIZE"] = "2"     // three pages a listing
	env["MEETWATCH_POLL_TIMEOUT"] = "1s" // shorter than the pause: the poll gives up, and the scheduler waits
	env["MEETWATCH_API_RATE"] = "600"
	mw := startMeetwatch(t, env, "run")
	waitForMessages(t, nc, "MEETINGS", 6)

	armed.Store(true)
	require.Eventually(t, func() bool { return !armed.Load() }, eventWait, tick, "waiting for a poll to meet the 429")
	require.True(t, api.Sim.End(ids[2]))
	msgs := waitForMessages(t, nc, "MEETINGS", 7)
	assert.Equal(t, "ended", msgs[6].Event.kind())
	assert.Equal(t, ids[2], msgs[6].Event.Subject)
	mw.stop(t, syscall.SIGTERM)

	mu.Lock()
	t429, all := answered, slices.Clone(seen)
	mu.Unlock()
	var during, after []string
	for _, r := range all {
		switch d := r.at.Sub(t429); {
		case d > 0 && d < pause:
			during = append(during, r.kind+" at +"+d.String())
		case d >= pause:
			after = append(after, r.kind)
		}
	}
	assert.Empty(t, during, "requests within %s of the 429", pause)
	assert.Contains(t, after, "login", "the token lapsed during the pause: a login follows it")
	assert.Contains(t, after, "page")
	t.Logf("after the pause: %s", strings.Join(after[:min(len(after), 12)], ", "))
	first := slices.IndexFunc(all, func(r request) bool { return r.at.Sub(t429) >= pause })
	if assert.GreaterOrEqual(t, first, 0) {
		t.Logf("the 429 was answered at %s; the next request came %s later", t429.Format(time.StampMilli), all[first].at.Sub(t429))
	}
	stderr := mw.stderr.String()
	assert.Contains(t, stderr, "the api asked for a pause; the next poll waits for it")
	assert.Contains(t, stderr, "longer than its deadline (1s)")
}
