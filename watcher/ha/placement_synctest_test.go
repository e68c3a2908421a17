package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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

// testMember runs a Placement over a memKV inside a synctest bubble and
// records the terms of each unit it leads, and its log.
type testMember struct {
	id   string
	pl   *Placement
	conn *memConn
	done chan struct{}
	stop func()
	logs simtest.Buffer

	mu    sync.Mutex
	terms map[string][]leadTerm
}

func startTestMember(t *testing.T, kv *memKV, id string, units []string) *testMember {
	t.Helper()
	m := &testMember{id: id, conn: kv.connect(id), done: make(chan struct{}), terms: map[string][]leadTerm{}}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &m.logs), nil))
	pl, err := newPlacement(m.conn, PlacementConfig{Bucket: "test", TTL: testTTL, ID: id, Units: units, Logger: logger})
	require.NoError(t, err)
	m.pl = pl
	ctx, cancel := context.WithCancel(t.Context())
	m.stop = func() { cancel(); <-m.done }
	go func() {
		defer close(m.done)
		if err := pl.Run(ctx, m.lead); err != nil {
			t.Errorf("member %s: %v", id, err)
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *testMember) lead(ctx context.Context, unit string) {
	m.mu.Lock()
	m.terms[unit] = append(m.terms[unit], leadTerm{start: time.Now()})
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	last := &m.terms[unit][len(m.terms[unit])-1]
	last.end, last.cause = time.Now(), context.Cause(ctx)
}

// leading returns the units whose lead runs, sorted.
func (m *testMember) leading() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var got []string
	for unit, terms := range m.terms {
		if terms[len(terms)-1].end.IsZero() {
			got = append(got, unit)
		}
	}
	slices.Sort(got)
	return got
}

func (m *testMember) termsOf(unit string) []leadTerm {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.terms[unit])
}

func (m *testMember) allTerms() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, terms := range m.terms {
		n += len(terms)
	}
	return n
}

// testUnits names n units.
func testUnits(n int) []string {
	units := make([]string, n)
	for i := range units {
		units[i] = fmt.Sprintf("acct-%02d", i)
	}
	return units
}

// holders checks that no unit is led by two members at once, by their own
// clocks (Check) or by their lead running, and that Held agrees with lead;
// it returns the member leading each unit.
func holders(t *testing.T, units []string, ms ...*testMember) map[string]*testMember {
	t.Helper()
	got := map[string]*testMember{}
	for _, m := range ms {
		leading := m.leading()
		assert.Equal(t, nonNil(leading), m.pl.Held(), "at %s, member %s: Held and lead disagree", time.Now().Format(time.TimeOnly), m.id)
		for _, unit := range units {
			if m.pl.Check(unit) != nil && !slices.Contains(leading, unit) {
				continue
			}
			if other := got[unit]; other != nil {
				assert.Fail(t, "a unit led twice", "at %s, unit %s is led by %s and %s", time.Now().Format(time.TimeOnly), unit, other.id, m.id)
			}
			got[unit] = m
		}
	}
	return got
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// counts returns how many units each member leads, in the order given.
func counts(ms ...*testMember) []int {
	got := make([]int, len(ms))
	for i, m := range ms {
		got[i] = len(m.leading())
	}
	return got
}

// settle steps a look at a time, checking holders at each, until every
// unit is led and each member leads want[i] units, or within is over. It
// returns how long that took.
func settle(t *testing.T, within time.Duration, units []string, want []int, ms ...*testMember) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if len(holders(t, units, ms...)) == len(units) && slices.Equal(counts(ms...), want) {
			return time.Since(start)
		}
		require.Less(t, time.Since(start), within, "settled within %s: leading %v, want %v", within, counts(ms...), want)
		step(lookEvery)
	}
}

// run steps a look at a time for d, checking holders at each.
func run(t *testing.T, d time.Duration, units []string, ms ...*testMember) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		step(lookEvery)
		holders(t, units, ms...)
	}
}

