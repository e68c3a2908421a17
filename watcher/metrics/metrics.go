// Package metrics exports what meetwatch does in the Prometheus text
// format, so that an operator sees the polls, the API's answers, the
// events, the lease and the pending ends without reading logs.
//
// The engine and its adapters know nothing of Prometheus: they report
// through small hooks (watcher.Observer, publish.Config.Stored, an
// http.RoundTripper) that a Metrics fills. No label carries a meeting, a
// user or a subject: every series is bounded.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// Metrics holds meetwatch's metrics, in a registry of their own.
type Metrics struct {
	reg *prometheus.Registry

	meetings    prometheus.Gauge
	published   *prometheus.CounterVec
	polls       *prometheus.CounterVec
	pollTime    prometheus.Histogram
	lastPoll    prometheus.Gauge
	pendingEnds prometheus.Gauge
	requests    *prometheus.CounterVec
	requestTime *prometheus.HistogramVec
}

// Sources are the readings taken at each scrape rather than pushed: each
// may be nil, and then reads as 0.
type Sources struct {
	// Leader tells whether this replica leads now.
	Leader func() bool
	// Connected tells whether the NATS connection is up.
	Connected func() bool
	// TokenExpiry is when the API access token expires; zero when
	// unknown (a token given in the configuration).
	TokenExpiry func() time.Time
}

var _ watcher.Observer = (*Metrics)(nil)

// New returns the metrics, with the Go runtime's and the process's.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		meetings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meetwatch_meetings_online",
			Help: "Meetings in the last committed snapshot.",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_events_published_total",
			Help: "Events stored in the stream by this process, by type (a re-published duplicate is not counted).",
		}, []string{"type"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_polls_total",
			Help: "Polls by result: ok (committed) or error (not committed; events published before the failure go out again, under the same ids, with the next poll).",
		}, []string{"result"}),
		pollTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meetwatch_poll_duration_seconds",
			Help:    "Time of a poll, from the first request to the commit.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		lastPoll: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meetwatch_last_successful_poll_timestamp_seconds",
			Help: "When the last committed poll ended, in seconds since the epoch.",
		}),
		pendingEnds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meetwatch_pending_ends",
			Help: "Meetings missing from the last listing whose ended event is not yet published.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meetwatch_api_requests_total",
			Help: "Requests to the meeting API, by endpoint and HTTP status code (\"error\" when no answer came).",
		}, []string{"endpoint", "code"}),
		requestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meetwatch_api_request_duration_seconds",
			Help:    "Time of a request to the meeting API, until its headers came.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
	}
	for _, k := range []events.Kind{snapshot.Started, snapshot.Ended, snapshot.Changed} {
		m.published.WithLabelValues(string(k)) // every type shows, at 0, from the start
	}
	m.polls.WithLabelValues("ok")
	m.polls.WithLabelValues("error")
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
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meetwatch_token_expiry_timestamp_seconds",
			Help: "When the API access token expires, in seconds since the epoch; 0 when unknown (a configured token).",
		}, func() float64 {
			if src.TokenExpiry == nil {
				return 0
			}
			return seconds(src.TokenExpiry())
		}),
	)
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is where the metrics are registered, for tests and for
// collectors of the embedding program.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Polled records a poll: its duration and result, and, when it committed,
// the meetings online, the pending ends and when.
func (m *Metrics) Polled(res watcher.PollResult, took time.Duration, err error) {
	m.pollTime.Observe(took.Seconds())
	if err != nil {
		m.polls.WithLabelValues("error").Inc()
		return
	}
	m.polls.WithLabelValues("ok").Inc()
	m.meetings.Set(float64(res.Meetings))
	m.pendingEnds.Set(float64(res.PendingEnds))
	m.lastPoll.Set(seconds(time.Now()))
}

// Stored counts an event the stream stored; set it as
// publish.Config.Stored.
func (m *Metrics) Stored(kind events.Kind) {
	m.published.WithLabelValues(string(kind)).Inc()
}

// Transport returns next, counting and timing each request by endpoint:
// the path of a request the API knows (see endpoints), "other" for any
// other, so that no label ever holds a meeting's id.
func (m *Metrics) Transport(next http.RoundTripper, endpoints ...string) http.RoundTripper {
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
		m.requestTime.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		m.requests.WithLabelValues(endpoint, code).Inc()
		return resp, err
	})
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
