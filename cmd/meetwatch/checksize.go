package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/watcher/meetingapi"
)

// sizingInput is what the sizing verdict is worked out from: the listing's
// first page, the page's latency, and the settings.
type sizingInput struct {
	meetings, limit, overlap int
	requests                 int // a full listing's
	concurrency              int
	latency                  time.Duration // of one page
	budget                   *rate.Limiter // nil: none
	apiRate                  int
	interval, pollTimeout    time.Duration
	timeoutSet               bool // MEETWATCH_POLL_TIMEOUT was set, rather than 90% of the interval
}

// sizingReport is the sizing verdict: what a full listing takes at this
// count, and whether it fits the poll interval.
type sizingReport struct {
	Meetings    int `json:"meetings"`
	PageSize    int `json:"page_size"`
	PageOverlap int `json:"page_overlap"`
	// Requests is what a full listing sends, when the list holds still.
	Requests           int     `json:"requests"`
	Concurrency        int     `json:"concurrency"`
	PageLatencySeconds float64 `json:"page_latency_seconds"`
	// BudgetPerMinute is MEETWATCH_API_RATE; 0 means no budget.
	BudgetPerMinute int `json:"budget_per_minute"`
	// BudgetPerInterval is how many requests the budget allows in an
	// interval, in the long run; absent without a budget.
	BudgetPerInterval *float64 `json:"budget_per_interval,omitempty"`
	// BudgetSeconds is how long the budget takes to allow the listing's
	// requests; PagesSeconds how long the pages take at the measured
	// latency, the first alone and the rest Concurrency at a time. A
	// listing takes ListingSeconds at least, the longer of the two.
	BudgetSeconds      float64 `json:"budget_seconds"`
	PagesSeconds       float64 `json:"pages_seconds"`
	ListingSeconds     float64 `json:"listing_seconds"`
	IntervalSeconds    float64 `json:"interval_seconds"`
	PollTimeoutSeconds float64 `json:"poll_timeout_seconds"`
	Fits               bool    `json:"fits"`
	// FitIntervalSeconds is the shortest poll interval the listing fits;
	// FitBudgetPerMinute the smallest MEETWATCH_API_RATE that fits it
	// into the current interval, absent when no budget would (the pages
	// alone take too long); FitPollTimeoutSeconds, when the poll timeout
	// was set, the one it needs. Each is absent while the listing fits.
	FitIntervalSeconds    float64 `json:"fit_interval_seconds,omitempty"`
	FitBudgetPerMinute    int     `json:"fit_budget_per_minute,omitempty"`
	FitPollTimeoutSeconds float64 `json:"fit_poll_timeout_seconds,omitempty"`
	// Verdict is the sizing line of the report.
	Verdict string `json:"verdict"`
}

