package ha

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// testTTL makes the lease's intervals whole seconds: a leader renews every
// 10s and fences itself 27s after a good renewal; a standby campaigns
// every 6s.
const testTTL = 30 * time.Second

// testReplica runs a Lease over a memKV inside a synctest bubble and
// records its terms as leader.
type testReplica struct {
	id    string
	lease *Lease
	conn  *memConn
	done  chan struct{}
	stop  context.CancelFunc
	// quit ends the current term from within, as a fenced write does.
	quit chan struct{}

	mu    sync.Mutex
	terms []leadTerm
}

// leadTerm is one call of lead: from its start until its context ended.
type leadTerm struct {
	start, end time.Time // end is zero while leading
	cause      error
}

func startTestReplica(t *testing.T, kv *memKV, id string, opts ...func(*LeaseConfig)) *testReplica {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := &testReplica{id: id, conn: kv.connect(id), done: make(chan struct{}), quit: make(chan struct{}, 1)}
	cfg := LeaseConfig{Bucket: "test", TTL: testTTL, ID: id, Logger: logger}
	for _, o := range opts {
		o(&cfg)
	}
	r.lease = newLease(r.conn, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	r.stop = func() { cancel(); <-r.done }
	go func() {
		defer close(r.done)
		if err := r.lease.Run(ctx, r.lead); err != nil {
			t.Errorf("replica %s: %v", id, err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *testReplica) lead(ctx context.Context) {
	r.mu.Lock()
	r.terms = append(r.terms, leadTerm{start: time.Now()})
	r.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-r.quit:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	last := &r.terms[len(r.terms)-1]
	last.end, last.cause = time.Now(), context.Cause(ctx)
}

func (r *testReplica) leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.terms) > 0 && r.terms[len(r.terms)-1].end.IsZero()
}

func (r *testReplica) Terms() []leadTerm {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]leadTerm(nil), r.terms...)
}

// leaders returns the replicas whose lead runs, and checks that Leader
// agrees and that there is at most one.
func leaders(t *testing.T, at time.Duration, rs ...*testReplica) []*testReplica {
	t.Helper()
	var got []*testReplica
	var ids []string
	for _, r := range rs {
		if r.leading() {
			got = append(got, r)
			ids = append(ids, r.id)
		}
		assert.Equal(t, r.leading(), r.lease.Leader(), "at %s, replica %s: Leader and lead disagree", at, r.id)
	}
	assert.LessOrEqual(t, len(got), 1, "at %s, leaders %v", at, ids)
	return got
}

// step lets d of fake time pass, and every replica do what it does then.
func step(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func writesBy(kv *memKV, id string) []memWrite {
	var got []memWrite
	for _, w := range kv.Writes() {
		if w.by == id {
			got = append(got, w)
		}
	}
	return got
}

// threeReplicasLedByA starts replicas a, b and c on one in-memory bucket,
// a first, so that it holds the lease before the others campaign. Call it
// inside the bubble; start is when a began.
func threeReplicasLedByA(t *testing.T) (start time.Time, kv *memKV, a, b, c *testReplica) {
	t.Helper()
	start = time.Now()
	kv = newMemKV(t, testTTL)
	a = startTestReplica(t, kv, "a")
	synctest.Wait()
	return start, kv, a, startTestReplica(t, kv, "b"), startTestReplica(t, kv, "c")
}

func TestLeaseKeepsOneLeaderOverManyRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)

		const run = 5 * time.Minute
		var leaderAge, standbyAge time.Duration
		for now := time.Duration(0); now < run; {
			step(time.Second)
			now = time.Since(start)
			got := leaders(t, now, a, b, c)
			require.Equal(t, []*testReplica{a}, got, "at %s", now)
			leaderAge = max(leaderAge, time.Since(a.lease.LastCheck()))
			standbyAge = max(standbyAge, time.Since(b.lease.LastCheck()), time.Since(c.lease.LastCheck()))
		}

		want := []leadTerm{{start: start}}
		assert.Equal(t, want, a.Terms(), "a leads from when it took the lease, and on")
		renewals := writesBy(kv, "a")[1:]
		require.Len(t, renewals, 30, "a renews every 10s, from 10s to 5m0s")
		for i, w := range renewals {
			assert.Equal(t, "update", w.op)
			assert.Equal(t, time.Duration(i+1)*10*time.Second, w.at.Sub(start), "renewal %d", i)
		}
		assert.Empty(t, writesBy(kv, "b"), "a standby never writes")
		assert.Empty(t, writesBy(kv, "c"), "a standby never writes")
		assert.Equal(t, 9*time.Second, leaderAge, "the leader's last check, sampled every second, is at most one renewal old")
		assert.Equal(t, 5*time.Second, standbyAge, "a standby's last check, sampled every second, is at most one campaign old")
		assert.Equal(t, run, b.lease.LastCheck().Sub(start), "b campaigned at 5m0s, a multiple of 6s")
		t.Logf("over %s: a led from %s and renewed %d times every %s; its last check was at most %s old, the standbys' at most %s (sampled every second)",
			run, want[0].start.Sub(start), len(renewals), testTTL/3, leaderAge, standbyAge)
	})
}

