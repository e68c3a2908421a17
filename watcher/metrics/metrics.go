// Package metrics exports what meetwatch does in the Prometheus text
// format, so that an operator sees the polls, the API's answers, the
// events, the lease and the pending ends without reading logs.
//
// The engine and its adapters know nothing of Prometheus: they report
// through small hooks (watcher.Observer, publish.Config.Stored, an
// http.RoundTripper) that a Metrics fills. No label carries a meeting, a
// user or a subject: every series is bounded. With an accounts file, the
// series of one account's work carry its name, one of the file's.
package metrics

import (
	"maps"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// Metrics holds meetwatch's metrics, in a registry of their own.
//
// With one account (the MEETWATCH_* login), the metrics of the watcher's
// work have no account label, and Metrics records them itself (Polled,
// Stored, Transport). With an accounts file (Sources.Accounts set), each
// of those carries an account label, and each account records its own
// through Account.
type Metrics struct {
	reg *prometheus.Registry

	meetings    *prometheus.GaugeVec
	published   *prometheus.CounterVec
	polls       *prometheus.CounterVec
	pollTime    *prometheus.HistogramVec
	lastPoll    *prometheus.GaugeVec
	pendingEnds *prometheus.GaugeVec
	requests    *prometheus.CounterVec
	requestTime *prometheus.HistogramVec

	// one records the series without an account label; nil with an
	// accounts file.
	one *Account
	// tokens and reload are the accounts' token expiries and the last
	// reload's outcome; nil without an accounts file.
	tokens *tokenExpiries
	reload prometheus.Gauge
}

// Sources are the readings taken at each scrape rather than pushed: each
// may be nil, and then reads as 0.
type Sources struct {
	// Leader tells whether this replica leads now (with an accounts file:
	// leads one unit at least).
	Leader func() bool
	// Connected tells whether the NATS connection is up.
	Connected func() bool
	// TokenExpiry is when the API access token expires; zero when
	// unknown (a token given in the configuration). Not read with an
	// accounts file: each account's is given to Account.
	TokenExpiry func() time.Time
	// Accounts, when set, says that the process polls the accounts of an
	// accounts file, and how many it polls now
	// (meetwatch_accounts_held): the metrics of one account's work then
	// carry an account label, and meetwatch_config_reload_success says
	// whether the file last read was good.
	Accounts func() int
}

var (
	_ watcher.Observer = (*Metrics)(nil)
	_ watcher.Observer = (*Account)(nil)
)

// New returns the metrics, with the Go runtime's and the process's.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	var account []string // the label of an account's series, with an accounts file
	if src.Accounts != nil {
		account = []string{"account"}
	}
	labels := func(names ...string) []string { return append(slices.Clone(account), names...) }
	m := &Metrics{
		reg: reg,
		meetings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meetwatch_meetings_online",
			Help: "Meetings in the last committed snapshot.",
		}, labels()),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_events_published_total",
			Help: "Events stored in the stream by this process, by type (a re-published duplicate is not counted).",
		}, labels("type")),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_polls_total",
			Help: "Polls by result: ok (committed) or error (not committed; events published before the failure go out again, under the same ids, with the next poll).",
		}, labels("result")),
		pollTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meetwatch_poll_duration_seconds",
			Help:    "Time of a poll, from the first request to the commit.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, labels()),
		lastPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meetwatch_last_successful_poll_timestamp_seconds",
			Help: "When the last committed poll ended, in seconds since the epoch.",
		}, labels()),
		pendingEnds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meetwatch_pending_ends",
			Help: "Meetings missing from the last listing whose ended event is not yet published.",
		}, labels()),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_api_requests_total",
			Help: "Requests to the meeting API, by endpoint and HTTP status code (\"error\" when no answer came).",
		}, labels("endpoint", "code")),
		requestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meetwatch_api_request_duration_seconds",
			Help:    "Time of a request to the meeting API, until its headers came.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, labels("endpoint")),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meetwatch_build_info",
		Help: "Always 1; the labels say which build runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version(), runtime.Version()).Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.meetings, m.published, m.polls, m.pollTime, m.lastPoll, m.pendingEnds, m.requests, m.requestTime,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meetwatch_leader",
			Help: "1 while this replica leads, else 0.",
		}, flag(src.Leader)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meetwatch_nats_connected",
			Help: "1 while the NATS connection is up, else 0.",
		}, flag(src.Connected)),
	)
	tokenHelp := "When the API access token expires, in seconds since the epoch; 0 when unknown (a configured token)."
	if src.Accounts == nil {
		m.one = m.account(nil)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meetwatch_token_expiry_timestamp_seconds",
			Help: tokenHelp,
		}, func() float64 {
			if src.TokenExpiry == nil {
				return 0
			}
			return seconds(src.TokenExpiry())
		}))
		return m
	}
	m.tokens = &tokenExpiries{
		desc: prometheus.NewDesc("meetwatch_token_expiry_timestamp_seconds", tokenHelp, []string{"account"}, nil),
		by:   map[string]func() time.Time{},
	}
	m.reload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meetwatch_config_reload_success",
		Help: "1 when the last reading of the accounts file (at start, or on SIGHUP) succeeded, 0 when it failed and the accounts read before it run on.",
	})
	m.reload.Set(1)
	reg.MustRegister(m.tokens, m.reload, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meetwatch_accounts_held",
		Help: "Accounts of the accounts file this replica polls now.",
	}, func() float64 { return float64(src.Accounts()) }))
	return m
}

