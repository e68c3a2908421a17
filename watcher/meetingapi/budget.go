package meetingapi

import (
	"time"

	"golang.org/x/time/rate"
)

// budgetMargin is how much longer than a minute the budget takes to allow a
// minute's requests, so that network jitter cannot squeeze one too many into
// a gateway's sliding minute.
const budgetMargin = time.Second

// NewBudget returns the request budget of an API that allows perMinute
// requests a minute, for ClientConfig.Budget, with room for burst requests
// at once (a listing's first pages, a round of end lookups).
//
// A token bucket that refills at perMinute and holds burst tokens lets
// burst requests more than perMinute through in some minute: those it held
// when the minute began, and the one due as it ends. A gateway that counts
// requests per minute answers them with a 429 and a pause of every
// request. So the bucket refills perMinute-burst+1 tokens in a minute and
// budgetMargin: no minute over the limit, even a little late; with the
// burst held to a twentieth of perMinute, about 5% less in the long run.
func NewBudget(perMinute, burst int) *rate.Limiter {
	burst = max(1, min(burst, perMinute/20))
	refill := max(1, perMinute-burst+1)
	return rate.NewLimiter(rate.Every((time.Minute+budgetMargin)/time.Duration(refill)), burst)
}