// Three members starting together share 30 units ten each at their first
// or second look, and then keep them: no unit moves and no term ends.
func TestPlacementSettlesBalanced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		units := testUnits(30)
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", units)
		b := startTestMember(t, kv, "b", units)
		c := startTestMember(t, kv, "c", units)
		took := settle(t, 30*time.Second, units, []int{10, 10, 10}, a, b, c)
		t.Logf("3 members, 30 units: settled at 10 each %s after they started", took)
		assert.LessOrEqual(t, took, 2*lookEvery, "the first look waits one interval; settled at the first or second look")

		run(t, 2*time.Minute, units, a, b, c)
		assert.Equal(t, []int{10, 10, 10}, counts(a, b, c))
		assert.Equal(t, 30, a.allTerms()+b.allTerms()+c.allTerms(), "one term per unit: nothing moved")
		for _, m := range []*testMember{a, b, c} {
			assert.Equal(t, 1, strings.Count(m.logs.String(), `msg="sharing units"`), "said once, not at every look: %s", m.id)
			assert.Contains(t, m.logs.String(), `msg="sharing units" component=placement replica=`+m.id+` members=3 units=30 share=10`)
			assert.Equal(t, 10, strings.Count(m.logs.String(), `msg=leading component=lease replica=`+m.id+` unit=`), "a line for each unit taken")
		}
		for _, unit := range units {
			renewals := 0
			for _, w := range kv.WritesTo(unitPrefix + unit) {
				if w.op == "update" {
					renewals++
				}
			}
			assert.Equal(t, 12, renewals, "unit %s renewed every 10s for 2m", unit)
		}
	})
}

// However A and R fall, members starting together settle with each at
// ceil(A/R) or floor(A/R), and every unit led.
func TestPlacementSettlesAtCeilOrFloor(t *testing.T) {
	for _, tc := range []struct {
		units, members int
	}{
		{31, 3}, {32, 3}, {7, 3}, {2, 3}, {100, 4}, {10, 1},
	} {
		t.Run(fmt.Sprintf("%d units, %d members", tc.units, tc.members), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				units := testUnits(tc.units)
				kv := newMemKV(t, testTTL)
				var ms []*testMember
				for i := range tc.members {
					ms = append(ms, startTestMember(t, kv, string(rune('a'+i)), units))
				}
				lo, hi := tc.units/tc.members, (tc.units+tc.members-1)/tc.members
				start := time.Now()
				balanced := func() bool {
					for _, n := range counts(ms...) {
						if n < lo || n > hi {
							return false
						}
					}
					return true
				}
				for len(holders(t, units, ms...)) < tc.units || !balanced() {
					require.Less(t, time.Since(start), 30*time.Second, "settled within 30s: %v", counts(ms...))
					step(lookEvery)
				}
				t.Logf("settled at %v %s after the start", counts(ms...), time.Since(start))
				before := counts(ms...)
				run(t, 30*time.Second, units, ms...)
				assert.Equal(t, before, counts(ms...), "and stays so")
			})
		})
	}
}

