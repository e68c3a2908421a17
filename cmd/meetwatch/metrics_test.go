package main

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// scrape reads a process's /metrics, served beside its probes, and parses
// it as Prometheus does.
func scrape(tb testing.TB, p *process) map[string]*dto.MetricFamily {
	tb.Helper()
	m := probesAddr.FindStringSubmatch(p.stderr.String())
	require.NotNil(tb, m, "no probe address logged")
	resp, err := http.Get("http://" + m[1] + "/metrics")
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(tb, err)
	return families
}

// value returns the value of the series of family name whose labels are
// labels (name, value pairs), and false when there is none.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue series
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsAgreeWithTheStream runs the leader and a standby, starts, ends
// and changes meetings, and checks that /metrics says what the stream and
// the API saw: the events stored by type, the meetings online, the polls,
// the requests, the lease and the connection. The standby serves
// /metrics too.
func TestMetricsAgreeWithTheStream(t *testing.T) {
	t.Parallel()
	const token = "metrics-token"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	api := startAPI(t, token, 20)
	leader := startMeetwatch(t, haEnv(api.URL, token, srv.ClientURL(), "a", 2*time.Second), "run")
	waitForMessages(t, nc, "MEETINGS", 20)
	standby := startMeetwatch(t, haEnv(api.URL, token, srv.ClientURL(), "b", 2*time.Second), "run")

	ids := api.Sim.UUIDs()
	for _, id := range ids[:3] {
		api.Sim.End(id)
	}
	for _, id := range ids[3:5] {
		api.Sim.Update(id, func(rec apisim.Record) { rec["subject"] = "renamed " + id })
	}
	api.Sim.AddN(4)
	waitForMessages(t, nc, "MEETINGS", 20+3+2+4)

	byType := map[string]int{}
	for _, m := range storedMessages(t, nc, "MEETINGS") {
		byType[m.Event.kind()]++
	}
	require.Equal(t, map[string]int{"started": 24, "ended": 3, "changed": 2}, byType)

	var families map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		families = scrape(t, leader)
		online, _ := value(families, "meetwatch_meetings_online")
		return online == 21
	}, eventWait, tick, "waiting for the metrics to see the last poll")
	for kind, n := range byType {
		got, ok := value(families, "meetwatch_events_published_total", "type", kind)
		assert.True(t, ok, "no series for %s", kind)
		assert.Equal(t, float64(n), got, "%s events published", kind)
	}
	ok, _ := value(families, "meetwatch_polls_total", "result", "ok")
	assert.GreaterOrEqual(t, ok, 2.0, "polls committed: the first, and the one that saw the churn")
	polls, _ := value(families, "meetwatch_poll_duration_seconds")
	assert.GreaterOrEqual(t, polls, ok, "every poll is timed")
	last, _ := value(families, "meetwatch_last_successful_poll_timestamp_seconds")
	assert.InDelta(t, float64(time.Now().Unix()), last, 30)
	requests, _ := value(families, "meetwatch_api_requests_total", "endpoint", meetingapi.OnlinePath, "code", "200")
	assert.Positive(t, requests)
	assert.LessOrEqual(t, requests, float64(api.Sim.Requests()), "no more requests counted than the API answered")
	timed, _ := value(families, "meetwatch_api_request_duration_seconds", "endpoint", meetingapi.OnlinePath)
	assert.GreaterOrEqual(t, timed, requests)
	pending, hasPending := value(families, "meetwatch_pending_ends")
	assert.True(t, hasPending)
	assert.Zero(t, pending)
	expiry, _ := value(families, "meetwatch_token_expiry_timestamp_seconds")
	assert.Zero(t, expiry, "a configured token has no known expiry")
	for name, want := range map[string]float64{"meetwatch_leader": 1, "meetwatch_nats_connected": 1} {
		got, _ := value(families, name)
		assert.Equal(t, want, got, name)
	}
	_, hasBuild := value(families, "meetwatch_build_info")
	assert.True(t, hasBuild)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, id := range ids {
					assert.NotContains(t, l.GetValue(), id, "%s carries a meeting in a label", f.GetName())
				}
			}
		}
	}

	standbyFamilies := scrape(t, standby)
	lead, _ := value(standbyFamilies, "meetwatch_leader")
	assert.Zero(t, lead, "the standby does not lead")
	published, _ := value(standbyFamilies, "meetwatch_events_published_total", "type", "started")
	assert.Zero(t, published, "the standby published nothing")

	leader.stop(t, syscall.SIGTERM)
	standby.stop(t, syscall.SIGTERM)
	t.Logf("metrics: %s", fmt.Sprint(byType))
}
