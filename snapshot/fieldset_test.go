package snapshot_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot"
)

func TestParseFieldSet(t *testing.T) {
	tests := []struct {
		name, spec string
		want       []string
	}{
		{name: "empty", spec: ""},
		{name: "blank", spec: "  "},
		{name: "one", spec: "onlineAttendeeAmount", want: []string{"onlineAttendeeAmount"}},
		{name: "several, spaces trimmed, sorted, duplicates once", spec: " onlineAttendeeAmount , confConfigInfo.isAutoMute,onlineAttendeeAmount",
			want: []string{"confConfigInfo.isAutoMute", "onlineAttendeeAmount"}},
		{name: "a key with a dot", spec: `a\.b,a.b`, want: []string{"a.b", `a\.b`}},
		{name: "a key with a backslash", spec: `a\\b`, want: []string{`a\\b`}},
		{name: "a key with a comma", spec: `a\,b,c`, want: []string{"a,b", "c"}},
		{name: "escaped brackets are a key", spec: `a[\]`, want: []string{"a[]"}},
		{name: "any escaped character is itself", spec: `\a`, want: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := snapshot.ParseFieldSet(tt.spec)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Paths())
			assert.Equal(t, len(tt.want), got.Len())

			back, err := snapshot.ParseFieldSet(got.String())
			require.NoError(t, err)
			assert.Equal(t, got.Paths(), back.Paths(), "String reads back as the same set")
		})
	}
}

func TestParseFieldSetErrors(t *testing.T) {
	tests := []struct {
		name, spec, want string
	}{
		{name: "empty key", spec: "confConfigInfo..isAutoMute", want: `"confConfigInfo..isAutoMute": empty key`},
		{name: "trailing dot", spec: "size.", want: `"size.": empty key`},
		{name: "leading dot", spec: ".size", want: `".size": empty key`},
		{name: "empty path", spec: "size,,subject", want: `"": empty`},
		{name: "trailing comma", spec: "size,", want: `"": empty`},
		{name: "lone backslash", spec: `size\`, want: `"size\\": ends in a lone backslash`},
		{name: "array elements", spec: "partAttendeeInfo[].name", want: `"partAttendeeInfo[].name": "[]" after a key`},
		{name: "array elements at the end", spec: "partAttendeeInfo[]", want: `"partAttendeeInfo[]": "[]" after a key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := snapshot.ParseFieldSet(tt.spec)
			require.ErrorIs(t, err, snapshot.ErrInvalidField)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

func TestFieldSetContains(t *testing.T) {
	set := snapshot.NewFieldSet("onlineAttendeeAmount", "confConfigInfo", `a\.b.c`)
	tests := []struct {
		path           string
		within, shares bool
	}{
		{path: "onlineAttendeeAmount", within: true, shares: true},
		{path: "confConfigInfo.isAutoMute", within: true, shares: true},
		{path: "confConfigInfo.a.b", within: true, shares: true},
		{path: `a\.b.c`, within: true, shares: true},
		{path: `a\.b.c.d`, within: true, shares: true},
		{path: `a\.b`, within: false, shares: true},
		{path: "a.b.c", within: false, shares: false},
		{path: "a", within: false, shares: false},
		{path: "onlineAttendeeAmountX", within: false, shares: false},
		{path: "subject", within: false, shares: false},
		{path: "", within: false, shares: false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.within, set.Contains(tt.path), "Contains(%q)", tt.path)
		assert.Equal(t, tt.shares, set.Overlaps(tt.path), "Overlaps(%q)", tt.path)
	}
	var empty snapshot.FieldSet
	assert.False(t, empty.Contains("subject"))
	assert.False(t, empty.Overlaps("subject"))
}

func TestFieldSetCoversAndFilter(t *testing.T) {
	set, err := snapshot.ParseFieldSet("onlineAttendeeAmount,confConfigInfo")
	require.NoError(t, err)
	amount := snapshot.FieldChange{Field: "onlineAttendeeAmount", Old: json.RawMessage(`3`), New: json.RawMessage(`4`)}
	mute := snapshot.FieldChange{Field: "confConfigInfo.isAutoMute", Old: json.RawMessage(`true`), New: json.RawMessage(`false`)}
	subject := snapshot.FieldChange{Field: "subject", Old: json.RawMessage(`"a"`), New: json.RawMessage(`"b"`)}
	tests := []struct {
		name   string
		change snapshot.Change
		covers bool
		kept   []snapshot.FieldChange
	}{
		{name: "only ignored fields", change: snapshot.Change{Kind: snapshot.Changed, Fields: []snapshot.FieldChange{mute, amount}}, covers: true},
		{name: "one field not ignored", change: snapshot.Change{Kind: snapshot.Changed, Fields: []snapshot.FieldChange{amount, subject}},
			kept: []snapshot.FieldChange{subject}},
		{name: "nothing ignored", change: snapshot.Change{Kind: snapshot.Changed, Fields: []snapshot.FieldChange{subject}},
			kept: []snapshot.FieldChange{subject}},
		{name: "no fields", change: snapshot.Change{Kind: snapshot.Changed}},
		{name: "started is never covered", change: snapshot.Change{Kind: snapshot.Started}},
		{name: "ended is never covered", change: snapshot.Change{Kind: snapshot.Ended}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := append([]snapshot.FieldChange(nil), tt.change.Fields...)
			assert.Equal(t, tt.covers, set.Covers(tt.change))
			got := set.Filter(tt.change.Fields)
			if len(tt.kept) == 0 {
				assert.Empty(t, got)
			} else {
				assert.Equal(t, tt.kept, got)
			}
			assert.Equal(t, before, tt.change.Fields, "Filter modifies nothing")
		})
	}

	var empty snapshot.FieldSet
	assert.False(t, empty.Covers(snapshot.Change{Kind: snapshot.Changed, Fields: []snapshot.FieldChange{amount}}), "the empty set covers nothing")
	fields := []snapshot.FieldChange{amount, subject}
	assert.Equal(t, fields, empty.Filter(fields))
}

func TestFieldSetFilterKeepsWhatItCan(t *testing.T) {
	fields := []snapshot.FieldChange{{Field: "a"}, {Field: "b"}, {Field: "c"}}
	set := snapshot.NewFieldSet("x")
	got := set.Filter(fields)
	assert.Equal(t, fields, got)
	assert.Zero(t, testing.AllocsPerRun(10, func() { _ = set.Filter(fields) }), "nothing filtered, nothing copied")
}