// A member that joins later takes its share within a few TTLs, one unit
// per look from each member over its new share, and every unit that moves
// is handed over cleanly: the new holder's term starts after the old one
// ended, within a look of it.
func TestPlacementTakesInAMemberThatJoins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		units := testUnits(30)
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", units)
		b := startTestMember(t, kv, "b", units)
		settle(t, 30*time.Second, units, []int{15, 15}, a, b)
		run(t, time.Minute, units, a, b)

		c := startTestMember(t, kv, "c", units)
		joined := time.Now()
		took := settle(t, 3*testTTL, units, []int{10, 10, 10}, a, b, c)
		t.Logf("a third member joining 2 with 30 units has its 10 %s after it started", took)
		assert.LessOrEqual(t, took, 6*time.Second, "five units from each of a and b, one a look")
		run(t, time.Minute, units, a, b, c)
		assert.Equal(t, []int{10, 10, 10}, counts(a, b, c))

		moved := 0
		for _, unit := range c.leading() {
			cTerms := c.termsOf(unit)
			require.Len(t, cTerms, 1)
			var from []leadTerm
			for _, m := range []*testMember{a, b} {
				from = append(from, m.termsOf(unit)...)
			}
			require.Len(t, from, 1, "unit %s: one term before c's", unit)
			gap := cTerms[0].start.Sub(from[0].end)
			assert.True(t, gap >= 0 && gap <= lookEvery, "unit %s: handed over after %s", unit, gap)
			assert.True(t, from[0].end.After(joined))
			// In fake time the old term may end at the instant the new one
			// starts; the bucket's writes give the order.
			writes := kv.WritesTo(unitPrefix + unit)
			i := slices.IndexFunc(writes, func(w memWrite) bool { return w.by == "c" })
			require.Positive(t, i)
			assert.Equal(t, []string{"delete", "create"}, []string{writes[i-1].op, writes[i].op}, "unit %s: the old holder's key went, after its term, before c took it", unit)
			assert.Equal(t, from[0].end, writes[i-1].at)
			moved++
		}
		assert.Equal(t, 10, moved)
		assert.Equal(t, 5, strings.Count(a.logs.String(), `msg="giving a unit back"`), a.logs.String())
		assert.Contains(t, a.logs.String(), `reason="more than its share" held=15 share=10`)
		assert.Contains(t, a.logs.String(), `msg="sharing units" component=placement replica=a members=3 units=30 share=10`)
		assert.Contains(t, a.logs.String(), `msg="released the lease" component=lease replica=a unit=`)
	})
}

// A member cut off from NATS, as one killed with SIGKILL is, stops leading
// each unit 9/10 of a TTL after its last good renewal, so that it leads
// nothing 9/10 of a TTL after the cut; the others lead each of its units
// within a TTL and a look of the cut, never while it still did, and share
// them out.
func TestPlacementFailsOverAMemberCutOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		units := testUnits(30)
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", units)
		b := startTestMember(t, kv, "b", units)
		c := startTestMember(t, kv, "c", units)
		settle(t, 30*time.Second, units, []int{10, 10, 10}, a, b, c)
		run(t, 17*time.Second, units, a, b, c) // renewals fall between the looks
		cUnits := c.leading()

		c.conn.Cut(true)
		cut := time.Now()
		var emptied time.Duration
		retaken := map[string]time.Duration{}
		for time.Since(cut) < 2*testTTL {
			step(lookEvery)
			got := holders(t, units, a, b, c)
			if emptied == 0 && len(c.leading()) == 0 {
				emptied = time.Since(cut)
			}
			for _, unit := range cUnits {
				if _, ok := retaken[unit]; !ok && got[unit] != nil && got[unit] != c {
					retaken[unit] = time.Since(cut)
				}
			}
		}
		assert.LessOrEqual(t, emptied, testTTL*9/10, "c leads nothing 9/10 of a TTL after the cut")
		assert.Positive(t, emptied)
		require.Len(t, retaken, 10, "each of c's units is led again")
		last := slices.Max(slices.Collect(maps.Values(retaken)))
		t.Logf("c leads nothing %s after the cut; its units are led again %s to %s after it", emptied, slices.Min(slices.Collect(maps.Values(retaken))), last)
		assert.LessOrEqual(t, last, testTTL+lookEvery, "within a TTL and a look of the cut")
		assert.Equal(t, []int{15, 15, 0}, counts(a, b, c))
		for _, unit := range cUnits {
			terms := c.termsOf(unit)
			require.Len(t, terms, 1)
			assert.ErrorIs(t, terms[0].cause, watcher.ErrFenced)
		}
		assert.Contains(t, a.logs.String(), `msg="sharing units" component=placement replica=a members=2 units=30 share=15`)
		assert.Equal(t, 1, strings.Count(c.logs.String(), `msg="cannot reach the lease bucket; taking no units until it answers"`), "said once")

		// c comes back and takes its share again, from a and b.
		c.conn.Cut(false)
		settle(t, 3*testTTL, units, []int{10, 10, 10}, a, b, c)
		assert.Contains(t, c.logs.String(), `msg="lease bucket reachable again"`)
	})
}