func TestLeaseFailsOverWhenTheLeaderIsCutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		step(45 * time.Second)
		require.True(t, a.leading())
		lastRenewal := a.lease.LastCheck()
		require.Equal(t, 40*time.Second, lastRenewal.Sub(start), "a renews at 10s, 20s, 30s, 40s")

		// a is cut off from NATS: its renewals go unanswered, and its key
		// expires one TTL after it last wrote it.
		a.conn.Cut(true)
		cut := time.Since(start)
		var next *testReplica
		for next == nil && time.Since(start) < cut+2*testTTL {
			step(time.Second)
			if got := leaders(t, time.Since(start), a, b, c); len(got) == 1 && got[0] != a {
				next = got[0]
			}
		}
		require.NotNil(t, next, "a standby leads within two leases of the cut")

		aTerms := a.Terms()
		require.Len(t, aTerms, 1)
		stopped := aTerms[0].end
		assert.ErrorIs(t, aTerms[0].cause, watcher.ErrFenced)
		assert.Equal(t, 67*time.Second, stopped.Sub(start), "the renewal sent at 50s is tried until a's own deadline, 27s after its last good one")
		assert.LessOrEqual(t, stopped.Sub(lastRenewal), testTTL*9/10)

		expired := lastRenewal.Add(testTTL)
		taken := kv.Writes()[len(writesBy(kv, "a"))]
		assert.Equal(t, memWrite{op: "create", by: next.id, rev: taken.rev, at: start.Add(72 * time.Second)}, taken,
			"the key expires at 70s and the next campaign, at 72s, takes it")
		nextTerms := next.Terms()
		require.Len(t, nextTerms, 1)
		led := nextTerms[0].start
		assert.Equal(t, time.Duration(0), led.Sub(taken.at), "the new leader leads at once")
		failover := led.Sub(start) - cut
		assert.Equal(t, 27*time.Second, failover)
		assert.LessOrEqual(t, failover, 2*testTTL)
		t.Logf("leader cut off at %s, last renewed at %s: it stopped leading at %s (%s after its last renewal, bound %s); its key expired at %s; %s took the lease at %s and led at %s: failover %s after the cut (bound %s), %s without a leader",
			cut, lastRenewal.Sub(start), stopped.Sub(start), stopped.Sub(lastRenewal), testTTL*9/10, expired.Sub(start),
			next.id, taken.at.Sub(start), led.Sub(start), failover, 2*testTTL, led.Sub(stopped))

		// a comes back and stands by.
		a.conn.Cut(false)
		for range 2 * testTTL / time.Second {
			step(time.Second)
			assert.Equal(t, []*testReplica{next}, leaders(t, time.Since(start), a, b, c))
		}
		assert.Less(t, time.Since(a.lease.LastCheck()), testTTL/5, "a checks the lease again")
	})
}

func TestLeaseHandsOverOnGracefulStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		step(45 * time.Second)
		require.True(t, a.leading())

		a.stop()
		stopped := time.Since(start)
		aTerms := a.Terms()
		require.Len(t, aTerms, 1)
		assert.ErrorIs(t, aTerms[0].cause, context.Canceled)
		assert.Equal(t, stopped, aTerms[0].end.Sub(start))
		aWrites := writesBy(kv, "a")
		released := aWrites[len(aWrites)-1]
		assert.Equal(t, memWrite{op: "delete", by: "a", rev: aWrites[len(aWrites)-2].rev + 1, at: start.Add(stopped)}, released,
			"a deletes the key at the revision it last wrote, as it stops")

		var next *testReplica
		for next == nil && time.Since(start) < stopped+testTTL {
			step(time.Second)
			if got := leaders(t, time.Since(start), a, b, c); len(got) == 1 {
				next = got[0]
			}
		}
		require.NotNil(t, next)
		taken := kv.Writes()[len(kv.Writes())-1]
		assert.Equal(t, memWrite{op: "create", by: next.id, rev: released.rev + 1, at: start.Add(stopped)}, taken,
			"a standby watching the key takes the released lease at once")
		led := next.Terms()[0].start
		handOver := led.Sub(start) - stopped
		assert.Equal(t, time.Duration(0), handOver, "no wait for a campaign, nor before leading")
		t.Logf("leader stopped at %s and released the lease; %s took it at %s and led at %s: hand-over %s (without the watch, up to a campaign's %s)",
			stopped, next.id, taken.at.Sub(start), led.Sub(start), handOver, testTTL/5)
	})
}

