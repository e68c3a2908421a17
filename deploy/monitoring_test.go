package deploy_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
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
// every metric has been given a value, as one account runs.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := metrics.New(metrics.Sources{})
	m.Polled(watcher.PollResult{Meetings: 1}, time.Second, nil)
	m.Stored(snapshot.Started)
	return gathered(t, m, m.Transport(http.DefaultTransport, "/"))
}

// withAccounts returns the series meetwatch serves with an accounts file,
// as exported does: an account's work under its name.
func withAccounts(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := metrics.New(metrics.Sources{Accounts: func() int { return 1 }})
	m.Reloaded(true)
	a := m.Account("acme")
	a.SetTokenExpiry(time.Now)
	a.Polled(watcher.PollResult{Meetings: 1}, time.Second, nil)
	a.Stored(snapshot.Started)
	return gathered(t, m, a.Transport(http.DefaultTransport, "/"))
}

// gathered sends a request through transport and returns what m serves.
func gathered(t *testing.T, m *metrics.Metrics, transport http.RoundTripper) map[string]map[string]bool {
	t.Helper()
	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	resp, err := (&http.Client{Transport: transport}).Get(api.URL)
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

// perAccount are the metrics of one account's work: with an accounts file,
// each of their series carries the label account, the account's name.
var perAccount = []string{
	"meetwatch_polls_total",
	"meetwatch_meetings_online",
	"meetwatch_events_published_total",
	"meetwatch_last_successful_poll_timestamp_seconds",
	"meetwatch_pending_ends",
	"meetwatch_api_requests_total",
	"meetwatch_poll_duration_seconds",
	"meetwatch_api_request_duration_seconds",
	"meetwatch_token_expiry_timestamp_seconds",
}

// withAccountsFile are the metrics a replica exports only with an accounts
// file, of the replica as a whole: the accounts it polls, and whether its
// last read of the file succeeded.
var withAccountsFile = []string{"meetwatch_accounts_held", "meetwatch_config_reload_success"}

// TestAccountsLabelTheirWork checks the lists the dashboard and alerts
// tests rely on against what meetwatch serves: with an accounts file, the
// series of perAccount, and only they, carry the label account, and
// withAccountsFile are served; without one, neither is.
func TestAccountsLabelTheirWork(t *testing.T) {
	one, many := exported(t), withAccounts(t)
	for name, labels := range many {
		assert.Equal(t, isPerAccount(name), labels["account"], "%s with an accounts file", name)
	}
	for name, labels := range one {
		assert.False(t, labels["account"], "%s without an accounts file", name)
	}
	for _, name := range withAccountsFile {
		assert.Contains(t, many, name)
		assert.NotContains(t, one, name)
	}
}

// isPerAccount tells whether a series name is of one account's work.
func isPerAccount(name string) bool {
	for _, base := range perAccount {
		if name == base || name == base+"_bucket" || name == base+"_sum" || name == base+"_count" {
			return true
		}
	}
	return false
}

// alertRule is one rule of the alerts file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// loadAlerts returns the rules of the alerts file, by name.
func loadAlerts(t *testing.T) map[string]alertRule {
	t.Helper()
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &file))
	rules := map[string]alertRule{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			require.NotContains(t, rules, r.Alert, "two alerts %s", r.Alert)
			rules[r.Alert] = r
		}
	}
	return rules
}

// TestAlertRulesNameExportedMetrics parses every rule of the alerts file
// with the Prometheus parser, checks each metric it names is exported (with
// an accounts file or without), and that the alerts operators need are
// there.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	series := withAccounts(t)
	rules := loadAlerts(t)
	for _, r := range rules {
		checkExpr(t, r.Alert, r.Expr, series)
		_, err := time.ParseDuration(r.For)
		assert.NoError(t, err, "%s: for", r.Alert)
		assert.NotEmpty(t, r.Labels["severity"], "%s: severity", r.Alert)
		assert.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
	}
	for _, want := range []string{"MeetwatchPollsStale", "MeetwatchNoLeader", "MeetwatchPendingEndsGrowing", "MeetwatchAPIErrors", "MeetwatchTokenExpiring", "MeetwatchConfigReloadFailed"} {
		_, ok := rules[want]
		assert.True(t, ok, "no %s alert", want)
	}
}

