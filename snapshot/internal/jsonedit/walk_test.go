package jsonedit_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/internal/jsonedit"
)

// visited is one member as a test sees it.
type visited struct {
	keys  string // joined with "/"
	value string
	elems int
}

func walk(tb testing.TB, src string) ([]visited, error) {
	tb.Helper()
	var got []visited
	err := jsonedit.Walk([]byte(src), func(m jsonedit.Member) {
		got = append(got, visited{keys: strings.Join(m.Keys, "/"), value: src[m.Start:m.End], elems: m.Elems})
	})
	return got, err
}

func TestWalk(t *testing.T) {
	tests := []struct {
		name, in string
		want     []visited
	}{
		{name: "empty object", in: ` {} `},
		{name: "scalars", in: `{"a":1,"b":"x","c":null,"d":true}`, want: []visited{
			{keys: "a", value: "1"}, {keys: "b", value: `"x"`}, {keys: "c", value: "null"}, {keys: "d", value: "true"},
		}},
		{name: "objects, members first", in: `{"o":{"p":{"q":1},"r":2}}`, want: []visited{
			{keys: "o/p/q", value: "1"}, {keys: "o/p", value: `{"q":1}`}, {keys: "o/r", value: "2"}, {keys: "o", value: `{"p":{"q":1},"r":2}`},
		}},
		{name: "arrays counted, not entered", in: `{"a":[{"x":1},[2,3],"]"],"e":[ ]}`, want: []visited{
			{keys: "a", value: `[{"x":1},[2,3],"]"]`, elems: 3}, {keys: "e", value: `[ ]`},
		}},
		{name: "keys decoded", in: `{"\u0061.b":{"c\"":1}}`, want: []visited{
			{keys: `a.b/c"`, value: "1"}, {keys: "a.b", value: `{"c\"":1}`},
		}},
		{name: "spacing", in: " {\n \"a\" : [ 1 , 2 ] ,\"b\":{ } } ", want: []visited{
			{keys: "a", value: "[ 1 , 2 ]", elems: 2}, {keys: "b", value: "{ }"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := walk(t, tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestWalkErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{name: "array", in: `[1]`, want: jsonedit.ErrNotObject},
		{name: "empty", in: ``, want: jsonedit.ErrNotObject},
		{name: "truncated", in: `{"a":[1,2`},
		{name: "missing colon", in: `{"a" 1}`},
		{name: "trailing data", in: `{} x`},
		{name: "missing comma", in: `{"a":1 "b":2}`},
		{name: "bad escape in a key", in: `{"\q":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := walk(t, tt.in)
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestWalkKeysAreReused(t *testing.T) {
	var kept [][]string
	err := jsonedit.Walk([]byte(`{"a":{"b":1},"c":2}`), func(m jsonedit.Member) {
		kept = append(kept, slices.Clone(m.Keys))
	})
	require.NoError(t, err)
	assert.Equal(t, [][]string{{"a", "b"}, {"a"}, {"c"}}, kept)
}
