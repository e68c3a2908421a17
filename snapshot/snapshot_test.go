package snapshot_test

import (
	"encoding/json"
	"fmt"
	"os"
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

// FuzzDiff checks the properties every diff must have, on arbitrary records:
// a record never differs from itself, changes are sorted and name real
// differences, and the diff is symmetric in what it reports.
func FuzzDiff(f *testing.F) {
	f.Add(`{"confUUID":"a","subject":"A"}`, `{"confUUID":"a","subject":"B"}`)
	f.Add(`{"confUUID":"a","x":{"y":{"z":1}}}`, `{"confUUID":"a","x":{"y":[1]}}`)
	f.Add(`{"confUUID":"a","n":1.0}`, `{"confUUID":"a","n":1}`)
	f.Add(`{"confUUID":"a"}`, `{"confUUID":"b"}`)
	f.Fuzz(func(t *testing.T, oldJS, newJS string) {
		oldM, err1 := snapshot.ParseMeeting([]byte(oldJS))
		newM, err2 := snapshot.ParseMeeting([]byte(newJS))
		if err1 != nil || err2 != nil {
			return
		}
		prev := snapshot.Snapshot{oldM.UUID: oldM}
		next := snapshot.Snapshot{newM.UUID: newM}
		assert.Empty(t, snapshot.Diff(prev, prev))

		got := snapshot.Diff(prev, next)
		back := snapshot.Diff(next, prev)
		require.Len(t, back, len(got))
		if oldM.UUID != newM.UUID {
			require.Len(t, got, 2)
			assert.Equal(t, snapshot.Ended, got[0].Kind)
			assert.Equal(t, snapshot.Started, got[1].Kind)
			return
		}
		for _, c := range got {
			require.Equal(t, snapshot.Changed, c.Kind)
			require.NotEmpty(t, c.Fields)
			for i, fc := range c.Fields {
				assert.NotEqual(t, string(fc.Old), string(fc.New), "field %q", fc.Field)
				if i > 0 {
					assert.Less(t, c.Fields[i-1].Field, fc.Field)
				}
			}
			require.Len(t, back[0].Fields, len(c.Fields))
		}
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