// The two replicas of the evaluated cases, as their scrapes' instance.
const (
	replicaA = "10.0.0.1:9464"
	replicaB = "10.0.0.2:9464"
)

// TestAlertsFirePerAccount evaluates the alerts with the Prometheus engine
// over the series of a deployment with an accounts file (two replicas,
// accounts acme and globex, the label account) and of one without (two
// replicas, no label): each alert about an account's work fires for the
// account in trouble only, naming it, and fires just the same without the
// label. An alert's `for` is not played: the series hold their state long
// enough for it.
func TestAlertsFirePerAccount(t *testing.T) {
	rules := loadAlerts(t)
	job := map[string]string{"job": "meetwatch"}
	jobAccount := func(a string) map[string]string { return map[string]string{"job": "meetwatch", "account": a} }
	tests := []struct {
		name   string
		alert  string
		series []fakeSeries
		want   []map[string]string
	}{
		{
			name:  "accounts: acme's last poll is 20 minutes old, globex's is fresh",
			alert: "MeetwatchPollsStale",
			series: []fakeSeries{
				series("meetwatch_last_successful_poll_timestamp_seconds", at(-20*time.Minute), "instance", replicaA, "account", "acme"),
				series("meetwatch_last_successful_poll_timestamp_seconds", at(-10*time.Second), "instance", replicaB, "account", "globex"),
				// globex's former replica still shows its last poll there.
				series("meetwatch_last_successful_poll_timestamp_seconds", at(-time.Hour), "instance", replicaA, "account", "globex"),
			},
			want: []map[string]string{jobAccount("acme")},
		},
		{
			name:  "one account: the leader's last poll is 20 minutes old, the standby never polled",
			alert: "MeetwatchPollsStale",
			series: []fakeSeries{
				series("meetwatch_last_successful_poll_timestamp_seconds", at(-20*time.Minute), "instance", replicaA),
				series("meetwatch_last_successful_poll_timestamp_seconds", constant(0), "instance", replicaB),
			},
			want: []map[string]string{job},
		},
		{
			name:  "accounts: every poll of acme fails, globex's succeed",
			alert: "MeetwatchPollsFailing",
			series: []fakeSeries{
				series("meetwatch_polls_total", counter(1.0/15), "instance", replicaA, "account", "acme", "result", "error"),
				series("meetwatch_polls_total", constant(40), "instance", replicaA, "account", "acme", "result", "ok"),
				series("meetwatch_polls_total", constant(2), "instance", replicaB, "account", "globex", "result", "error"),
				series("meetwatch_polls_total", counter(1.0/15), "instance", replicaB, "account", "globex", "result", "ok"),
			},
			want: []map[string]string{jobAccount("acme")},
		},
		{
			name:  "one account: every poll of the leader fails",
			alert: "MeetwatchPollsFailing",
			series: []fakeSeries{
				series("meetwatch_polls_total", counter(1.0/15), "instance", replicaA, "result", "error"),
				series("meetwatch_polls_total", constant(40), "instance", replicaA, "result", "ok"),
				series("meetwatch_polls_total", constant(0), "instance", replicaB, "result", "error"),
				series("meetwatch_polls_total", constant(0), "instance", replicaB, "result", "ok"),
			},
			want: []map[string]string{job},
		},
		{
			name:  "accounts: acme's pending ends grow, globex's stay at 5",
			alert: "MeetwatchPendingEndsGrowing",
			series: []fakeSeries{
				series("meetwatch_pending_ends", rising(1, 0.5), "instance", replicaA, "account", "acme"),
				series("meetwatch_pending_ends", constant(5), "instance", replicaB, "account", "globex"),
			},
			want: []map[string]string{jobAccount("acme")},
		},
		{
			name:  "one account: the leader's pending ends grow, the standby shows 0",
			alert: "MeetwatchPendingEndsGrowing",
			series: []fakeSeries{
				series("meetwatch_pending_ends", rising(1, 0.5), "instance", replicaA),
				series("meetwatch_pending_ends", constant(0), "instance", replicaB),
			},
			want: []map[string]string{job},
		},
		{
			name:  "accounts: half of acme's requests fail, 1% of globex's",
			alert: "MeetwatchAPIErrors",
			series: []fakeSeries{
				series("meetwatch_api_requests_total", counter(1), "instance", replicaA, "account", "acme", "endpoint", "/v1/mmc/management/conferences/online", "code", "200"),
				series("meetwatch_api_requests_total", counter(1), "instance", replicaA, "account", "acme", "endpoint", "/v1/mmc/management/conferences/online", "code", "500"),
				series("meetwatch_api_requests_total", counter(1), "instance", replicaB, "account", "globex", "endpoint", "/v1/mmc/management/conferences/online", "code", "200"),
				series("meetwatch_api_requests_total", counter(0.01), "instance", replicaB, "account", "globex", "endpoint", "/v1/mmc/management/conferences/online", "code", "429"),
			},
			want: []map[string]string{jobAccount("acme")},
		},
		{
			name:  "one account: half of the leader's requests fail",
			alert: "MeetwatchAPIErrors",
			series: []fakeSeries{
				series("meetwatch_api_requests_total", counter(1), "instance", replicaA, "endpoint", "/v1/mmc/management/conferences/online", "code", "200"),
				series("meetwatch_api_requests_total", counter(1), "instance", replicaA, "endpoint", "/v1/mmc/management/conferences/online", "code", "500"),
			},
			want: []map[string]string{job},
		},
		{
			name:  "accounts: acme's token expires in 5 minutes; globex's former replica holds an expired one, its replica a fresh one; initech's is configured",
			alert: "MeetwatchTokenExpiring",
			series: []fakeSeries{
				series("meetwatch_token_expiry_timestamp_seconds", at(5*time.Minute), "instance", replicaA, "account", "acme"),
				series("meetwatch_token_expiry_timestamp_seconds", at(2*time.Hour), "instance", replicaB, "account", "globex"),
				series("meetwatch_token_expiry_timestamp_seconds", at(-3*time.Hour), "instance", replicaA, "account", "globex"),
				series("meetwatch_token_expiry_timestamp_seconds", constant(0), "instance", replicaB, "account", "initech"),
			},
			want: []map[string]string{jobAccount("acme")},
		},
		{
			name:  "one account: the leader's token expires in 5 minutes, the standby never logged in",
			alert: "MeetwatchTokenExpiring",
			series: []fakeSeries{
				series("meetwatch_token_expiry_timestamp_seconds", at(5*time.Minute), "instance", replicaA),
				series("meetwatch_token_expiry_timestamp_seconds", constant(0), "instance", replicaB),
			},
			want: []map[string]string{job},
		},
		{
			name:  "one account: a former leader holds an expired token, the leader a fresh one",
			alert: "MeetwatchTokenExpiring",
			series: []fakeSeries{
				series("meetwatch_token_expiry_timestamp_seconds", at(2*time.Hour), "instance", replicaA),
				series("meetwatch_token_expiry_timestamp_seconds", at(-3*time.Hour), "instance", replicaB),
			},
			want: []map[string]string{},
		},
		{
			name:  "accounts: replica A's reload failed, B's succeeded",
			alert: "MeetwatchConfigReloadFailed",
			series: []fakeSeries{
				series("meetwatch_config_reload_success", constant(0), "instance", replicaA),
				series("meetwatch_config_reload_success", constant(1), "instance", replicaB),
			},
			want: []map[string]string{{"job": "meetwatch", "instance": replicaA}},
		},
		{
			name:   "one account: no accounts file, nothing to reload",
			alert:  "MeetwatchConfigReloadFailed",
			series: []fakeSeries{series("meetwatch_leader", constant(1), "instance", replicaA)},
			want:   []map[string]string{},
		},
	}
	exports := withAccounts(t)
	// Which alerts were seen firing for an account, and for a deployment
	// without the label.
	forAccount, withoutLabel := map[string]bool{}, map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.alert+"/"+tt.name, func(t *testing.T) {
			rule, ok := rules[tt.alert]
			require.True(t, ok, "no alert %s", tt.alert)
			for _, s := range tt.series {
				name := s.labels.Get(model.MetricNameLabel)
				require.Contains(t, exports, name)
				if s.labels.Has("account") {
					require.True(t, exports[name]["account"], "%s has no label account", name)
				}
			}
			got := evaluate(t, rule.Expr, newStorage(tt.series))
			assert.Equal(t, tt.want, labelSets(got))
			for _, s := range got {
				account := s.Metric.Get("account")
				for _, key := range []string{"summary", "description"} {
					text := expandAlert(t, rule.Annotations[key], s)
					assert.NotContains(t, text, "<no value>", "%s %s", tt.alert, key)
					assert.NotContains(t, text, "  ", "%s %s: %q", tt.alert, key, text)
					if account == "" {
						assert.NotRegexp(t, `(?i)\baccount\b\s*([^\w\s]|$)`, text, "%s %s names an account it has not", tt.alert, key)
					} else {
						assert.Contains(t, text, "account "+account, "%s %s does not name the account", tt.alert, key)
					}
				}
				if account != "" {
					forAccount[tt.alert] = true
				} else {
					withoutLabel[tt.alert] = true
				}
			}
		})
	}
	for _, r := range rules {
		e, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
		require.NoError(t, err)
		accountWork := false
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && isPerAccount(vs.Name) {
				accountWork = true
			}
			return nil
		})
		if accountWork {
			assert.True(t, forAccount[r.Alert], "%s is about an account's work: no case shows it firing for one account", r.Alert)
			assert.True(t, withoutLabel[r.Alert], "%s is about an account's work: no case shows it firing without an accounts file", r.Alert)
		}
	}
}

