package snapshot_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

// attendees returns a partAttendeeInfo array of n attendees.
func attendees(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"name":"user%05d","phone":"+99111****%03d","type":"normal"}`, i, i%1000)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// marker is what Trim writes for a value with count n.
func marker(n int) string { return fmt.Sprintf(`{"truncated":true,"count":%d}`, n) }

func TestTrimWithinLimit(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","subject":"s","partAttendeeInfo":[1,2,3]}`)
	for _, limit := range []int{len(m.Raw()), len(m.Raw()) + 1, 1 << 20} {
		got, paths, err := snapshot.Trim(m, limit)
		require.NoError(t, err)
		assert.Nil(t, paths)
		assert.Equal(t, m, got, "a record that fits is returned as it is")
	}
}

func TestTrim(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name   string
		record string
		limit  int
		want   string
		paths  []string
	}{
		{
			name:   "the largest array, by its length",
			record: `{"confUUID":"u1","subject":"s","partAttendeeInfo":` + attendees(10) + `,"size":10}`,
			limit:  100,
			want:   `{"confUUID":"u1","subject":"s","partAttendeeInfo":` + marker(10) + `,"size":10}`,
			paths:  []string{"partAttendeeInfo"},
		},
		{
			name:   "a long string, by its size in bytes",
			record: `{"confUUID":"u1","remark":"` + long + `","x":1}`,
			limit:  100,
			want:   `{"confUUID":"u1","remark":` + marker(len(long)+2) + `,"x":1}`,
			paths:  []string{"remark"},
		},
		{
			name:   "largest first, and no more than needed",
			record: `{"confUUID":"u1","a":` + attendees(3) + `,"b":` + attendees(6) + `,"c":` + attendees(4) + `}`,
			limit:  len(`{"confUUID":"u1","a":` + attendees(3) + `,"b":` + marker(6) + `,"c":` + marker(4) + `}`),
			want:   `{"confUUID":"u1","a":` + attendees(3) + `,"b":` + marker(6) + `,"c":` + marker(4) + `}`,
			paths:  []string{"b", "c"},
		},
		{
			name:   "inside objects, by dotted path, keys with dots escaped",
			record: `{"confUUID":"u1","confConfigInfo":{"a.b":"` + long + `","isAutoMute":true}}`,
			limit:  120,
			want:   `{"confUUID":"u1","confConfigInfo":{"a.b":` + marker(len(long)+2) + `,"isAutoMute":true}}`,
			paths:  []string{`confConfigInfo.a\.b`},
		},
		{
			name:   "the decoded fields never, in any case, even when largest",
			record: `{"confUUID":"u1","subject":"` + long + `","SUBJECT":"` + long + `","startTime":"` + long + `","conferenceID":"` + long + `","other":"` + long[:100] + `"}`,
			limit:  len(`{"confUUID":"u1","subject":"` + long + `","SUBJECT":"` + long + `","startTime":"` + long + `","conferenceID":"` + long + `","other":` + marker(102) + `}`),
			want:   `{"confUUID":"u1","subject":"` + long + `","SUBJECT":"` + long + `","startTime":"` + long + `","conferenceID":"` + long + `","other":` + marker(102) + `}`,
			paths:  []string{"other"},
		},
		{
			name:   "whole objects, only when the rest is not enough",
			record: `{"confUUID":"u1","o":{` + strings.Repeat(`"k":1,`, 40) + `"k":1},"p":{"k":1}}`,
			limit:  100,
			want:   `{"confUUID":"u1","o":` + marker(len(`{`+strings.Repeat(`"k":1,`, 40)+`"k":1}`)) + `,"p":{"k":1}}`,
			paths:  []string{"o"},
		},
		{
			name:   "an object whose contents were cut, then the object",
			record: `{"confUUID":"u1","o":{"big":"` + long + `",` + strings.Repeat(`"k":1,`, 30) + `"k":1}}`,
			limit:  60,
			want:   `{"confUUID":"u1","o":` + marker(len(`{"big":"`+long+`",`+strings.Repeat(`"k":1,`, 30)+`"k":1}`)) + `}`,
			paths:  []string{"o"},
		},
		{
			name:   "every copy of a repeated key, listed once",
			record: `{"confUUID":"u1","a":"` + long + `","a":"` + long + `"}`,
			limit:  100,
			want:   `{"confUUID":"u1","a":` + marker(len(long)+2) + `,"a":` + marker(len(long)+2) + `}`,
			paths:  []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := meeting(t, tt.record)
			got, paths, err := snapshot.Trim(m, tt.limit)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got.Raw()))
			assert.Equal(t, tt.paths, paths)
			assert.LessOrEqual(t, len(got.Raw()), tt.limit)
			assert.Equal(t, tt.paths, snapshot.TruncatedPaths(got.Raw()))

			back, err := snapshot.ParseMeeting(got.Raw())
			require.NoError(t, err, "a trimmed record is a record")
			assert.Equal(t, back, got, "the decoded fields are kept")
		})
	}
}

