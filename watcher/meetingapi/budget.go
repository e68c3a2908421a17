package meetingapi

import (
	"time"

	"golang.org/x/time/rate"
)

// NewBudget returns the request budget of an API that allows perMinute
// requests a minute, for ClientConfig.Budget, with room for burst requests
// at once (a listing's first pages, a round of end lookups).
//
// A token bucket that refills at perMinute and holds burst tokens lets
// burst-1 requests more than perMinute through in some minute: those it held
// when the minute began. A gateway that counts requests per minute answers
// them with a 429 and a pause of every request. So the bucket refills at
// perMinute-burst+1 instead: no minute over the limit, and, with the burst
// held to a twentieth of perMinute, at most 5% less in the long run.
func NewBudget(perMinute, burst int) *rate.Limiter {
	burst = max(1, min(burst, perMinute/20))
	refill := max(1, perMinute-burst+1)
	return rate.NewLimiter(rate.Every(time.Minute/time.Duration(refill)), burst)
}
