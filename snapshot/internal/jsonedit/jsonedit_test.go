package jsonedit_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/internal/jsonedit"
)

// tree marks "s", "o.s" and "a[].s", and "o" and "a" whole when they come
// in another shape.
func tree() *jsonedit.Node {
	leaf := func(mark string) *jsonedit.Node { return &jsonedit.Node{Mark: mark} }
	return &jsonedit.Node{Fields: map[string]*jsonedit.Node{
		"s": leaf("s"),
		"o": {Fields: map[string]*jsonedit.Node{"s": leaf("o.s")}, Else: "o"},
		"a": {Elems: &jsonedit.Node{Fields: map[string]*jsonedit.Node{"s": leaf("a[].s")}}, Else: "a"},
	}}
}

// upper replaces every marked value with its mark, except null.
func upper(mark string, v []byte) []byte {
	if string(v) == "null" {
		return nil
	}
	return []byte(`"<` + mark + `>"`)
}

func TestReplace(t *testing.T) {
	tests := []struct {
		name, in string
		// want is "" when nothing is replaced.
		want string
	}{
		{name: "nothing marked", in: `{"x":1,"y":{"s":2},"o":{"t":3}}`},
		{name: "kept by the function", in: `{"s":null,"o":{"s":null}}`},
		{name: "top level", in: `{"x":1,"s":"v"}`, want: `{"x":1,"s":"<s>"}`},
		{name: "nested, any value", in: `{"o":{"s":{"deep":[1,"}"]},"t":1}}`, want: `{"o":{"s":"<o.s>","t":1}}`},
		{name: "every element", in: `{"a":[{"s":1},{"t":3},{"s":[4]},null]}`, want: `{"a":[{"s":"<a[].s>"},{"t":3},{"s":"<a[].s>"},null]}`},
		{name: "an element of another shape takes the array", in: `{"a":[{"s":1},2],"s":3}`, want: `{"a":"<a>","s":"<s>"}`},
		{name: "another shape", in: `{"o":[{"s":1}],"a":{"s":2}}`, want: `{"o":"<o>","a":"<a>"}`},
		{name: "null fits every shape", in: `{"o":null,"a":null}`},
		{name: "escaped key", in: `{"\u0073":1}`, want: `{"\u0073":"<s>"}`},
		{name: "duplicates", in: `{"s":1,"s":2}`, want: `{"s":"<s>","s":"<s>"}`},
		{name: "spacing kept", in: " { \"s\" : 1 ,\n\"x\" : 1.50 } ", want: " { \"s\" : \"<s>\" ,\n\"x\" : 1.50 } "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jsonedit.Replace([]byte(tt.in), tree(), upper)
			require.NoError(t, err)
			if tt.want == "" {
				assert.Nil(t, got, "nothing replaced, nothing copied")
				return
			}
			assert.Equal(t, tt.want, string(got))
		})
	}
}