func TestTrimTooLarge(t *testing.T) {
	long := strings.Repeat("x", 500)
	m := meeting(t, `{"confUUID":"u1","subject":"`+long+`","partAttendeeInfo":`+attendees(20)+`,"n":1}`)
	got, paths, err := snapshot.Trim(m, 300)
	require.ErrorIs(t, err, snapshot.ErrTooLarge)
	assert.ErrorContains(t, err, "u1")
	assert.Equal(t, `{"confUUID":"u1","subject":"`+long+`","partAttendeeInfo":`+marker(20)+`,"n":1}`, string(got.Raw()),
		"the smallest record comes with the error")
	assert.Equal(t, []string{"partAttendeeInfo"}, paths)
	assert.Equal(t, long, got.Subject)

	_, _, err = snapshot.Trim(m, -1)
	assert.ErrorIs(t, err, snapshot.ErrTooLarge)
}

func TestTrimRawErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{name: "array", in: `[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]`, want: snapshot.ErrNotObject},
		{name: "truncated", in: `{"a":"` + strings.Repeat("x", 50)},
		{name: "invalid UTF-8", in: "{\"a\":\"" + strings.Repeat("\xff", 50) + "\"}", want: snapshot.ErrInvalidUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, paths, err := snapshot.TrimRaw(json.RawMessage(tt.in), 10)
			require.Error(t, err)
			assert.NotErrorIs(t, err, snapshot.ErrTooLarge)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.Nil(t, got)
			assert.Nil(t, paths)
		})
	}
}

func TestTrimIsStable(t *testing.T) {
	record := func(amount int) string {
		return fmt.Sprintf(`{"confUUID":"u1","subject":"s","onlineAttendeeAmount":%d,"partAttendeeInfo":%s,"confConfigInfo":{"isAutoMute":true}}`, amount, attendees(50))
	}
	m := meeting(t, record(3))
	const limit = 1000
	a, pathsA, err := snapshot.Trim(m, limit)
	require.NoError(t, err)
	b, pathsB, err := snapshot.Trim(meeting(t, record(3)), limit)
	require.NoError(t, err)
	assert.Equal(t, a.Raw(), b.Raw(), "the same record trims to the same bytes")
	assert.Equal(t, pathsA, pathsB)

	again, paths, err := snapshot.Trim(a, limit)
	require.NoError(t, err)
	assert.Equal(t, a.Raw(), again.Raw(), "a trimmed record trimmed again is the same")
	assert.Nil(t, paths)

	assert.Empty(t, snapshot.Diff(snapshot.Snapshot{"u1": a}, snapshot.Snapshot{"u1": b}))
	c, _, err := snapshot.Trim(meeting(t, record(4)), limit)
	require.NoError(t, err)
	changes := snapshot.Diff(snapshot.Snapshot{"u1": a}, snapshot.Snapshot{"u1": c})
	require.Len(t, changes, 1)
	assert.Equal(t, []snapshot.FieldChange{{Field: "onlineAttendeeAmount", Old: json.RawMessage(`3`), New: json.RawMessage(`4`)}}, changes[0].Fields,
		"a trimmed record diffs only where the record changed")
}

