package ha

import (
	"context"
	"encoding/json"
	"io"
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
// 10s and fences itself 27s after a good renewal; a standby looks at the
// lease every half second (lookEvery).
const testTTL = 30 * time.Second

// lookEvery is how often a standby looks at a lease of testTTL.
const lookEvery = 500 * time.Millisecond

// testReplica runs a Lease over a memKV inside a synctest bubble and
// records its terms as leader, its log, and its heartbeats.
type testReplica struct {
	id    string
	lease *Lease
	conn  *memConn
	done  chan struct{}
	stop  context.CancelFunc
	// quit ends the current term from within, as a fenced write does.
	quit chan struct{}
	logs simtest.Buffer

	mu    sync.Mutex
	terms []leadTerm
	// due is the deadline of the last beat, and late counts the beats
	// that came after the deadline of the one before.
	due  time.Time
	late int
}

// leadTerm is one call of lead: from its start until its context ended.
type leadTerm struct {
	start, end time.Time // end is zero while leading
	cause      error
}

func startTestReplica(t *testing.T, kv *memKV, id string, opts ...func(*LeaseConfig)) *testReplica {
	t.Helper()
	r := &testReplica{id: id, conn: kv.connect(id), done: make(chan struct{}), quit: make(chan struct{}, 1)}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &r.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := LeaseConfig{Bucket: "test", TTL: testTTL, ID: id, Logger: logger, Beat: r.beat}
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

func (r *testReplica) beat(until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.due.IsZero() && time.Now().After(r.due) {
		r.late++
	}
	r.due = until
}

// lateBeats counts the beats that came after the deadline the one before
// gave.
func (r *testReplica) lateBeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.late
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
// a first, so that it holds the lease before the others look. Call it
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
		require.Equal(t, lookEvery, a.lease.campaignEvery())

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
		assert.Less(t, standbyAge, lookEvery, "a standby's last check, sampled every second, is less than one look old")
		for _, r := range []*testReplica{a, b, c} {
			assert.Zero(t, r.lateBeats(), "replica %s beat within its own deadlines", r.id)
		}
		assert.Equal(t, 1, strings.Count(b.logs.String(), `msg="standing by" component=lease replica=b leader=a`), "said once")
	})
}

// A leader cut off from NATS retries its renewal until its own deadline,
// 9/10 of a TTL after the last good one was sent, and stops; the server
// lets its key go a TTL after that renewal, and a standby takes the lease
// at its next look. Every replica's loop beats throughout.
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
		assert.Equal(t, testTTL*9/10, stopped.Sub(lastRenewal), "the renewal sent at 50s is tried until a's own deadline, 27s after its last good one")

		taken := kv.Writes()[len(writesBy(kv, "a"))]
		assert.Equal(t, memWrite{op: "create", by: next.id, rev: taken.rev, at: lastRenewal.Add(testTTL)}, taken,
			"the key expires at 70s, and a standby's look then takes it")
		led := next.Terms()[0].start
		assert.Equal(t, taken.at, led, "the new leader leads at once")
		assert.LessOrEqual(t, led.Sub(lastRenewal), testTTL+lookEvery, "failover: within a TTL and a look of the leader's last renewal")

		// a comes back and stands by.
		a.conn.Cut(false)
		for range 2 * testTTL / time.Second {
			step(time.Second)
			assert.Equal(t, []*testReplica{next}, leaders(t, time.Since(start), a, b, c))
		}
		assert.Less(t, time.Since(a.lease.LastCheck()), lookEvery, "a looks at the lease again")
		assert.Contains(t, a.logs.String(), `msg="standing by" component=lease replica=a leader=`+next.id)
		for _, r := range []*testReplica{a, b, c} {
			assert.Zero(t, r.lateBeats(), "replica %s beat within its own deadlines, cut off or not", r.id)
		}
	})
}

// A leader that stops gives the lease up, and a standby takes it at its
// next look rather than after a TTL.
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

		step(lookEvery)
		got := leaders(t, time.Since(start), a, b, c)
		require.Len(t, got, 1, "a standby leads at its next look")
		taken := kv.Writes()[len(kv.Writes())-1]
		assert.Equal(t, memWrite{op: "create", by: got[0].id, rev: released.rev + 1, at: start.Add(stopped + lookEvery)}, taken,
			"the standby creates the key over the release's marker")
		assert.Equal(t, taken.at, got[0].Terms()[0].start)
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

// A leader whose lease another replica holds (it was paused past its
// lease, and the key expired and was taken) is fenced on the server: its
// next renewal, a compare-and-set on the revision it last wrote, is
// refused, and its term ends then, with nothing written over the other's
// lease.
func TestLeaseEndsAtARenewalRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		step(15 * time.Second)
		require.True(t, a.leading())

		other := kv.connect("x")
		last := writesBy(kv, "a")[1]
		require.NoError(t, other.Delete(t.Context(), leaseKey))
		_, err := other.Create(t.Context(), leaseKey, []byte(`{"id":"x","run":"0"}`))
		require.NoError(t, err)
		step(10 * time.Second)

		terms := a.Terms()
		require.Len(t, terms, 1)
		assert.Equal(t, 20*time.Second, terms[0].end.Sub(start), "the renewal due at 20s is refused")
		assert.ErrorIs(t, terms[0].cause, watcher.ErrFenced)
		assert.ErrorContains(t, terms[0].cause, "key revision mismatch")
		assert.Equal(t, []memWrite{{op: "create", by: "a", rev: 1, at: start}, last}, writesBy(kv, "a"), "a wrote nothing after x took the lease")
		assert.ErrorIs(t, a.lease.Check(), watcher.ErrFenced)
		assert.Contains(t, a.logs.String(), `msg="standing by" component=lease replica=a leader=x`)
	})
}

