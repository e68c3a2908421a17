package snapshot_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

func meeting(tb testing.TB, js string) snapshot.Meeting {
	tb.Helper()
	m, err := snapshot.ParseMeeting([]byte(js))
	require.NoError(tb, err)
	return m
}

func snap(tb testing.TB, records ...string) snapshot.Snapshot {
	tb.Helper()
	s := snapshot.Snapshot{}
	for _, r := range records {
		m := meeting(tb, r)
		s[m.UUID] = m
	}
	return s
}

func TestFixtureRoundTrips(t *testing.T) {
	body, err := os.ReadFile("testdata/online-example.json")
	require.NoError(t, err)

	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &page))
	require.Len(t, page.Data, 1)

	var m snapshot.Meeting
	require.NoError(t, json.Unmarshal(page.Data[0], &m))
	assert.Equal(t, "050c7898216811eaa6958bf3bb9ac167", m.UUID)
	assert.Equal(t, "914083136", m.ConferenceID)
	assert.Equal(t, "user01's meeting", m.Subject)
	assert.Equal(t, "2019-12-18 07:28", m.StartTime)

	got, err := json.Marshal(m)
	require.NoError(t, err)
	assert.JSONEq(t, string(page.Data[0]), string(got), "re-encoding must keep every field")

	var want, back map[string]any
	require.NoError(t, json.Unmarshal(page.Data[0], &want))
	require.NoError(t, json.Unmarshal(got, &back))
	assert.Len(t, back, len(want))
	assert.Empty(t, snapshot.CompareRecords(page.Data[0], got))
}

func TestParseMeetingKeepsUnknownFields(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","brandNewField":{"x":[1,2]},"subject":"s"}`)
	assert.JSONEq(t, `{"confUUID":"u1","brandNewField":{"x":[1,2]},"subject":"s"}`, string(m.Raw()))
}

func TestParseMeetingErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{name: "no confUUID", in: `{"subject":"x"}`, want: snapshot.ErrNoUUID},
		{name: "empty confUUID", in: `{"confUUID":""}`, want: snapshot.ErrNoUUID},
		{name: "numeric confUUID", in: `{"confUUID":12}`, want: snapshot.ErrNoUUID},
		{name: "array", in: `[1]`, want: snapshot.ErrNotObject},
		{name: "null", in: `null`, want: snapshot.ErrNotObject},
		{name: "truncated", in: `{"confUUID":"a"`},
		{name: "vertical tab around it, not JSON's whitespace", in: "\v{\"confUUID\":\"a\"}"},
		{name: "no-break space after it", in: "{\"confUUID\":\"a\"}\u00a0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := snapshot.ParseMeeting([]byte(tt.in))
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestParseMeetingLenientFields(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","subject":42,"startTime":"tomorrow-ish","conferenceState":"Exploding"}`)
	assert.Equal(t, "u1", m.UUID)
	assert.Empty(t, m.Subject)
	assert.Equal(t, "tomorrow-ish", m.StartTime)
}

func TestDiff(t *testing.T) {
	a := `{"confUUID":"a","subject":"A","size":1}`
	b := `{"confUUID":"b","subject":"B"}`
	c := `{"confUUID":"c","subject":"C","confConfigInfo":{"isAutoMute":true,"prolongLength":15},"partAttendeeInfo":[{"name":"x"}]}`

	type want struct {
		kind   snapshot.ChangeKind
		key    string
		fields []snapshot.FieldChange
	}
	tests := []struct {
		name       string
		prev, next snapshot.Snapshot
		want       []want
	}{
		{name: "both empty", prev: snap(t), next: snap(t)},
		{name: "nothing changed", prev: snap(t, a, b), next: snap(t, a, b)},
		{
			name: "whitespace and key order do not count",
			prev: snap(t, a), next: snap(t, `{ "size": 1, "subject": "A", "confUUID": "a" }`),
		},
		{
			name: "first snapshot starts everything",
			prev: snap(t), next: snap(t, b, a),
			want: []want{{kind: snapshot.Started, key: "a"}, {kind: snapshot.Started, key: "b"}},
		},
		{
			name: "all ended",
			prev: snap(t, a, b), next: snap(t),
			want: []want{{kind: snapshot.Ended, key: "a"}, {kind: snapshot.Ended, key: "b"}},
		},
		{
			name: "ended changed started, in that order",
			prev: snap(t, a, b), next: snap(t, `{"confUUID":"b","subject":"B2"}`, c),
			want: []want{
				{kind: snapshot.Ended, key: "a"},
				{kind: snapshot.Changed, key: "b", fields: []snapshot.FieldChange{
					{Field: "subject", Old: json.RawMessage(`"B"`), New: json.RawMessage(`"B2"`)},
				}},
				{kind: snapshot.Started, key: "c"},
			},
		},
		{
			name: "nested fields by dotted path, arrays whole, sorted",
			prev: snap(t, c),
			next: snap(t, `{"confUUID":"c","subject":"C","confConfigInfo":{"isAutoMute":false,"prolongLength":15,"guestPwd":"1"},"partAttendeeInfo":[{"name":"x"},{"name":"y"}]}`),
			want: []want{{kind: snapshot.Changed, key: "c", fields: []snapshot.FieldChange{
				{Field: "confConfigInfo.guestPwd", New: json.RawMessage(`"1"`)},
				{Field: "confConfigInfo.isAutoMute", Old: json.RawMessage(`true`), New: json.RawMessage(`false`)},
				{Field: "partAttendeeInfo", Old: json.RawMessage(`[{"name":"x"}]`), New: json.RawMessage(`[{"name":"x"},{"name":"y"}]`)},
			}}},
		},
		{
			name: "field removed, null kept apart from absent, object replaced by scalar",
			prev: snap(t, `{"confUUID":"d","size":3,"liveUrl":null,"cycleParams":{"a":1}}`),
			next: snap(t, `{"confUUID":"d","liveUrl":"u","cycleParams":"none"}`),
			want: []want{{kind: snapshot.Changed, key: "d", fields: []snapshot.FieldChange{
				{Field: "cycleParams", Old: json.RawMessage(`{"a":1}`), New: json.RawMessage(`"none"`)},
				{Field: "liveUrl", Old: json.RawMessage(`null`), New: json.RawMessage(`"u"`)},
				{Field: "size", Old: json.RawMessage(`3`)},
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := snapshot.Diff(tt.prev, tt.next)
			require.Len(t, got, len(tt.want))
			for i, w := range tt.want {
				assert.Equal(t, w.kind, got[i].Kind, "change %d", i)
				assert.Equal(t, w.key, got[i].Key, "change %d", i)
				assert.Equal(t, w.fields, got[i].Fields, "change %d", i)
				switch w.kind {
				case snapshot.Started:
					assert.Equal(t, tt.next[w.key].Raw(), got[i].Meeting().Raw())
				case snapshot.Ended:
					assert.Equal(t, tt.prev[w.key].Raw(), got[i].Meeting().Raw())
				case snapshot.Changed:
					assert.Equal(t, tt.prev[w.key].Raw(), got[i].Old.Raw())
					assert.Equal(t, tt.next[w.key].Raw(), got[i].New.Raw())
				}
			}
		})
	}
}

// fuzzSnapshot reads a listing for FuzzDiff: every JSON value in s, one
// after another, up to the first that is not JSON. The values that
// ParseMeeting accepts become the snapshot's meetings; a later record of
// the same meeting replaces an earlier one.
func fuzzSnapshot(s string) snapshot.Snapshot {
	snap := snapshot.Snapshot{}
	dec := json.NewDecoder(strings.NewReader(s))
	for {
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return snap
		}
		if m, err := snapshot.ParseMeeting(raw); err == nil {
			snap[m.UUID] = m
		}
	}
}

// decodeJSON decodes v as the diff does, numbers as written.
func decodeJSON(tb testing.TB, raw []byte) any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	require.NoError(tb, dec.Decode(&v), "%s", raw)
	return v
}

// resolve returns the value that the keys name inside v.
func resolve(v any, keys []string) (any, bool) {
	for _, k := range keys {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// FuzzDiff checks the properties every diff must have, on arbitrary
// listings of several meetings (each input holds any number of records,
// one after another): a snapshot never differs from itself, nor a record
// from itself; changes come ended, changed, started, each sorted by key, and
// match the key sets; each change's fields are sorted, unique, name real
// differences, and each path, split with SplitPath, leads to the reported
// values in the old and new records; and the diff back is the mirror image.
func FuzzDiff(f *testing.F) {
	f.Add(`{"confUUID":"a","subject":"A"}`, `{"confUUID":"a","subject":"B"}`)
	f.Add(`{"confUUID":"a","x":{"y":{"z":1}}}`, `{"confUUID":"a","x":{"y":[1]}}`)
	f.Add(`{"confUUID":"a","n":1.0}`, `{"confUUID":"a","n":1}`)
	f.Add(`{"confUUID":"a"}`, `{"confUUID":"b"}`)
	f.Add(`{"confUUID":"a","s":1} {"confUUID":"b","s":1} {"confUUID":"c"}`,
		`{"confUUID":"b","s":2} {"confUUID":"c"} {"confUUID":"d","s":3}`)
	f.Add(`{"confUUID":"a","a.b":1,"a":{"b":2}}`+"\n"+`{"confUUID":"b","x\\":{"y":1},"x.y":1}`,
		`{"confUUID":"a","a.b":3,"a":{"b":4}}`+"\n"+`{"confUUID":"b","x\\":{"y":2},"x.y":2}`)
	f.Add(`[{"confUUID":"a","":{"x":1},"x":1}, {"confUUID":"b","":1}]`+`{"confUUID":"a","":{"x":1},"x":1}{"confUUID":"b","":1}`,
		`{"confUUID":"a","":{"x":2},"x":2}{"confUUID":"b","":{"":null}}`)
	f.Fuzz(func(t *testing.T, oldJS, newJS string) {
		prev, next := fuzzSnapshot(oldJS), fuzzSnapshot(newJS)
		for _, s := range []snapshot.Snapshot{prev, next} {
			assert.Empty(t, snapshot.Diff(s, s))
			for _, m := range s {
				assert.Empty(t, snapshot.CompareRecords(m.Raw(), m.Raw()), "%s", m.Raw())
			}
		}

		got := snapshot.Diff(prev, next)
		back := snapshot.Diff(next, prev)
		require.Len(t, back, len(got))
		mirror := map[snapshot.ChangeKind]snapshot.ChangeKind{
			snapshot.Ended: snapshot.Started, snapshot.Changed: snapshot.Changed, snapshot.Started: snapshot.Ended,
		}
		backByKey := make(map[string]snapshot.Change, len(back))
		for _, c := range back {
			backByKey[c.Key] = c
		}
		rank := map[snapshot.ChangeKind]int{snapshot.Ended: 0, snapshot.Changed: 1, snapshot.Started: 2}
		var ended, started int
		for i, c := range got {
			if i > 0 {
				p := got[i-1]
				require.True(t, rank[p.Kind] < rank[c.Kind] || rank[p.Kind] == rank[c.Kind] && p.Key < c.Key,
					"change %d (%s %q) after %s %q", i, c.Kind, c.Key, p.Kind, p.Key)
			}
			b, ok := backByKey[c.Key]
			require.True(t, ok, "no change of %q back", c.Key)
			assert.Equal(t, mirror[c.Kind], b.Kind, "the change of %q back", c.Key)

			old, inPrev := prev[c.Key]
			cur, inNext := next[c.Key]
			switch c.Kind {
			case snapshot.Ended:
				ended++
				require.True(t, inPrev && !inNext, "ended %q", c.Key)
				assert.Equal(t, old.Raw(), c.Meeting().Raw())
				continue
			case snapshot.Started:
				started++
				require.True(t, !inPrev && inNext, "started %q", c.Key)
				assert.Equal(t, cur.Raw(), c.Meeting().Raw())
				continue
			}
			require.Equal(t, snapshot.Changed, c.Kind)
			require.True(t, inPrev && inNext, "changed %q", c.Key)
			require.NotEqual(t, string(old.Raw()), string(cur.Raw()))
			require.NotEmpty(t, c.Fields)

			oldV, newV := decodeJSON(t, old.Raw()), decodeJSON(t, cur.Raw())
			seen := make(map[string]bool, len(c.Fields))
			for i, fc := range c.Fields {
				require.False(t, seen[fc.Field], "two changes of field %q", fc.Field)
				seen[fc.Field] = true
				assert.NotEqual(t, string(fc.Old), string(fc.New), "field %q", fc.Field)
				if i > 0 {
					assert.Less(t, c.Fields[i-1].Field, fc.Field)
				}

				keys := snapshot.SplitPath(fc.Field)
				assert.Equal(t, fc.Field, snapshot.JoinPath(keys...), "the path of %q", keys)
				ov, inOld := resolve(oldV, keys)
				nv, inNew := resolve(newV, keys)
				require.True(t, inOld || inNew, "field %q is in neither record", fc.Field)
				require.Equal(t, inOld, len(fc.Old) > 0, "field %q in the old record", fc.Field)
				require.Equal(t, inNew, len(fc.New) > 0, "field %q in the new record", fc.Field)
				if inOld {
					assert.Equal(t, ov, decodeJSON(t, fc.Old), "old value of %q", fc.Field)
				}
				if inNew {
					assert.Equal(t, nv, decodeJSON(t, fc.New), "new value of %q", fc.Field)
				}
			}

			require.Len(t, b.Fields, len(c.Fields))
			for i, fc := range c.Fields {
				assert.Equal(t, snapshot.FieldChange{Field: fc.Field, Old: fc.New, New: fc.Old}, b.Fields[i])
			}
		}
		var onlyPrev, onlyNext int
		for k := range prev {
			if _, ok := next[k]; !ok {
				onlyPrev++
			}
		}
		for k := range next {
			if _, ok := prev[k]; !ok {
				onlyNext++
			}
		}
		assert.Equal(t, onlyPrev, ended, "every meeting gone is ended")
		assert.Equal(t, onlyNext, started, "every meeting new is started")
	})
}

func benchSnapshots(n int) (prev, next snapshot.Snapshot) {
	prev, next = make(snapshot.Snapshot, n), make(snapshot.Snapshot, n)
	churn := n / 100
	for i := range n {
		rec := fmt.Sprintf(`{"confUUID":"%032x","conferenceID":"%09d","subject":"meeting %d","startTime":"2026-11-25 08:00","size":4,"confConfigInfo":{"isAutoMute":true,"prolongLength":15},"partAttendeeInfo":[{"name":"u","phone":"+99111****815"}],"onlineAttendeeAmount":3}`, i, i, i)
		m, _ := snapshot.ParseMeeting([]byte(rec))
		prev[m.UUID] = m
		switch {
		case i < churn/3: // ended: left out of next
		case i < 2*churn/3: // changed
			m2, _ := snapshot.ParseMeeting([]byte(rec[:len(rec)-2] + "4}"))
			next[m2.UUID] = m2
		default:
			next[m.UUID] = m
		}
	}
	for i := range churn - 2*churn/3 { // started
		m, _ := snapshot.ParseMeeting(fmt.Appendf(nil, `{"confUUID":"new%029x","subject":"s"}`, i))
		next[m.UUID] = m
	}
	return prev, next
}

func BenchmarkDiff(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		prev, next := benchSnapshots(n)
		b.Run(fmt.Sprintf("meetings=%d/churn=1%%", n), func(b *testing.B) {
			b.ReportAllocs()
			var changes int
			for b.Loop() {
				changes = len(snapshot.Diff(prev, next))
			}
			b.ReportMetric(float64(changes), "changes/op")
		})
	}
}

func TestParseMeetingRejectsInvalidUTF8(t *testing.T) {
	_, err := snapshot.ParseMeeting([]byte("{\"confUUID\":\"a\",\"subject\":\"\xff\"}"))
	assert.ErrorIs(t, err, snapshot.ErrInvalidUTF8)
}
