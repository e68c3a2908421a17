package main

import (
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// TestHeldAcknowledgementsInABigPoll holds the server's answers for a
// second in the middle of a poll that changes 9,000 meetings and starts
// 30,000: big enough that every kind of write a poll makes is in flight
// at once. Each step of the delivery waits for its acknowledgements
// before the next sends, so one window of writes is all that is ever
// unacknowledged, and the poll commits. It lists 49,000 meetings, too
// many for every run of the suite: MEETWATCH_TEST_HEAVY=1 runs it.
func TestHeldAcknowledgementsInABigPoll(t *testing.T) {
	if os.Getenv("MEETWATCH_TEST_HEAVY") == "" {
		t.Skip("MEETWATCH_TEST_HEAVY=1 runs it")
	}
	const (
		token            = "held-big-token"
		prior, starts    = 10000, 30000
		changes          = 9000
		commitsFirstPoll = prior
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	st := newStateView(t, nc)
	gate := startGate(t, srv.ClientURL())
	api := apisim.NewServer(apisim.Options{Token: token, Seed: 23})
	t.Cleanup(api.Close)
	api.Sim.AddN(prior)
	env := crashEnv(api.URL, token, gate.URL())
	delete(env, "MEETWATCH_LEASE_TTL") // the default, 10 s: the lease outlives the hold
	env["MEETWATCH_POLL_TIMEOUT"] = "1m"
	p := startMeetwatch(t, env, "run")
	require.Eventually(t, func() bool { _, n := st.meta(); return n == commitsFirstPoll }, 2*time.Minute, tick, "the first poll commits")

	rng := rand.New(rand.NewPCG(23, 24))
	ids := api.Sim.UUIDs()
	stalled := gate.stallAt(kindRecord, gate.count(kindRecord)+1, time.Second)
	for _, id := range ids[:changes] {
		api.Sim.Change(rng, id)
	}
	api.Sim.AddN(starts)
	select {
	case <-stalled:
	case <-time.After(2 * time.Minute):
		require.FailNow(t, "the answers were never held")
	}
	require.Eventually(t, func() bool { _, n := st.meta(); return n == prior+starts }, 2*time.Minute, tick, "the big poll commits")
	p.stop(t, syscall.SIGTERM)
	assert.NotContains(t, p.stderr.String(), "poll failed")
	assert.NotContains(t, p.stderr.String(), "too many outstanding")
}
