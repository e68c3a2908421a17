package ha_test

import (
	"context"
	"encoding/json"
	"errors"
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

// TestHealthProbes walks the probes through a replica's life: before
// NATS answers, while the stream and buckets open, leading before and
// after its first commit, through a failed poll and a lost connection.
// /healthz follows the loops alone; /readyz says why it is not ready, and
// last_error why things fail, without the credentials of a URL.
func TestHealthProbes(t *testing.T) {
	srv := natstest.Start(t)
	h := &ha.Health{LoopGrace: time.Minute, LeaseMaxAge: time.Minute}
	get := func(path string) (int, ha.Report) {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var rep ha.Report
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
		return rec.Code, rep
	}
	ready := func() (int, string, string) {
		code, rep := get("/readyz")
		return code, rep.Reason, rep.LastError
	}
	healthy := func() (int, string) {
		code, rep := get("/healthz")
		return code, rep.Reason
	}
	unavailable := http.StatusServiceUnavailable

	h.Beat(ha.LoopSetup, time.Now().Add(time.Second))
	h.Failed(ha.SourceNATS, errors.New("dial tcp 127.0.0.1:4222: connect: connection refused (nats://meetwatch:hunter2@127.0.0.1:4222)"))
	code, reason, lastErr := ready()
	assert.Equal(t, []any{unavailable, "nats is not connected"}, []any{code, reason})
	assert.Contains(t, lastErr, "connection refused")
	assert.NotContains(t, lastErr, "hunter2")
	assert.Equal(t, []any{http.StatusOK, ""}, anys(healthy()), "an unreachable nats is no reason to restart")

	connected := true
	h.SetConnection(func() bool { return connected })
	h.Recovered(ha.SourceNATS)
	code, reason, lastErr = ready()
	assert.Equal(t, []any{unavailable, "opening the stream and buckets", ""}, []any{code, reason, lastErr})

	r, _ := startReplica(t, srv.ClientURL(), "a")
	require.Eventually(t, r.leading, 5*time.Second, 10*time.Millisecond)
	h.SetLease(r.lease)
	h.Done(ha.LoopSetup)
	h.NewTerm()
	code, reason, _ = ready()
	assert.Equal(t, []any{unavailable, "no snapshot committed yet"}, []any{code, reason})

	h.Polled(time.Now())
	code, rep := get("/readyz")
	assert.Equal(t, []any{http.StatusOK, "ok", "leader"}, []any{code, rep.Status, rep.Role})

	h.PollFailed(errors.New(`listing meetings: Get "https://u:pw@api.example/v1/x?offset=0": EOF`))
	code, reason, lastErr = ready()
	assert.Equal(t, http.StatusOK, code, "a failed poll after a commit: still ready (%s)", reason)
	assert.Equal(t, `listing meetings: Get "https://[redacted]@api.example/v1/x?offset=0": EOF`, lastErr)
	h.Polled(time.Now())
	_, _, lastErr = ready()
	assert.Empty(t, lastErr, "a committed poll clears the poll's error")

	connected = false
	code, reason, _ = ready()
	assert.Equal(t, []any{unavailable, "nats is not connected"}, []any{code, reason})
	assert.Equal(t, []any{http.StatusOK, ""}, anys(healthy()))

	h.Polled(time.Now().Add(-2 * time.Minute))
	assert.Equal(t, []any{http.StatusOK, ""}, anys(healthy()), "an old poll alone says nothing of the loop")

	h.Alive(time.Now().Add(-2 * time.Minute))
	assert.Equal(t, []any{unavailable, "the poll loop is more than 1m0s past its own deadline"}, anys(healthy()))
	h.Alive(time.Now().Add(time.Hour))
	h.Beat(ha.LoopLease, time.Now().Add(-2*time.Minute))
	assert.Equal(t, []any{unavailable, "the lease loop is more than 1m0s past its own deadline"}, anys(healthy()))
}

func anys[A, B any](a A, b B) []any { return []any{a, b} }

// The probes show warnings without failing for them.
func TestHealthShowsWarnings(t *testing.T) {
	h := &ha.Health{LoopGrace: time.Minute, LeaseMaxAge: time.Minute}
	h.SetConnection(func() bool { return true })
	probe := func(path string) (int, ha.Report) {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var rep ha.Report
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
		return rec.Code, rep
	}
	before := map[string]int{}
	for _, path := range []string{"/readyz", "/healthz"} {
		before[path], _ = probe(path)
	}
	h.SetWarnings([]string{"stream MEETINGS has a duplicate window of 20m0s"})
	for _, path := range []string{"/readyz", "/healthz"} {
		code, rep := probe(path)
		assert.Equal(t, before[path], code, path)
		assert.Equal(t, []string{"stream MEETINGS has a duplicate window of 20m0s"}, rep.Warnings, path)
	}
}

func natsConnect(url string) (*nats.Conn, error) { return nats.Connect(url) }