// grafanaVar is a template variable of a Grafana dashboard.
type grafanaVar struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      string `json:"query"`
	Definition string `json:"definition"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

// dashboard is what the tests read of the Grafana dashboard.
type dashboard struct {
	UID        string `json:"uid"`
	Templating struct {
		List []grafanaVar `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

// loadDashboard reads the Grafana dashboard.
func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile("grafana/meetwatch.json")
	require.NoError(t, err)
	var dash dashboard
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	return dash
}

// grafanaVars gives Grafana's variables values, the account variable's
// being account: ".*" is its All.
func grafanaVars(account string) *strings.Replacer {
	return strings.NewReplacer("$__rate_interval", "5m", "$job", ".*", "$account", account)
}

// TestDashboardNamesExportedMetrics checks every query of the Grafana
// dashboard the same way, with Grafana's variables given values.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	series := withAccounts(t)
	dash := loadDashboard(t)
	assert.Equal(t, "meetwatch", dash.UID)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			checkExpr(t, p.Title, grafanaVars(".*").Replace(tg.Expr), series)
		}
	}
}

// TestDashboardHasAnAccountVariable checks the variable account: the
// accounts of meetwatch_polls_total, several at once or All, whose value
// matches a series without the label too; and that every query of an
// account's work selects by it.
func TestDashboardHasAnAccountVariable(t *testing.T) {
	dash := loadDashboard(t)
	i := slices.IndexFunc(dash.Templating.List, func(v grafanaVar) bool { return v.Name == "account" })
	require.GreaterOrEqual(t, i, 0, "no variable account")
	v := dash.Templating.List[i]
	assert.Equal(t, "query", v.Type)
	assert.Regexp(t, `^label_values\(meetwatch_polls_total(\{[^}]*\})?, *account\)$`, v.Query)
	assert.Equal(t, v.Query, v.Definition)
	assert.True(t, v.Multi, "account: multi")
	assert.True(t, v.IncludeAll, "account: includeAll")
	all, err := regexp.Compile("^(?:" + v.AllValue + ")$")
	require.NoError(t, err)
	assert.True(t, all.MatchString(""), "All (%q) does not match a series without the label account", v.AllValue)
	assert.True(t, all.MatchString("acme"), "All (%q) does not match an account", v.AllValue)

	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			// Grafana's $__rate_interval is not PromQL; "$account" stays, a string.
			expr := strings.NewReplacer("$__rate_interval", "5m").Replace(tg.Expr)
			e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
			require.NoError(t, err, "%s: %s", p.Title, expr)
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok || !isPerAccount(vs.Name) {
					return nil
				}
				assert.True(t, slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
					return m.Name == "account" && m.Type == labels.MatchRegexp && m.Value == "$account"
				}), "%s: %s is not selected by account=~\"$account\"", p.Title, vs.Name)
				return nil
			})
		}
	}
}

