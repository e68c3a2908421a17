package ha_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// member is one Placement running in the test, with its own connection,
// so that the connection can be cut like a dead process's.
type member struct {
	id     string
	pl     *ha.Placement
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	leading map[string]bool
}

func startMember(t *testing.T, url, id string, units []string) (*member, func()) {
	t.Helper()
	nc, err := natsConnect(url)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pl, err := ha.OpenPlacement(t.Context(), js, ha.PlacementConfig{Bucket: "meetwatch-lease", TTL: leaseTTL, ID: id, Units: units})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	m := &member{id: id, pl: pl, cancel: cancel, done: make(chan struct{}), leading: map[string]bool{}}
	go func() {
		defer close(m.done)
		_ = pl.Run(ctx, func(lctx context.Context, unit string) {
			m.mu.Lock()
			m.leading[unit] = true
			m.mu.Unlock()
			<-lctx.Done()
			m.mu.Lock()
			delete(m.leading, unit)
			m.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-m.done; nc.Close() })
	return m, nc.Close
}

func (m *member) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.leading)
}

// watchPlacement checks, every 5ms until the test ends, that no unit is
// led by two members at once by their own clocks.
func watchPlacement(t *testing.T, units []string, ms ...*member) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, unit := range units {
				var by []string
				for _, m := range ms {
					if m.pl.Check(unit) == nil {
						by = append(by, m.id)
					}
				}
				assert.LessOrEqual(t, len(by), 1, "unit %s led by %v", unit, by)
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestPlacementOnNATS shares 30 units out among three members on a real
// nats-server, with the shortest lease: they settle at ten each; when one
// member's connection is cut (as when it is killed), the other two lead
// its units; when one of those stops, the last leads them all. The timing
// is tested in fake time over an in-memory bucket
// (placement_synctest_test.go); here only the outcome, within bounds.
func TestPlacementOnNATS(t *testing.T) {
	srv := natstest.Start(t)
	units := make([]string, 30)
	for i := range units {
		units[i] = fmt.Sprintf("acct-%02d", i)
	}
	a, _ := startMember(t, srv.ClientURL(), "a", units)
	b, _ := startMember(t, srv.ClientURL(), "b", units)
	c, cutC := startMember(t, srv.ClientURL(), "c", units)
	watchPlacement(t, units, a, b, c)
	counts := func(ms ...*member) []int {
		var got []int
		for _, m := range ms {
			got = append(got, m.count())
		}
		return got
	}
	heldBy := func(ms ...*member) bool {
		for _, unit := range units {
			if !slices.ContainsFunc(ms, func(m *member) bool { return slices.Contains(m.pl.Held(), unit) }) {
				return false
			}
		}
		return true
	}

	started := time.Now()
	require.Eventually(t, func() bool { return slices.Equal(counts(a, b, c), []int{10, 10, 10}) }, 30*time.Second, 10*time.Millisecond,
		"settled at ten each")
	t.Logf("three members settled at ten units each %s after they started", time.Since(started).Round(time.Millisecond))

	cutC()
	cut := time.Now()
	require.Eventually(t, func() bool { return c.count() == 0 }, leaseTTL, 5*time.Millisecond, "c leads nothing within 9/10 of a TTL, and a little")
	require.Eventually(t, func() bool { return heldBy(a, b) }, 3*leaseTTL, 5*time.Millisecond, "a and b lead every unit")
	t.Logf("after c's connection was cut, a and b led all 30 units %s later", time.Since(cut).Round(time.Millisecond))
	require.Eventually(t, func() bool { return slices.Equal(counts(a, b), []int{15, 15}) }, 3*leaseTTL, 10*time.Millisecond)

	b.cancel()
	<-b.done
	stopped := time.Now()
	require.Eventually(t, func() bool { return heldBy(a) }, leaseTTL, 5*time.Millisecond, "a leads all 30 at its next looks")
	t.Logf("after b stopped, a led all 30 units %s later", time.Since(stopped).Round(time.Millisecond))
	assert.Equal(t, 30, a.count())
}