// ReplaceInto edits in the buffer it is given, from its start, whatever it
// held, and grows it when it is too small.
func TestReplaceInto(t *testing.T) {
	in := []byte(`{"x":1,"s":"v"}`)
	roomy := []byte(strings.Repeat("#", 512))
	got, err := jsonedit.ReplaceInto(roomy, in, tree(), upper)
	require.NoError(t, err)
	assert.Equal(t, `{"x":1,"s":"<s>"}`, string(got))
	assert.Same(t, &roomy[0], &got[0], "written into the buffer given")

	small := make([]byte, 0, 4)
	got, err = jsonedit.ReplaceInto(small, in, tree(), upper)
	require.NoError(t, err)
	assert.Equal(t, `{"x":1,"s":"<s>"}`, string(got))

	got, err = jsonedit.ReplaceInto(roomy, []byte(`{"x":1}`), tree(), upper)
	require.NoError(t, err)
	assert.Nil(t, got, "nothing replaced, nothing written")
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "nothing marked", in: `{"x":1}`},
		{name: "first", in: `{"s":1,"x":2}`, want: `{"x":2}`},
		{name: "last", in: `{"x":2,"s":1}`, want: `{"x":2}`},
		{name: "only", in: `{"s":1}`, want: `{}`},
		{name: "nested and in elements", in: `{"o":{"s":1},"a":[{"s":2,"t":3},{"s":4}]}`, want: `{"o":{},"a":[{"t":3},{}]}`},
		{name: "another shape goes whole", in: `{"x":1,"a":[{"s":2},3],"o":"s"}`, want: `{"x":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jsonedit.Remove([]byte(tt.in), tree())
			require.NoError(t, err)
			if tt.want == "" {
				assert.Nil(t, got)
				return
			}
			assert.Equal(t, tt.want, string(got))
			assert.True(t, json.Valid(got))
		})
	}
}

// A value of another shape than the tree expects, with no Else above it
// to say what to do, fails the edit rather than pass through unedited.
func TestAnotherShapeWithoutElseFails(t *testing.T) {
	for _, in := range []string{`["s",{"s":1}]`, `"s"`} {
		_, err := jsonedit.Replace([]byte(in), tree(), upper)
		assert.ErrorIs(t, err, jsonedit.ErrShape, in)
		_, err = jsonedit.Remove([]byte(in), tree())
		assert.ErrorIs(t, err, jsonedit.ErrShape, in)
	}
	noElse := &jsonedit.Node{Fields: map[string]*jsonedit.Node{"o": {Fields: map[string]*jsonedit.Node{"s": {Mark: "o.s"}}}}}
	_, err := jsonedit.Remove([]byte(`{"o":[{"s":1}]}`), noElse)
	assert.ErrorIs(t, err, jsonedit.ErrShape)
}

func TestEditErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "empty", in: ``, want: "unexpected end of JSON"},
		{name: "truncated", in: `{"s":1`, want: "unexpected end of JSON"},
		{name: "unterminated key", in: `{"s`, want: "unexpected end of JSON"},
		{name: "missing colon", in: `{"s" 1}`, want: `unexpected '1' at offset 5`},
		{name: "trailing data", in: `{"x":1} 2`, want: "unexpected data at offset 7"},
		{name: "bad escape in a key", in: `{"\q":1}`, want: "decoding key at offset 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := jsonedit.Remove([]byte(tt.in), tree())
			assert.ErrorContains(t, err, tt.want)
			_, err = jsonedit.Replace([]byte(tt.in), tree(), upper)
			assert.ErrorContains(t, err, tt.want)
		})
	}
	_, err := jsonedit.Replace([]byte(`{}`), tree(), nil)
	assert.Error(t, err, "a nil function must not mean removal")
}

func TestNoEditAllocatesNothing(t *testing.T) {
	src := []byte(`{"x":1,"s":null,"o":{"s":null},"a":[{"s":null}]}`)
	plain := []byte(`{"x":1,"o":{"t":2},"a":[{"t":3}]}`)
	root := tree()
	assert.Zero(t, testing.AllocsPerRun(10, func() { _, _ = jsonedit.Replace(src, root, upper) }))
	assert.Zero(t, testing.AllocsPerRun(10, func() { _, _ = jsonedit.Remove(plain, root) }))
}

func TestEqual(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{name: "both absent", a: ``, b: ``, want: true},
		{name: "absent is not null", a: ``, b: `null`, want: false},
		{name: "key order and spacing", a: `{"a":1,"b":[true]}`, b: ` { "b" : [ true ] , "a" : 1 } `, want: true},
		{name: "numbers as written", a: `1.0`, b: `1`, want: false},
		{name: "escapes", a: `"\u0041"`, b: `"A"`, want: true},
		{name: "not JSON, as text", a: `{"a":`, b: `{"a":`, want: true},
		{name: "not JSON differs from other text", a: `{"a":`, b: `{"b":`, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, jsonedit.Equal([]byte(tt.a), []byte(tt.b)))
			assert.Equal(t, tt.want, jsonedit.Equal([]byte(tt.b), []byte(tt.a)))
		})
	}
}

func TestDecode(t *testing.T) {
	assert.Equal(t, jsonedit.Absent, jsonedit.Decode(nil))
	assert.Nil(t, jsonedit.Decode([]byte(`null`)))
	assert.Equal(t, json.Number("1.50"), jsonedit.Decode([]byte(`1.50`)))
	assert.Equal(t, "{", jsonedit.Decode([]byte(`{`)), "not JSON: its text")
}