// SetUnits takes effect at the next look: a removed unit's term ends then
// and its key goes, and an added unit is led by someone then.
func TestPlacementSetUnits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		units := testUnits(12)
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", units)
		b := startTestMember(t, kv, "b", units)
		settle(t, 30*time.Second, units, []int{6, 6}, a, b)
		step(lookEvery / 2) // between two looks

		removed := append(slices.Clone(a.leading()[:2]), b.leading()[0])
		added := []string{"new-1", "new-2", "new-3"}
		next := slices.Concat(slices.DeleteFunc(slices.Clone(units), func(u string) bool { return slices.Contains(removed, u) }), added)
		set := time.Now()
		require.NoError(t, a.pl.SetUnits(next))
		require.NoError(t, b.pl.SetUnits(next))
		step(lookEvery)
		got := holders(t, next, a, b)
		assert.Len(t, got, 12, "every unit, the added ones too, is led within a look")
		for _, unit := range removed {
			m := a
			if !slices.Contains(a.termsOfUnits(), unit) {
				m = b
			}
			terms := m.termsOf(unit)
			require.Len(t, terms, 1)
			assert.LessOrEqual(t, terms[0].end.Sub(set), lookEvery, "unit %s stopped within a look", unit)
			writes := kv.WritesTo(unitPrefix + unit)
			assert.Equal(t, memWrite{op: "delete", by: m.id, rev: writes[len(writes)-1].rev, at: terms[0].end}, writes[len(writes)-1], "unit %s's key goes once its term ended", unit)
			assert.Contains(t, m.logs.String(), `msg="giving a unit back" component=placement replica=`+m.id+` unit=`+unit+` reason="no longer configured"`)
		}
		for _, unit := range added {
			assert.NotNil(t, got[unit], "unit %s", unit)
		}
		run(t, time.Minute, next, a, b)
		assert.Equal(t, []int{6, 6}, counts(a, b))
		assert.Error(t, a.pl.SetUnits([]string{"Bad Name"}), "a name that cannot stand in a key")
	})
}

func (m *testMember) termsOfUnits() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Keys(m.terms))
}

// A member that stops gives every unit up at once, each after its term
// ended, and its member key; the others lead them all at their next look.
func TestPlacementHandsOverOnCleanStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		units := testUnits(30)
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", units)
		b := startTestMember(t, kv, "b", units)
		c := startTestMember(t, kv, "c", units)
		settle(t, 30*time.Second, units, []int{10, 10, 10}, a, b, c)
		run(t, 15*time.Second, units, a, b, c)
		step(lookEvery / 2)
		cUnits := c.leading()

		c.stop()
		stopped := time.Now()
		for _, unit := range cUnits {
			terms := c.termsOf(unit)
			require.Len(t, terms, 1)
			assert.Equal(t, stopped, terms[0].end)
			writes := kv.WritesTo(unitPrefix + unit)
			assert.Equal(t, memWrite{op: "delete", by: "c", rev: writes[len(writes)-1].rev, at: stopped}, writes[len(writes)-1])
		}
		memberWrites := kv.WritesTo(memberPrefix + "c")
		assert.Equal(t, "delete", memberWrites[len(memberWrites)-1].op, "c leaves")
		assert.Contains(t, c.logs.String(), `msg="left the placement"`)

		step(lookEvery)
		got := holders(t, units, a, b)
		assert.Len(t, got, 30, "a and b lead all at their next look")
		for _, unit := range cUnits {
			for _, m := range []*testMember{a, b} {
				if terms := m.termsOf(unit); len(terms) > 0 {
					assert.LessOrEqual(t, terms[0].start.Sub(stopped), lookEvery)
				}
			}
		}
		settle(t, time.Second, units, []int{15, 15}, a, b)
	})
}

