package meetingapi_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/meetwatch/meetwatch/watcher/meetingapi"
)

// A client that asks as fast as the budget lets it never sends more than
// the API's limit in any minute, bursts included, even counted by a
// gateway that sees the requests up to half a second late, and still gets
// nearly all of it over ten minutes.
func TestTheBudgetKeepsEveryMinuteWithinTheLimit(t *testing.T) {
	for _, c := range []struct{ perMinute, burst int }{{100, 4}, {120, 4}, {80, 4}, {100, 1}, {3, 4}, {1, 1}} {
		t.Run(fmt.Sprintf("%d a minute, bursts of %d", c.perMinute, c.burst), func(t *testing.T) {
			budget := meetingapi.NewBudget(c.perMinute, c.burst)
			t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
			var sent []time.Time
			const span = 10 * time.Minute
			for at := t0; at.Before(t0.Add(span)); at = at.Add(10 * time.Millisecond) {
				for budget.AllowN(at, 1) {
					sent = append(sent, at)
				}
			}
			const jitter = 500 * time.Millisecond
			most, j := 0, 0
			for i := range sent { // a minute from sent[i], as late requests may make it look
				for j < len(sent) && !sent[j].After(sent[i].Add(time.Minute+jitter)) {
					j++
				}
				most = max(most, j-i)
			}
			assert.LessOrEqual(t, most, c.perMinute, "requests in the busiest minute")
			assert.GreaterOrEqual(t, float64(len(sent)), 0.93*float64(c.perMinute)*span.Minutes(), "requests in ten minutes")
			if c.perMinute >= 20*c.burst {
				assert.Equal(t, c.burst, countAt(sent, t0), "a burst goes at once")
			}
		})
	}
}

func countAt(sent []time.Time, at time.Time) int {
	n := 0
	for _, s := range sent {
		if s.Equal(at) {
			n++
		}
	}
	return n
}
