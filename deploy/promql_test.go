package deploy_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/stretchr/testify/require"
)

// The rules and the dashboard's queries are evaluated by the Prometheus
// engine itself, over series written here, so that what they select, how
// they group and what they return is Prometheus's answer, not a reading
// of their text.

// evalAt is when every query is evaluated; the series end there.
var evalAt = time.Unix(1_800_000_000, 0)

// scrapeEvery is the step of the series, a common scrape interval.
const scrapeEvery = 15 * time.Second

// fakeSeries is one series as a Prometheus would have scraped it over the
// two hours before evalAt: value gives its sample at each scrape.
type fakeSeries struct {
	labels labels.Labels
	value  func(time.Time) float64
}

// series returns a series of the metric name scraped under the job
// meetwatch, with the labels kv (name, value, ...).
func series(name string, value func(time.Time) float64, kv ...string) fakeSeries {
	return fakeSeries{
		labels: labels.FromStrings(append([]string{model.MetricNameLabel, name, "job", "meetwatch"}, kv...)...),
		value:  value,
	}
}

// constant is a gauge that holds v.
func constant(v float64) func(time.Time) float64 {
	return func(time.Time) float64 { return v }
}

// counter is a counter that grows by perSecond from two hours before evalAt.
func counter(perSecond float64) func(time.Time) float64 {
	return func(t time.Time) float64 { return perSecond * t.Sub(evalAt.Add(-2*time.Hour)).Seconds() }
}

// rising is a gauge that starts at from and gains perMinute.
func rising(from, perMinute float64) func(time.Time) float64 {
	return func(t time.Time) float64 { return from + perMinute*t.Sub(evalAt.Add(-2*time.Hour)).Minutes() }
}

// at is a timestamp gauge that holds evalAt shifted by d.
func at(d time.Duration) func(time.Time) float64 {
	return constant(float64(evalAt.Add(d).Unix()))
}

// memStorage is a Prometheus storage of fake series, what the engine
// reads. It serves every sample whatever the time range asked: the engine
// picks the ones it needs.
type memStorage []storage.Series

func newStorage(ss []fakeSeries) memStorage {
	var m memStorage
	for _, s := range ss {
		var samples []chunks.Sample
		for t := evalAt.Add(-2 * time.Hour); !t.After(evalAt); t = t.Add(scrapeEvery) {
			samples = append(samples, floatSample{t: t.UnixMilli(), f: s.value(t)})
		}
		m = append(m, storage.NewListSeries(s.labels, samples))
	}
	return m
}

func (m memStorage) Querier(int64, int64) (storage.Querier, error) { return m, nil }

func (m memStorage) Select(_ context.Context, sortSeries bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range m {
		if matchAll(s.Labels(), ms) {
			out = append(out, s)
		}
	}
	if sortSeries {
		slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	}
	return &seriesSet{list: out}
}

func matchAll(l labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (memStorage) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memStorage) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memStorage) Close() error { return nil }

type seriesSet struct {
	list []storage.Series
	cur  storage.Series
}

func (s *seriesSet) Next() bool {
	if len(s.list) == 0 {
		return false
	}
	s.cur, s.list = s.list[0], s.list[1:]
	return true
}

func (s *seriesSet) At() storage.Series              { return s.cur }
func (*seriesSet) Err() error                        { return nil }
func (*seriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is a scraped float sample.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }

// evaluate returns what expr evaluates to at evalAt over the series of st,
// as an instant query of Prometheus (a rule's evaluation) does.
func evaluate(t *testing.T, expr string, st memStorage) promql.Vector {
	t.Helper()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute})
	q, err := engine.NewInstantQuery(t.Context(), st, nil, expr, evalAt)
	require.NoError(t, err, expr)
	defer q.Close()
	res := q.Exec(t.Context())
	require.NoError(t, res.Err, expr)
	vec, err := res.Vector()
	require.NoError(t, err, expr)
	return vec
}

// labelSets returns the labels of each sample of v, without the metric
// name, sorted.
func labelSets(v promql.Vector) []map[string]string {
	out := []map[string]string{}
	for _, s := range v {
		out = append(out, s.Metric.DropMetricName().Map())
	}
	slices.SortFunc(out, func(a, b map[string]string) int {
		return labels.Compare(labels.FromMap(a), labels.FromMap(b))
	})
	return out
}

// expandAlert fills an alert's annotation for one sample of its rule as
// Prometheus does, with $labels and $value.
func expandAlert(t *testing.T, text string, s promql.Sample) string {
	t.Helper()
	l := s.Metric.DropMetricName().Map()
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	exp := template.NewTemplateExpander(t.Context(), defs+text, "alert", template.AlertTemplateData(l, nil, "", s),
		model.TimeFromUnixNano(evalAt.UnixNano()), nil, nil, nil)
	out, err := exp.Expand()
	require.NoError(t, err, text)
	return strings.TrimSpace(out)
}