// On a replicated bucket, Create may miss the delete marker of a lease
// just released, when the read it looks for it with is served by a replica
// a moment behind. A standby whose watch saw the marker takes the lease
// over it all the same, rather than wait for its next campaign.
func TestLeaseHandsOverPastALaggingRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		b.conn.Lag(true)
		c.conn.Lag(true)
		step(45 * time.Second)
		require.True(t, a.leading())

		a.stop()
		stopped := time.Since(start)
		aWrites := writesBy(kv, "a")
		released := aWrites[len(aWrites)-1]
		require.Equal(t, "delete", released.op)
		synctest.Wait()
		got := leaders(t, time.Since(start), a, b, c)
		require.Len(t, got, 1, "a standby leads at once")
		taken := kv.Writes()[len(kv.Writes())-1]
		assert.Equal(t, memWrite{op: "update", by: got[0].id, rev: released.rev + 1, at: start.Add(stopped)}, taken,
			"the standby takes the lease over the marker its watch saw")
		step(testTTL)
		assert.Equal(t, got, leaders(t, time.Since(start), a, b, c), "the other standby stands by")
	})
}

// A replica leads as soon as it takes the lease: every write it makes
// asks the lease first (Check), so a former leader paused past its own
// lease cannot write over it. Cut off from then on, it leads until its own
// deadline, 9/10 of a TTL after the write that took the lease.
func TestLeaseLeadsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		require.Equal(t, []memWrite{{op: "create", by: "a", rev: 1, at: start}}, kv.Writes())
		assert.True(t, a.leading())
		assert.True(t, a.lease.Leader())
		assert.NoError(t, a.lease.Check())
		assert.Equal(t, start, a.Terms()[0].start)

		a.conn.Cut(true)
		step(testTTL*9/10 - time.Nanosecond)
		assert.True(t, a.leading(), "within its own lease")
		step(time.Nanosecond)
		assert.False(t, a.leading(), "9/10 of a TTL after it took the lease, unrenewed")
		assert.ErrorIs(t, a.Terms()[0].cause, watcher.ErrFenced)
		assert.Equal(t, testTTL*9/10, a.Terms()[0].end.Sub(start))
	})
}

// TestHealthOutlivesTheLeaseBucket checks that a standby cut off from
// NATS turns unready once its last look at the lease is older than
// LeaseMaxAge, and ready again with it, while it stays live throughout:
// its lease loop goes on beating, and an outage is no reason to restart.
func TestHealthOutlivesTheLeaseBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		h := &Health{LeaseMaxAge: 2 * testTTL / 5, LoopGrace: time.Second}
		h.SetConnection(func() bool { return true })
		b := startTestReplica(t, kv, "b", func(c *LeaseConfig) {
			c.Beat = func(until time.Time) { h.Beat(LoopLease, until) }
		})
		h.SetLease(b.lease)
		probe := func(path string) (int, Report) {
			rec := httptest.NewRecorder()
			h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			var rep Report
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep))
			return rec.Code, rep
		}
		// ready reports whether /readyz answers 200, and checks that
		// /healthz does whatever the lease bucket does.
		ready := func() bool {
			readyCode, rep := probe("/readyz")
			healthyCode, healthy := probe("/healthz")
			assert.Equal(t, "standby", rep.Role)
			assert.Equal(t, http.StatusOK, healthyCode, "at %s: %s", time.Since(start), healthy.Reason)
			if readyCode != http.StatusOK {
				assert.Equal(t, "no recent lease check", rep.Reason)
			}
			return readyCode == http.StatusOK
		}

		step(45 * time.Second)
		require.True(t, a.leading())
		require.True(t, ready())
		lastCheck := b.lease.LastCheck()
		require.Equal(t, 42*time.Second, lastCheck.Sub(start), "b campaigns every 6s")

		b.conn.Cut(true)
		for ready() {
			step(time.Second)
		}
		stale := time.Since(start)
		assert.Equal(t, 55*time.Second, stale, "the first whole second past 42s + LeaseMaxAge")
		for range 120 { // two minutes cut off: live all along
			step(time.Second)
			ready()
		}

		b.conn.Cut(false)
		for !ready() {
			step(time.Second)
		}
		back := time.Since(start)
		assert.Less(t, back, 175*time.Second+testTTL/5+5*time.Second, "ready at the first campaign answered")
		t.Logf("standby last checked the lease at %s, was cut off at 45s, turned unready at %s (LeaseMaxAge %s), was reconnected at 175s and ready again at %s",
			lastCheck.Sub(start), stale, h.LeaseMaxAge, back)
	})
}