// Account records the work of one account, for a process that polls the
// accounts of an accounts file: every series it writes carries
// account=<name>. Call Forget when this process stops polling the
// account.
func (m *Metrics) Account(name string) *Account {
	a := m.account(prometheus.Labels{"account": name})
	a.name = name
	return a
}

// SetTokenExpiry gives the account's meetwatch_token_expiry_timestamp_seconds,
// read at each scrape: when its access token expires, zero when unknown.
// It is apart from Account because the token source takes the account's
// Transport.
func (a *Account) SetTokenExpiry(expiry func() time.Time) {
	if a.name != "" {
		a.m.tokens.set(a.name, expiry)
	}
}

// account returns the recorder of the series with labels, each created
// at once, so that every series shows from the start.
func (m *Metrics) account(labels prometheus.Labels) *Account {
	a := &Account{
		m:           m,
		meetings:    m.meetings.With(labels),
		published:   m.published.MustCurryWith(labels),
		polls:       m.polls.MustCurryWith(labels),
		pollTime:    m.pollTime.With(labels),
		lastPoll:    m.lastPoll.With(labels),
		pendingEnds: m.pendingEnds.With(labels),
		requests:    m.requests.MustCurryWith(labels),
		requestTime: m.requestTime.MustCurryWith(labels),
	}
	for _, k := range []events.Kind{snapshot.Started, snapshot.Ended, snapshot.Changed} {
		a.published.WithLabelValues(string(k)) // every type shows, at 0, from the start
	}
	a.polls.WithLabelValues("ok")
	a.polls.WithLabelValues("error")
	return a
}