// A replica whose term ended on its own clock while its key lived on does
// not take that key back: it waits like any standby until the server lets
// it go, and takes the lease again at its next look.
func TestLeaseWaitsOutItsOwnFormerLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		step(45 * time.Second)
		a.conn.Fail(true) // every request fails at once, as while NATS restarts
		step(23 * time.Second)
		require.Len(t, a.Terms(), 1)
		require.False(t, a.leading(), "a stood down at 67s, 27s after its last renewal")
		a.conn.Fail(false)
		step(time.Second)
		assert.False(t, a.leading(), "its former lease is held until 70s")
		assert.Contains(t, a.logs.String(), `msg="standing by until this replica's former lease lapses"`)

		step(2 * time.Second)
		terms := a.Terms()
		require.Len(t, terms, 2)
		took := terms[1].start.Sub(start)
		assert.True(t, took >= 70*time.Second && took <= 70*time.Second+lookEvery,
			"a takes the lease again at its first look after the server let its former one go at 70s; took it at %s", took)
		assert.Equal(t, 1, strings.Count(a.logs.String(), `msg="cannot reach the lease bucket; standing by until it answers"`), "said once an outage")
		assert.Contains(t, a.logs.String(), `msg="lease bucket reachable again" component=lease replica=a failed_attempts=`)
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
		require.Equal(t, 45*time.Second, lastCheck.Sub(start), "b looks every half second")

		b.conn.Cut(true)
		for ready() {
			step(time.Second)
		}
		stale := time.Since(start)
		assert.Equal(t, 58*time.Second, stale, "the first whole second past 45s + LeaseMaxAge")
		for range 120 { // two minutes cut off: live all along
			step(time.Second)
			ready()
		}

		b.conn.Cut(false)
		back := time.Since(start)
		for !ready() {
			step(time.Second)
		}
		assert.LessOrEqual(t, time.Since(start)-back, campaignTimeout+lookEvery+time.Second, "ready at the first look answered")
	})
}

// TestStandbyNamesTheLeader checks that a standby says which replica
// leads when it starts standing by, and again when the leader changes,
// but not at every look.
func TestStandbyNamesTheLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		synctest.Wait()
		b := startTestReplica(t, kv, "b")
		step(time.Minute) // 120 looks
		assert.Equal(t, 1, strings.Count(b.logs.String(), `msg="standing by" component=lease replica=b leader=a`), b.logs.String())

		a.stop()
		c := startTestReplica(t, kv, "c")
		step(time.Minute)
		if c.leading() {
			assert.Equal(t, 1, strings.Count(b.logs.String(), `msg="standing by" component=lease replica=b leader=c`), b.logs.String())
		} else {
			assert.Contains(t, b.logs.String(), `msg=leading`, "b took over from a")
		}
		assert.Equal(t, 1, strings.Count(b.logs.String(), `msg="standing by" component=lease replica=b leader=a`), "said once")
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
		assert.Contains(t, a.logs.String(), `msg="lease renewed after retries"`)
		assert.Empty(t, writesBy(kv, "b"))
		assert.Empty(t, writesBy(kv, "c"))
		assert.Zero(t, a.lateBeats(), "a beat within its own deadlines through the outage")
	})
}

// A renewal that lands but whose answer is lost is tried again and meets
// the revision it wrote: the key holds this run's value, so the leader
// takes that revision and leads on.
func TestLeaseSurvivesALostRenewalAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, kv, a, b, c := threeReplicasLedByA(t)
		step(15 * time.Second)
		require.True(t, a.leading())
		a.conn.LoseNextAnswer()
		step(40 * time.Second)
		assert.Equal(t, []*testReplica{a}, leaders(t, time.Since(start), a, b, c))
		require.Len(t, a.Terms(), 1, "one term, never interrupted")
		assert.Less(t, time.Since(a.lease.LastCheck()), testTTL/3)
		writes := writesBy(kv, "a")
		require.Greater(t, len(writes), 3)
		assert.Equal(t, 20*time.Second, writes[2].at.Sub(start), "the renewal whose answer was lost landed")
		assert.Contains(t, a.logs.String(), `msg="lease renewed after retries"`)
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
// the lease up, so that the leader is decided afresh at the next look
// rather than when the key expires.
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
		assert.Contains(t, a.logs.String(), `msg="stopped leading: a write was fenced"`)
		step(lookEvery)
		got := leaders(t, time.Since(start), a, b, c) // a, b or c: the race is decided afresh
		require.Len(t, got, 1, "someone leads at the next look")
		assert.Equal(t, 15*time.Second+lookEvery, got[0].Terms()[len(got[0].Terms())-1].start.Sub(start))
	})
}

// Leases under keys of their own share one bucket without touching one
// another: each leads, and renews and releases its own key; an empty Key
// is "leader".
func TestLeasesOfTwoKeysShareABucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kv := newMemKV(t, testTTL)
		a := startTestReplica(t, kv, "a")
		b := startTestReplica(t, kv, "b", func(c *LeaseConfig) { c.Key = "unit.acme" })
		synctest.Wait()
		step(15 * time.Second)
		assert.True(t, a.leading())
		assert.True(t, b.leading())
		b.stop()
		assert.Equal(t, []string{"create", "update"}, ops(kv.WritesTo(leaseKey)))
		assert.Equal(t, []string{"create", "update", "delete"}, ops(kv.WritesTo("unit.acme")))
		assert.True(t, a.leading())
	})
}

func ops(ws []memWrite) []string {
	var got []string
	for _, w := range ws {
		got = append(got, w.op)
	}
	return got
}