func TestTrimLowerLimitCutsMore(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","a":`+attendees(8)+`,"b":`+attendees(4)+`,"c":"`+strings.Repeat("y", 90)+`","d":{"e":`+attendees(2)+`}}`)
	var prev []string
	for limit := len(m.Raw()); limit > 0; limit -= 7 {
		got, paths, err := snapshot.Trim(m, limit)
		if err != nil {
			require.ErrorIs(t, err, snapshot.ErrTooLarge)
		}
		for _, p := range prev {
			covered := snapshot.NewFieldSet(paths...).Contains(p)
			assert.True(t, covered, "limit %d: %q was cut at a higher limit, and is not now (%v)", limit, p, paths)
		}
		prev = paths
		if err == nil {
			assert.LessOrEqual(t, len(got.Raw()), limit)
		}
	}
}

func TestTruncatedPaths(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{name: "none", in: `{"a":1}`},
		{name: "top level and nested", in: `{"b":{"truncated":true,"count":3},"a":{"x.y":{"truncated":true,"count":0}}}`, want: []string{`a.x\.y`, "b"}},
		{name: "not in arrays", in: `{"a":[{"truncated":true,"count":3}]}`},
		{name: "not lookalikes", in: `{"a":{"truncated":true,"count":3,"x":1},"b":{"truncated":true,"count":-1},"c":{"truncated":true,"count":03},"d":{"truncated":true,"count":}}`},
		{name: "not JSON", in: `{"a":{"truncated":true,"count":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, snapshot.TruncatedPaths(json.RawMessage(tt.in)))
		})
	}
}

// FuzzTrim checks what every trim must do, on arbitrary records and
// limits: the result is a record with the same decoded fields; it fits,
// or the error is ErrTooLarge; the paths are sorted, unique, and each
// names a marker; nothing differs outside the fields cut; trimming is
// deterministic, trimming again changes nothing, and a lower limit cuts
// the same fields or fields around them.
func FuzzTrim(f *testing.F) {
	f.Add(`{"confUUID":"u1","subject":"s","partAttendeeInfo":`+attendees(5)+`}`, 100)
	f.Add(`{"confUUID":"u1","subject":"`+strings.Repeat("s", 100)+`"}`, 50)
	f.Add(`{"confUUID":"u1","o":{"p":{"q":"`+strings.Repeat("q", 60)+`","r":[1,2,3,4,5,6,7,8,9,10,11,12,13]},"k":1}}`, 40)
	f.Add(`{"confUUID":"u1","a.b":"`+strings.Repeat("a", 40)+`","a":{"b":"`+strings.Repeat("b", 40)+`"},"":{"x":"`+strings.Repeat("c", 40)+`"}}`, 60)
	f.Add(`{"confUUID":"u1","a":{"truncated":true,"count":123456789},"b":"`+strings.Repeat("b", 40)+`"}`, 30)
	f.Add(`{"confUUID":"u1","\u0061":"`+strings.Repeat("a", 40)+`","a":"`+strings.Repeat("a", 40)+`","CONFUUID":"`+strings.Repeat("c", 40)+`"}`, 20)
	f.Add(`{"confUUID":"u1", "n": 1.50e10 , "s" : "`+strings.Repeat(" ", 40)+`" }`, 10)
	f.Fuzz(func(t *testing.T, record string, limit int) {
		m, err := snapshot.ParseMeeting([]byte(record))
		if err != nil {
			return
		}
		got, paths, err := snapshot.Trim(m, limit)
		if err != nil {
			require.ErrorIs(t, err, snapshot.ErrTooLarge)
			assert.Greater(t, len(got.Raw()), limit)
		} else {
			assert.LessOrEqual(t, len(got.Raw()), limit)
		}
		back, perr := snapshot.ParseMeeting(got.Raw())
		require.NoError(t, perr, "%s", got.Raw())
		assert.Equal(t, back.UUID, m.UUID)
		assert.Equal(t, back.ConferenceID, m.ConferenceID)
		assert.Equal(t, back.Subject, m.Subject)
		assert.Equal(t, back.StartTime, m.StartTime)
		assert.Equal(t, string(back.Raw()), string(got.Raw()), "a trimmed record stays compact")

		if paths == nil {
			assert.Equal(t, m.Raw(), got.Raw())
			return
		}
		trimmed := snapshot.NewFieldSet(paths...)
		assert.Equal(t, paths, trimmed.Paths(), "paths are sorted and unique")
		gotV := decodeJSON(t, got.Raw())
		for _, p := range paths {
			if hasRepeatedKeys(t, got.Raw()) {
				break // the decoded record holds only the last of a key's values
			}
			v, ok := resolve(gotV, snapshot.SplitPath(p))
			require.True(t, ok, "path %q is not in %s", p, got.Raw())
			marker, ok := v.(map[string]any)
			require.True(t, ok, "path %q holds %v", p, v)
			assert.Equal(t, true, marker["truncated"], "path %q", p)
		}
		assert.Subset(t, snapshot.TruncatedPaths(got.Raw()), paths)
		for _, fc := range snapshot.CompareRecords(m.Raw(), got.Raw()) {
			assert.True(t, trimmed.Contains(fc.Field), "field %q changed but was not cut", fc.Field)
		}

		again, againPaths, againErr := snapshot.Trim(m, limit)
		assert.Equal(t, got.Raw(), again.Raw(), "deterministic")
		assert.Equal(t, paths, againPaths)
		assert.Equal(t, err == nil, againErr == nil)
		if err == nil {
			twice, twicePaths, err := snapshot.Trim(got, limit)
			require.NoError(t, err)
			assert.Equal(t, got.Raw(), twice.Raw(), "trimming again changes nothing")
			assert.Nil(t, twicePaths)
		}

		lower, lowerPaths, _ := snapshot.Trim(m, limit/2)
		lowerSet := snapshot.NewFieldSet(lowerPaths...)
		for _, p := range paths {
			assert.True(t, lowerSet.Contains(p), "%q cut at %d, not at %d: %s", p, limit, limit/2, lower.Raw())
		}
	})
}

// hasRepeatedKeys reports whether any object in raw holds a key twice.
func hasRepeatedKeys(tb testing.TB, raw []byte) bool {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		keys     map[string]bool
		isObject bool
		wantKey  bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		require.NoError(tb, err)
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.isObject && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			if top.keys[key] {
				return true
			}
			top.keys[key] = true
			top.wantKey = false
			continue
		}
		if top != nil && top.isObject {
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, isObject: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// bigRecord returns a record of about size bytes, most of it attendees.
func bigRecord(size int) []byte {
	n := size / len(`{"name":"user00000","phone":"+99111****000","type":"normal"},`)
	return fmt.Appendf(nil, `{"confUUID":"%032x","conferenceID":"914083136","subject":"All hands","startTime":"2026-11-25 08:00","confConfigInfo":{"isAutoMute":true,"prolongLength":15},"remark":"%s","partAttendeeInfo":%s,"onlineAttendeeAmount":3}`,
		1, strings.Repeat("r", 2000), attendees(n))
}

func BenchmarkTrim(b *testing.B) {
	for _, tc := range []struct {
		name        string
		size, limit int
	}{
		{name: "fits/2KiB", size: 2 << 10, limit: 1 << 20},
		{name: "cut/1.5MiB-to-1MiB", size: 3 << 19, limit: 1 << 20},
		{name: "cut/8MiB-to-1MiB", size: 8 << 20, limit: 1 << 20},
	} {
		m, err := snapshot.ParseMeeting(bigRecord(tc.size))
		require.NoError(b, err)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(m.Raw())))
			for b.Loop() {
				if _, _, err := snapshot.Trim(m, tc.limit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