// Reloaded records whether a reading of the accounts file succeeded, as
// meetwatch_config_reload_success; a no-op without an accounts file.
func (m *Metrics) Reloaded(ok bool) {
	if m.reload == nil {
		return
	}
	if ok {
		m.reload.Set(1)
	} else {
		m.reload.Set(0)
	}
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is where the metrics are registered, for tests and for
// collectors of the embedding program.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Polled records a poll of the one account, as Account.Polled does.
func (m *Metrics) Polled(res watcher.PollResult, took time.Duration, err error) {
	m.one.Polled(res, took, err)
}

// Stored counts an event of the one account the stream stored; set it as
// publish.Config.Stored.
func (m *Metrics) Stored(kind events.Kind) { m.one.Stored(kind) }

// Transport returns next, counting and timing each request of the one
// account, as Account.Transport does.
func (m *Metrics) Transport(next http.RoundTripper, endpoints ...string) http.RoundTripper {
	return m.one.Transport(next, endpoints...)
}

// Account records what one account's watcher does: the series of Metrics
// with the account's label, or, for a process of one account, without
// one.
type Account struct {
	m    *Metrics
	name string // empty for the one account

	meetings    prometheus.Gauge
	published   *prometheus.CounterVec
	polls       *prometheus.CounterVec
	pollTime    prometheus.Observer
	lastPoll    prometheus.Gauge
	pendingEnds prometheus.Gauge
	requests    *prometheus.CounterVec
	requestTime prometheus.ObserverVec
}

// Polled records a poll: its duration and result, and, when it committed,
// the meetings online, the pending ends and when.
func (a *Account) Polled(res watcher.PollResult, took time.Duration, err error) {
	a.pollTime.Observe(took.Seconds())
	if err != nil {
		a.polls.WithLabelValues("error").Inc()
		return
	}
	a.polls.WithLabelValues("ok").Inc()
	a.meetings.Set(float64(res.Meetings))
	a.pendingEnds.Set(float64(res.PendingEnds))
	a.lastPoll.Set(seconds(time.Now()))
}

// Stored counts an event the stream stored; set it as
// publish.Config.Stored.
func (a *Account) Stored(kind events.Kind) {
	a.published.WithLabelValues(string(kind)).Inc()
}

// Forget removes the account's gauges (the meetings online, the pending
// ends, the last poll, the token's expiry), once this process no longer
// polls it: the replica that polls it now reports them, and a gauge left
// here would go stale beside its. Its counters and histograms stay, as
// counters do.
func (a *Account) Forget() {
	if a.name == "" {
		return
	}
	labels := prometheus.Labels{"account": a.name}
	a.m.meetings.Delete(labels)
	a.m.pendingEnds.Delete(labels)
	a.m.lastPoll.Delete(labels)
	a.m.tokens.set(a.name, nil)
}

// Transport returns next, counting and timing each request by endpoint:
// the path of a request the API knows (see endpoints), "other" for any
// other, so that no label ever holds a meeting's id.
func (a *Account) Transport(next http.RoundTripper, endpoints ...string) http.RoundTripper {
	known := make(map[string]bool, len(endpoints))
	for _, e := range endpoints {
		known[e] = true
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		endpoint := r.URL.Path
		if !known[endpoint] {
			endpoint = "other"
		}
		start := time.Now()
		resp, err := next.RoundTrip(r)
		a.requestTime.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		a.requests.WithLabelValues(endpoint, code).Inc()
		return resp, err
	})
}

// tokenExpiries is meetwatch_token_expiry_timestamp_seconds of many
// accounts, each read at the scrape from the account's token source.
type tokenExpiries struct {
	desc *prometheus.Desc

	mu sync.Mutex
	by map[string]func() time.Time
}

// set gives the expiry of account's token; nil removes the account.
func (t *tokenExpiries) set(account string, expiry func() time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if expiry == nil {
		delete(t.by, account)
		return
	}
	t.by[account] = expiry
}

func (t *tokenExpiries) Describe(ch chan<- *prometheus.Desc) { ch <- t.desc }

func (t *tokenExpiries) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	by := maps.Clone(t.by)
	t.mu.Unlock()
	for account, expiry := range by {
		ch <- prometheus.MustNewConstMetric(t.desc, prometheus.GaugeValue, seconds(expiry()), account)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func flag(f func() bool) func() float64 {
	return func() float64 {
		if f != nil && f() {
			return 1
		}
		return 0
	}
}

func seconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// version is the main module's version as the go command stamped it:
// a tag for a released build, "(devel)" or a pseudo-version otherwise.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