// scrape returns series of every metric of exported from two replicas,
// each label given a value or two; those of one account's work once per
// account of accounts, with the label account, and the metrics of
// withAccountsFile only with accounts. Counters and gauges rise; a
// timestamp is an hour ahead.
func scrape(exports map[string]map[string]bool, accounts []string) []fakeSeries {
	values := map[string][]string{"code": {"200", "500"}, "result": {"ok", "error"}, "le": {"0.5", "+Inf"}}
	var out []fakeSeries
	for name, names := range exports {
		if slices.Contains(withAccountsFile, name) && len(accounts) == 0 {
			continue
		}
		value := counter(1)
		if strings.HasSuffix(name, "_timestamp_seconds") {
			value = at(time.Hour)
		}
		sets := [][]string{{"instance", replicaA}, {"instance", replicaB}}
		for l := range names {
			if l == "account" {
				continue
			}
			vs := values[l]
			if vs == nil {
				vs = []string{"x"}
			}
			var next [][]string
			for _, set := range sets {
				for _, v := range vs {
					next = append(next, append(slices.Clone(set), l, v))
				}
			}
			sets = next
		}
		if isPerAccount(name) && len(accounts) > 0 {
			var next [][]string
			for _, set := range sets {
				for _, a := range accounts {
					next = append(next, append(slices.Clone(set), "account", a))
				}
			}
			sets = next
		}
		for _, set := range sets {
			out = append(out, series(name, value, set...))
		}
	}
	return out
}