// The probes read a Placement as they read a Lease: the role is leader
// while the replica leads a unit at least.
func TestHealthReadsAPlacement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", nil)
		h := &Health{LoopGrace: time.Minute}
		h.SetConnection(func() bool { return true })
		h.SetPlacement(a.pl)
		step(2 * lookEvery)
		ready, _ := h.Check(time.Now())
		assert.Equal(t, []any{"standby", ""}, []any{ready.Role, ready.Reason}, "no units: standing by, and ready")
		assert.False(t, a.pl.Leader())

		require.NoError(t, a.pl.SetUnits([]string{"acme"}))
		step(lookEvery)
		assert.Equal(t, []string{"acme"}, a.pl.Held())
		assert.True(t, a.pl.Leader())
		assert.NoError(t, a.pl.Check("acme"))
		assert.ErrorIs(t, a.pl.Check("other"), watcher.ErrFenced)
		ready, _ = h.Check(time.Now())
		assert.Equal(t, "leader", ready.Role)
	})
}

// With many accounts, the probes list the accounts polled now; readiness
// asks each of them to have committed in its term, or, polling none, a
// recent look at the lease bucket; and each account's loop is watched by
// liveness on its own, named, until its term ends.
func TestHealthOfManyAccounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kv := newMemKV(t, testTTL)
		a := startTestMember(t, kv, "a", []string{"sp-1"})
		h := &Health{LoopGrace: time.Second, Accounts: true}
		h.SetConnection(func() bool { return true })
		ready, _ := h.Check(time.Now())
		assert.Equal(t, "opening the stream and buckets", ready.Reason)
		h.SetPlacement(a.pl)
		step(2 * lookEvery)
		require.Equal(t, []string{"sp-1"}, a.pl.Held())

		ready, healthy := h.Check(time.Now())
		assert.Equal(t, []any{"leader", []string{}, ""}, []any{ready.Role, ready.Accounts, ready.Reason}, "holding a unit of no account polled yet")
		assert.Equal(t, []string{}, healthy.Accounts)

		acme, beta := h.Account("acme"), h.Account("beta")
		acme.NewTerm()
		beta.NewTerm()
		acme.Alive(time.Now().Add(time.Second))
		beta.Alive(time.Now().Add(time.Second))
		beta.PollFailed(errors.New("listing meetings: 503"))
		ready, _ = h.Check(time.Now())
		assert.Equal(t, []string{"acme", "beta"}, ready.Accounts)
		assert.Equal(t, "no snapshot committed yet in this term for accounts acme, beta", ready.Reason)
		assert.Equal(t, "account beta: listing meetings: 503", ready.LastError)

		acme.Polled(time.Now())
		ready, _ = h.Check(time.Now())
		assert.Equal(t, "no snapshot committed yet in this term for account beta", ready.Reason)
		beta.Polled(time.Now())
		ready, _ = h.Check(time.Now())
		assert.Equal(t, []any{"ok", "", ""}, []any{ready.Status, ready.Reason, ready.LastError})

		// beta's loop stalls: liveness names it; its term's end forgets it.
		step(3 * time.Second)
		acme.Alive(time.Now().Add(time.Second))
		_, healthy = h.Check(time.Now())
		assert.Equal(t, "the poll beta loop is more than 1s past its own deadline", healthy.Reason)
		beta.End()
		ready, healthy = h.Check(time.Now())
		assert.Equal(t, []string{"acme"}, ready.Accounts)
		assert.Empty(t, healthy.Reason)
		assert.Equal(t, 1, h.Polling())

		// A new term of acme is not ready until it commits; the end of
		// the term before it, late, does not end the new one.
		old := acme
		acme = h.Account("acme")
		acme.NewTerm()
		old.End()
		ready, _ = h.Check(time.Now())
		assert.Equal(t, []any{[]string{"acme"}, "no snapshot committed yet in this term for account acme"}, []any{ready.Accounts, ready.Reason})
		acme.End()
		ready, _ = h.Check(time.Now())
		assert.Equal(t, []any{[]string{}, ""}, []any{ready.Accounts, ready.Reason}, "polling none, with a recent look at the bucket")
	})
}
