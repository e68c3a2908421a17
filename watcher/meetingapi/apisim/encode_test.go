package apisim

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var benchNow = time.Date(2024, 1, 19, 8, 0, 0, 0, time.UTC)

// TestAppendJSONIsJSONMarshal checks the simulator's own encoder against
// encoding/json, on generated and changed records and on values that only
// records added by hand hold.
func TestAppendJSONIsJSONMarshal(t *testing.T) {
	g := newGenerator(5, "")
	rng := rand.New(rand.NewPCG(5, 6))
	var values []any
	for range 200 {
		rec := g.record(benchNow)
		values = append(values, rec)
		changed := copyRecord(rec)
		g.change(rng, changed)
		values = append(values, changed)
	}
	values = append(values,
		Record{"subject": "周会 <b>&</b> \"quoted\" \\ \t\x7f \xff", "size": 1.5, "big": 1e21, "tiny": 1e-7, "neg": -3},
		Record{"n": json.Number("12"), "raw": json.RawMessage(`{"a":[1,2]}`), "strs": []string{"x", "<y>"}, "nil": nil},
		Record{"empty": []any{}, "nilSlice": []any(nil), "maps": []map[string]any{{"b": 1, "a": true}}, "obj": map[string]any{}},
		Record{"int64": int64(1) << 40, "uint": uint(7), "float32": float32(0.1)},
	)
	for i, v := range values {
		want, err := json.Marshal(v)
		require.NoError(t, err)
		got, err := appendJSON([]byte("prefix"), v)
		require.NoError(t, err)
		assert.Equal(t, "prefix"+string(want), string(got), "value %d", i)
	}

	_, err := appendJSON(nil, Record{"f": func() {}})
	assert.Error(t, err, "what encoding/json refuses is refused")
}

// BenchmarkRecord is the simulator's cost per generated meeting: making the
// record and encoding it once, as its first listing does. A sizing run
// pays it a hundred thousand times.
func BenchmarkRecord(b *testing.B) {
	g := newGenerator(1, "")
	b.ReportAllocs()
	var size int
	for b.Loop() {
		e := newEntry("", g.record(benchNow), 0)
		raw, err := e.encoded()
		if err != nil {
			b.Fatal(err)
		}
		size += len(raw)
	}
	b.ReportMetric(float64(size)/float64(b.N), "bytes/record")
}