// sizeListing works out the sizing verdict.
//
// A full listing's requests are its first page and the pages after it,
// each overlapping the one before (meetingapi.Client.ListingRequests).
// The pages take at least the first page's latency, then that latency for
// each round of concurrency pages after it. The budget allows the requests
// in (requests - burst) / rate when it starts full, which it does at every
// poll as long as it refills a listing's requests within an interval; when
// it does not, every poll waits for all of them, and polls run back to
// back, which is what run warns of. The listing fits when the budget
// refills within the interval, and the pages within MEETWATCH_POLL_TIMEOUT:
// a poll's deadline stretches past it only while pages keep to twice the
// first page's pace, so fitting it leaves room for an API that slows down.
func sizeListing(in sizingInput) sizingReport {
	n := in.requests
	rounds := 1 + ceilDiv(n-1, in.concurrency)
	pages := time.Duration(rounds) * in.latency
	r := sizingReport{
		Meetings: in.meetings, PageSize: in.limit, PageOverlap: in.overlap, Requests: n,
		Concurrency: in.concurrency, PageLatencySeconds: in.latency.Seconds(), BudgetPerMinute: in.apiRate,
		PagesSeconds: pages.Seconds(), IntervalSeconds: in.interval.Seconds(), PollTimeoutSeconds: in.pollTimeout.Seconds(),
	}
	var budget, refill time.Duration // refill: how long the budget takes to allow n requests from empty
	if in.budget != nil {
		perSecond := float64(in.budget.Limit())
		refill = seconds(float64(n) / perSecond)
		perInterval := perSecond * in.interval.Seconds()
		r.BudgetPerInterval = &perInterval
		budget = refill
		if refill <= in.interval {
			budget = seconds(float64(max(n-in.budget.Burst(), 0)) / perSecond)
		}
	}
	listing := max(budget, pages)
	r.BudgetSeconds, r.ListingSeconds = budget.Seconds(), listing.Seconds()

	head := fmt.Sprintf("%d meeting%s in pages of %d (overlap %d): a full listing takes %d request%s and at least %s",
		in.meetings, plural(in.meetings), in.limit, in.overlap, n, plural(n), approx(listing))
	budgetBound := refill > in.interval
	pagesBound := pages > in.pollTimeout || pages > in.interval
	r.Fits = !budgetBound && !pagesBound
	if r.Fits {
		r.Verdict = fmt.Sprintf("%s; every %s fits", head, shortDuration(in.interval))
		if in.budget != nil {
			r.Verdict += fmt.Sprintf(": the budget allows %s requests an interval", requestCount(*r.BudgetPerInterval))
		}
		return r
	}

	// The interval that fits: the budget refills within it, and the pages
	// fit the deadline (90% of the interval, unless set).
	fit := refill
	if in.timeoutSet {
		fit = max(fit, pages)
		if pages > in.pollTimeout {
			r.FitPollTimeoutSeconds = ceilSecond(pages).Seconds()
		}
	} else {
		fit = max(fit, pages*10/9)
	}
	fit = ceilSecond(fit)
	r.FitIntervalSeconds = fit.Seconds()
	if !pagesBound {
		r.FitBudgetPerMinute = budgetFor(n, in.interval, in.concurrency)
	}

	var why string
	switch {
	case budgetBound:
		why = fmt.Sprintf("%s=%s is too short for the budget, which allows %s requests an interval", varName("PollInterval"), shortDuration(in.interval), requestCount(*r.BudgetPerInterval))
	case pages > in.interval:
		why = fmt.Sprintf("%s=%s is too short for the pages alone, %s at %s each, %d at a time",
			varName("PollInterval"), shortDuration(in.interval), approx(pages), approx(in.latency), in.concurrency)
	case in.timeoutSet:
		why = fmt.Sprintf("a poll's deadline, %s=%s, is too short for the pages alone, %s at %s each, %d at a time",
			varName("PollTimeout"), shortDuration(in.pollTimeout), approx(pages), approx(in.latency), in.concurrency)
	default:
		why = fmt.Sprintf("a poll's deadline, %s (90%% of %s), is too short for the pages alone, %s at %s each, %d at a time",
			approx(in.pollTimeout), varName("PollInterval"), approx(pages), approx(in.latency), in.concurrency)
	}
	// The interval is named only where it is part of the trouble: a
	// deadline that was set too short is mended on its own.
	var fix []string
	if budgetBound || pages > in.interval || !in.timeoutSet {
		fix = append(fix, fmt.Sprintf("%s=%s", varName("PollInterval"), shortDuration(fit)))
	}
	if r.FitPollTimeoutSeconds > 0 {
		fix = append(fix, fmt.Sprintf("%s=%s", varName("PollTimeout"), shortDuration(ceilSecond(pages))))
	}
	fixes := "set " + strings.Join(fix, " and ")
	switch {
	case r.FitBudgetPerMinute > 0:
		fixes += fmt.Sprintf(", or %s=%d", varName("APIRate"), r.FitBudgetPerMinute)
	case !budgetBound:
		fixes += fmt.Sprintf(", or raise %s", varName("PageConcurrency"))
	}
	r.Verdict = fmt.Sprintf("%s; %s: %s", head, why, fixes)
	return r
}

// requestCount prints a number of requests that the budget allows in an
// interval: whole ones, or to a tenth below ten.
func requestCount(n float64) string {
	if n >= 10 {
		return strconv.Itoa(int(n))
	}
	return strconv.FormatFloat(math.Floor(n*10)/10, 'f', -1, 64)
}

// budgetFor returns the smallest MEETWATCH_API_RATE whose budget allows n
// requests in every interval, in the long run.
func budgetFor(n int, interval time.Duration, burst int) int {
	perMinute := max(1, int(float64(n)*time.Minute.Seconds()/interval.Seconds()))
	for float64(meetingapi.NewBudget(perMinute, burst).Limit())*interval.Seconds() < float64(n) {
		perMinute++
	}
	return perMinute
}

func ceilDiv(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// ceilSecond rounds d up to a whole second.
func ceilSecond(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}