// legend renders a Grafana legend format with a series' labels.
func legend(format string, l labels.Labels) string {
	return strings.TrimSpace(regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).ReplaceAllStringFunc(format, func(m string) string {
		return l.Get(strings.Trim(m, "{} "))
	}))
}

// values returns v as label set to value, to compare two results.
func values(v promql.Vector) map[string]float64 {
	out := map[string]float64{}
	for _, s := range v {
		out[s.Metric.String()] = s.F
	}
	return out
}

// TestDashboardQueriesWithAndWithoutAccounts evaluates every query of the
// dashboard with the Prometheus engine over what two replicas export: with
// an accounts file (accounts acme and globex), a query shows series of
// accounts exactly when its legend names the account, and choosing acme
// gives what the query gives over acme's series alone; without the file
// (no label account) every query still answers, with All chosen, but
// those of the metrics only an accounts file brings.
func TestDashboardQueriesWithAndWithoutAccounts(t *testing.T) {
	exports := withAccounts(t)
	both := newStorage(scrape(exports, []string{"acme", "globex"}))
	acmeOnly := newStorage(scrape(exports, []string{"acme"}))
	single := newStorage(scrape(exported(t), nil))
	for _, p := range loadDashboard(t).Panels {
		for _, tg := range p.Targets {
			t.Run(p.Title+"/"+tg.Expr, func(t *testing.T) {
				perAccountLegend := strings.Contains(strings.ReplaceAll(tg.LegendFormat, " ", ""), "{{account}}")
				all := evaluate(t, grafanaVars(".*").Replace(tg.Expr), both)
				require.NotEmpty(t, all, "no series with an accounts file")
				seen := map[string]bool{}
				for _, s := range all {
					assert.Equal(t, perAccountLegend, s.Metric.Has("account"),
						"a series with the label account exactly when the legend %q names it: %s", tg.LegendFormat, s.Metric)
					seen[s.Metric.Get("account")] = true
				}
				if perAccountLegend {
					assert.Subset(t, []string{"acme", "globex"}, slices.Collect(maps.Keys(seen)), "series of the accounts")
				}
				assert.Equal(t, values(all), values(evaluate(t, grafanaVars("(acme|globex)").Replace(tg.Expr), both)), "both accounts chosen, as All")
				assert.Equal(t, values(evaluate(t, grafanaVars(".*").Replace(tg.Expr), acmeOnly)),
					values(evaluate(t, grafanaVars("acme").Replace(tg.Expr), both)), "acme chosen, as acme alone")

				got := evaluate(t, grafanaVars(".*").Replace(tg.Expr), single)
				onlyWithFile := false
				for _, name := range withAccountsFile {
					onlyWithFile = onlyWithFile || strings.Contains(tg.Expr, name)
				}
				if onlyWithFile {
					assert.Empty(t, got)
					return
				}
				require.NotEmpty(t, got, "no series without an accounts file")
				for _, s := range got {
					assert.NotEmpty(t, legend(tg.LegendFormat, s.Metric), "legend %q of %s without an accounts file", tg.LegendFormat, s.Metric)
				}
			})
		}
	}
}
