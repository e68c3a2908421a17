package meetingapi

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// Lookups that found room in the budget together (Confirm looks before it
// asks) take it while it lasts; the others fail at once with ErrNoBudget
// rather than wait for more, as a page request would. Their requests must
// be raced past Confirm's look to show it, which only this package can do.
func TestALookupTakesOnlyTheRoomThereIs(t *testing.T) {
	budget := rate.NewLimiter(rate.Every(time.Hour), 2)
	c := &Client{cfg: ClientConfig{Budget: budget}}
	lookup := context.WithValue(t.Context(), lookupKey{}, true)
	require.NoError(t, c.waitBudget(lookup))
	require.NoError(t, c.waitBudget(lookup))
	start := time.Now()
	assert.ErrorIs(t, c.waitBudget(lookup), ErrNoBudget)
	assert.Less(t, time.Since(start), time.Second, "at once")

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	assert.ErrorIs(t, c.waitBudget(ctx), ErrOverBudget, "a page request waits, and fails only past its deadline")
}
