package deploy_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/metrics"
)

// exported returns the series names meetwatch's /metrics serves (with a
// histogram's _bucket, _sum and _count), each with its label names, once
// every metric has been given a value.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := metrics.New(metrics.Sources{})
	m.Polled(watcher.PollResult{Meetings: 1}, time.Second, nil)
	m.Stored(snapshot.Started)
	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	hc := &http.Client{Transport: m.Transport(http.DefaultTransport, "/")}
	resp, err := hc.Get(api.URL)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	families, err := m.Registry().Gather()
	require.NoError(t, err)
	out := map[string]map[string]bool{}
	for _, f := range families {
		labels := map[string]bool{}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		names := []string{f.GetName()}
		if f.GetType().String() == "HISTOGRAM" {
			names = append(names, f.GetName()+"_bucket", f.GetName()+"_sum", f.GetName()+"_count")
			labels["le"] = true
		}
		for _, n := range names {
			out[n] = labels
		}
	}
	return out
}

// checkExpr parses expr as Prometheus does and checks that every series it
// selects is one meetwatch exports, with labels it has (job and instance
// are the scrape's own).
func checkExpr(t *testing.T, where, expr string, series map[string]map[string]bool) {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	require.NoError(t, err, "%s: %s", where, expr)
	selectors := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		selectors++
		labels, known := series[vs.Name]
		if !assert.True(t, known, "%s names %q, which meetwatch does not export", where, vs.Name) {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			switch m.Name {
			case "__name__", "job", "instance":
			default:
				assert.True(t, labels[m.Name], "%s matches label %q, which %s has not", where, m.Name, vs.Name)
			}
		}
		return nil
	})
	assert.Positive(t, selectors, "%s selects no series", where)
}

// TestAlertRulesNameExportedMetrics parses every rule of the alerts file
// with the Prometheus parser, checks each metric it names is exported, and
// that the alerts operators need are there.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	series := exported(t)
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &file))
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			checkExpr(t, r.Alert, r.Expr, series)
			_, err := time.ParseDuration(r.For)
			assert.NoError(t, err, "%s: for", r.Alert)
			assert.NotEmpty(t, r.Labels["severity"], "%s: severity", r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
		}
	}
	for _, want := range []string{"MeetwatchPollsStale", "MeetwatchNoLeader", "MeetwatchPendingEndsGrowing", "MeetwatchAPIErrors", "MeetwatchTokenExpiring"} {
		assert.True(t, alerts[want], "no %s alert", want)
	}
}

// TestDashboardNamesExportedMetrics checks every query of the Grafana
// dashboard the same way, with Grafana's variables given values.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	series := exported(t)
	raw, err := os.ReadFile("grafana/meetwatch.json")
	require.NoError(t, err)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	assert.Equal(t, "meetwatch", dash.UID)
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			expr := grafanaVars.Replace(tg.Expr)
			checkExpr(t, p.Title, expr, series)
		}
	}
}

var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$job", ".*")