// TestStandbyNamesTheLeader checks that a standby says which replica
// leads when it starts standing by, and again when the leader changes,
// but not at every campaign.
func TestStandbyNamesTheLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kv := newMemKV(t, testTTL)
		var logs simtest.Buffer
		logged := func(c *LeaseConfig) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		startTestReplica(t, kv, "b", logged)
		step(time.Minute) // ten campaigns
		assert.Equal(t, 1, strings.Count(logs.String(), `msg="standing by" component=lease replica=b leader=a`), logs.String())

		a.stop()
		c := startTestReplica(t, kv, "c")
		step(time.Minute)
		if c.leading() {
			assert.Equal(t, 1, strings.Count(logs.String(), `msg="standing by" component=lease replica=b leader=c`), logs.String())
		} else {
			assert.Contains(t, logs.String(), `msg=leading`, "b took over from a")
		}
		assert.Equal(t, 1, strings.Count(logs.String(), `msg="standing by" component=lease replica=b leader=a`), "said once")
	})
}

// A renewal that fails for a while (NATS restarting: nobody answers) is
// tried again until the leader's own deadline; once NATS answers again
// the term goes on, and no standby takes over.
func TestLeaseRidesOutAShortOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		step(45 * time.Second)
		require.True(t, a.leading())
		require.Equal(t, 40*time.Second, a.lease.LastCheck().Sub(start))

		a.conn.Fail(true)
		step(20 * time.Second) // past the renewals due at 50s and 60s, short of 67s
		a.conn.Fail(false)
		step(30 * time.Second)
		assert.Equal(t, []*testReplica{a}, leaders(t, time.Since(start), a, b, c))
		require.Len(t, a.Terms(), 1, "one term, never interrupted")
		assert.Less(t, time.Since(a.lease.LastCheck()), testTTL/3, "renewing again")
		assert.Empty(t, writesBy(kv, "b"))
		assert.Empty(t, writesBy(kv, "c"))
	})
}

// A renewal that lands but whose answer is lost makes the next one meet
// a revision it did not expect: the key still holds this run's lease, so
// the leader takes the revision and leads on.
func TestLeaseSurvivesALostRenewalAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, _, a, b, c := threeReplicasLedByA(t)
		step(15 * time.Second)
		require.True(t, a.leading())
		a.conn.LoseNextAnswer()
		step(40 * time.Second)
		assert.Equal(t, []*testReplica{a}, leaders(t, time.Since(start), a, b, c))
		require.Len(t, a.Terms(), 1, "one term, never interrupted")
		assert.Less(t, time.Since(a.lease.LastCheck()), testTTL/3)
	})
}

// Check, which guards every write, follows the lease on the replica's own
// clock: nil while it leads, ErrFenced once its lease ran out, even before
// the goroutine that ends the term has run, and as a standby.
func TestLeaseCheckFollowsTheOwnClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, _, a, b, _ := threeReplicasLedByA(t)
		step(15 * time.Second)
		require.True(t, a.leading())
		require.NoError(t, a.lease.Check())
		require.ErrorIs(t, b.lease.Check(), watcher.ErrFenced, "a standby never writes")

		a.conn.Cut(true) // renewals from 20s go unanswered; the lease runs out at 10s + 27s
		step(22*time.Second - time.Millisecond)
		require.NoError(t, a.lease.Check(), "at %s, within the lease", time.Since(start))
		require.True(t, a.leading())
		time.Sleep(time.Millisecond) // no synctest.Wait: the term's goroutines may not have run yet
		require.ErrorIs(t, a.lease.Check(), watcher.ErrFenced, "at %s, past the lease", time.Since(start))
	})
}

// A term that ends from within (a write found the replica fenced) gives
// the lease up, so that the leader is decided afresh at once rather than
// when the key expires.
func TestLeaseReleasedWhenATermEndsFromWithin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		step(15 * time.Second)
		require.True(t, a.leading())
		a.quit <- struct{}{}
		synctest.Wait()
		released := slices.ContainsFunc(writesBy(kv, "a"), func(w memWrite) bool {
			return w.op == "delete" && w.at.Sub(start) == 15*time.Second
		})
		assert.True(t, released, "a gives the lease up")
		got := leaders(t, time.Since(start), a, b, c) // a, b or c: the race is decided afresh
		require.Len(t, got, 1, "someone leads at once")
		assert.Equal(t, 15*time.Second, got[0].Terms()[len(got[0].Terms())-1].start.Sub(start))
	})
}
