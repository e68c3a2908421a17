package ha_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// leaseTTL is the shortest lease OpenLease allows, so that a failover on
// a real nats-server takes about a second.
const leaseTTL = time.Second

// replica is one Lease running in the test, with its own connection, so
// that the connection can be cut like a partition or a dead process.
type replica struct {
	lease   *ha.Lease
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	started []time.Time
	stopped []time.Time
}

func (r *replica) leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.started) > len(r.stopped)
}

func startReplica(t *testing.T, url, id string) (*replica, func()) {
	t.Helper()
	nc, err := natsConnect(url)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	lease, err := ha.OpenLease(t.Context(), js, ha.LeaseConfig{Bucket: "meetwatch-lease", TTL: leaseTTL, ID: id})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	r := &replica{lease: lease, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = lease.Run(ctx, func(lctx context.Context) {
			r.mu.Lock()
			r.started = append(r.started, time.Now())
			r.mu.Unlock()
			<-lctx.Done()
			r.mu.Lock()
			r.stopped = append(r.stopped, time.Now())
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-r.done; nc.Close() })
	return r, nc.Close
}

// TestLeaseHasOneLeaderAndFailsOver runs the lease against a real
// nats-server: a leader emerges, a standby takes over when the leader's
// connection is cut, and again when that one stops. The timing is tested
// in fake time over an in-memory bucket (lease_synctest_test.go); here
// only the outcome is.
func TestLeaseHasOneLeaderAndFailsOver(t *testing.T) {
	srv := natstest.Start(t)
	a, cutA := startReplica(t, srv.ClientURL(), "a")
	require.Eventually(t, a.leading, 5*time.Second, 10*time.Millisecond)
	b, _ := startReplica(t, srv.ClientURL(), "b")
	c, _ := startReplica(t, srv.ClientURL(), "c")
	standingBy := func() bool { return !b.lease.LastCheck().IsZero() && !c.lease.LastCheck().IsZero() }
	require.Eventually(t, standingBy, leaseTTL, 5*time.Millisecond, "the standbys find the lease taken")
	assert.True(t, a.leading())
	assert.True(t, a.lease.Leader())
	assert.False(t, b.leading() || c.leading(), "one leader at a time")
	assert.False(t, b.lease.Leader() || c.lease.Leader())

	// The leader dies without a word: its connection is cut, so its lease
	// lapses on the server.
	cutA()
	require.Eventually(t, func() bool { return !a.leading() }, leaseTTL, 5*time.Millisecond, "a stops leading")
	require.Eventually(t, func() bool { return b.leading() || c.leading() }, 3*leaseTTL, 5*time.Millisecond, "a standby takes over")
	assert.False(t, b.leading() && c.leading(), "one leader at a time")

	// A leader that stops gracefully hands over.
	next, other := b, c
	if c.leading() {
		next, other = c, b
	}
	next.cancel()
	<-next.done
	require.Eventually(t, other.leading, leaseTTL, 5*time.Millisecond, "the last standby takes over")
}

func TestHealthProbes(t *testing.T) {
	connected := true
	h := &ha.Health{Connected: func() bool { return connected }, LoopGrace: time.Minute, LeaseMaxAge: time.Minute}
	get := func(path string) (int, ha.Report) {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var rep ha.Report
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
		return rec.Code, rep
	}
	code, rep := get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "no snapshot committed yet", rep.Reason)

	h.Polled(time.Now())
	code, rep = get("/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", rep.Status)
	code, _ = get("/healthz")
	assert.Equal(t, http.StatusOK, code)

	connected = false
	code, rep = get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "nats is not connected", rep.Reason)

	h.Polled(time.Now().Add(-2 * time.Minute))
	code, _ = get("/healthz")
	assert.Equal(t, http.StatusOK, code, "an old poll alone says nothing of the loop")

	h.Alive(time.Now().Add(-2 * time.Minute))
	code, rep = get("/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "the poll loop is more than 1m0s past its own deadline", rep.Reason)
	h.Alive(time.Now().Add(time.Hour))
	code, _ = get("/healthz")
	assert.Equal(t, http.StatusOK, code)
}

// The probes show warnings without failing for them.
func TestHealthShowsWarnings(t *testing.T) {
	h := &ha.Health{LoopGrace: time.Minute, LeaseMaxAge: time.Minute}
	h.Polled(time.Now())
	h.Warn("stream MEETINGS has a duplicate window of 20m0s")
	for _, path := range []string{"/readyz", "/healthz"} {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		assert.Equal(t, http.StatusOK, rec.Code, path)
		var rep ha.Report
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
		assert.Equal(t, "ok", rep.Status, path)
		assert.Equal(t, []string{"stream MEETINGS has a duplicate window of 20m0s"}, rep.Warnings, path)
	}
}

func natsConnect(url string) (*nats.Conn, error) { return nats.Connect(url) }
