package snapshot_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

func TestJoinSplitPath(t *testing.T) {
	tests := []struct {
		name string
		keys []string
		path string
	}{
		{name: "one key", keys: []string{"subject"}, path: "subject"},
		{name: "nested keys", keys: []string{"confConfigInfo", "isAutoMute"}, path: "confConfigInfo.isAutoMute"},
		{name: "a key with a dot", keys: []string{"a.b"}, path: `a\.b`},
		{name: "a key inside a key", keys: []string{"a", "b"}, path: `a.b`},
		{name: "a key with a backslash", keys: []string{`a\b`}, path: `a\\b`},
		{name: "a key ending in a backslash, then a key", keys: []string{`a\`, "b"}, path: `a\\.b`},
		{name: "a backslash before a dot", keys: []string{`a\.b`}, path: `a\\\.b`},
		{name: "only escapes", keys: []string{".", `\`, ".."}, path: `\..\\.\.\.`},
		{name: "the empty key", keys: []string{""}, path: ""},
		{name: "the empty key, then a key", keys: []string{"", "x"}, path: ".x"},
		{name: "a key, then the empty key", keys: []string{"x", ""}, path: "x."},
		{name: "not ASCII", keys: []string{"é.ü", "日本"}, path: `é\.ü.日本`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.path, snapshot.JoinPath(tt.keys...))
			assert.Equal(t, tt.keys, snapshot.SplitPath(tt.path))

			// FieldSet reads paths key by key, the way SplitPath does.
			set := snapshot.NewFieldSet(tt.path)
			assert.True(t, set.Contains(tt.path))
			assert.True(t, set.Contains(snapshot.JoinPath(append(tt.keys, "z")...)))
			assert.False(t, set.Contains(snapshot.JoinPath(tt.keys[:len(tt.keys)-1]...)+"z"))
			if len(tt.keys) > 1 {
				assert.False(t, set.Contains(snapshot.JoinPath(tt.keys[:len(tt.keys)-1]...)))
				assert.True(t, set.Overlaps(snapshot.JoinPath(tt.keys[:len(tt.keys)-1]...)))
			}
		})
	}
}

func TestSplitPathLenient(t *testing.T) {
	tests := []struct {
		name, path string
		want       []string
	}{
		{name: "escape before a letter", path: `a\b`, want: []string{"ab"}},
		{name: "backslash at the end", path: `a.b\`, want: []string{"a", `b\`}},
		{name: "lone backslash", path: `\`, want: []string{`\`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, snapshot.SplitPath(tt.path))
			assert.True(t, snapshot.NewFieldSet(snapshot.JoinPath(tt.want...)).Contains(tt.path))
		})
	}
}

func TestCompareRecordsPaths(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name     string
		old, new string
		want     []snapshot.FieldChange
	}{
		{
			name: "plain keys as they always were",
			old:  `{"confConfigInfo":{"isAutoMute":true},"size":1}`,
			new:  `{"confConfigInfo":{"isAutoMute":false},"size":2}`,
			want: []snapshot.FieldChange{
				{Field: "confConfigInfo.isAutoMute", Old: raw(`true`), New: raw(`false`)},
				{Field: "size", Old: raw(`1`), New: raw(`2`)},
			},
		},
		{
			name: "a dotted key beside the nested key it looks like",
			old:  `{"a.b":1,"a":{"b":2}}`,
			new:  `{"a.b":3,"a":{"b":4}}`,
			want: []snapshot.FieldChange{
				{Field: `a.b`, Old: raw(`2`), New: raw(`4`)},
				{Field: `a\.b`, Old: raw(`1`), New: raw(`3`)},
			},
		},
		{
			name: "a key with a backslash beside a dotted key",
			old:  `{"a\\":{"b":1},"a.b":1,"c\\d":1}`,
			new:  `{"a\\":{"b":2},"a.b":2}`,
			want: []snapshot.FieldChange{
				{Field: `a\.b`, Old: raw(`1`), New: raw(`2`)},
				{Field: `a\\.b`, Old: raw(`1`), New: raw(`2`)},
				{Field: `c\\d`, Old: raw(`1`)},
			},
		},
		{
			name: "a key inside the empty key beside the same key outside",
			old:  `{"":{"x":1},"x":1}`,
			new:  `{"":{"x":2},"x":2}`,
			want: []snapshot.FieldChange{
				{Field: ".x", Old: raw(`1`), New: raw(`2`)},
				{Field: "x", Old: raw(`1`), New: raw(`2`)},
			},
		},
		{
			name: "not an object: the whole value, under the path \"\"",
			old:  `{"a":1}`,
			new:  `[1]`,
			want: []snapshot.FieldChange{{Field: "", Old: raw(`{"a":1}`), New: raw(`[1]`)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := snapshot.CompareRecords(raw(tt.old), raw(tt.new))
			require.Equal(t, tt.want, got)
			for _, fc := range got {
				assert.Equal(t, fc.Field, snapshot.JoinPath(snapshot.SplitPath(fc.Field)...))
			}
		})
	}
}

func TestEscapedPathJSON(t *testing.T) {
	got, err := json.Marshal(snapshot.FieldChange{Field: snapshot.JoinPath("a.b", "c"), New: json.RawMessage(`1`)})
	require.NoError(t, err)
	assert.JSONEq(t, `{"field":"a\\.b.c","new":1}`, string(got))
}
