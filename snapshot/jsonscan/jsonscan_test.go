package jsonscan_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

var samples = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `1E2`, `true`, `false`, `null`,
	`{"a":1,"b":[1,2,{"c":"\u00e9\n"}],"d":null}`,
	` { "a" : [ 1 , 2 ] } `,
	`{"a":1,}`, `[1,]`, `{"a"}`, `{"a":}`, `{a:1}`, `01`, `1.`, `1e`, `-`, `.5`, `+1`,
	`"\x"`, `"\u12G4"`, "\"\x01\"", `tru`, `nul`, `{"a":1}}`, `[1 2]`, `{"a":1 "b":2}`,
	`{"a":"b`, `[`, `{`, `"`, ``, ` `,
}

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range samples {
		valid, compact := jsonscan.Valid([]byte(s))
		assert.Equal(t, json.Valid([]byte(s)), valid, "%q", s)
		if valid {
			var buf bytes.Buffer
			require.NoError(t, json.Compact(&buf, []byte(s)))
			assert.Equal(t, buf.String() == s, compact, "%q compact", s)
		}
	}
}

// Strings are read eight bytes at a time: every byte that a string
// cannot hold as it is must be found at every place in those eight bytes,
// and in the bytes after the last eight.
func TestStringFindsEverySpecialByte(t *testing.T) {
	for _, c := range []byte{0x00, 0x01, 0x1f, 0x20, '"', '\\', 0x7f, 0x80, 0xc3, 0xff, 'a'} {
		for n := 1; n <= 20; n++ {
			for at := range n {
				for lead := range 8 { // where the string starts within eight bytes
					str := bytes.Repeat([]byte("x"), n)
					str[at] = c
					src := append(append(append(bytes.Repeat([]byte(" "), lead), '"'), str...), '"')
					valid, _ := jsonscan.Valid(src)
					assert.Equal(t, json.Valid(src), valid, "%q", src)
				}
			}
		}
	}
}

func TestObjectMembers(t *testing.T) {
	src := []byte(`{"confUUID":"u1", "n":{"x":[1]},"e\"k":2}`)
	s := jsonscan.Scanner{Src: src}
	var keys, values []string
	end, err := s.Object(0, func(key []byte, _ bool, at int) (int, error) {
		start, end, err := s.Value(at)
		keys, values = append(keys, string(key)), append(values, string(src[start:end]))
		return end, err
	})
	require.NoError(t, err)
	assert.Equal(t, len(src), end)
	assert.Equal(t, []string{"confUUID", "n", `e\"k`}, keys)
	assert.Equal(t, []string{`"u1"`, `{"x":[1]}`, `2`}, values)
	assert.True(t, s.Spaced)
}

func TestDepthIsBounded(t *testing.T) {
	deep := bytes.Repeat([]byte("["), 20000)
	valid, _ := jsonscan.Valid(deep)
	assert.False(t, valid)
}

func FuzzValid(f *testing.F) {
	for _, s := range samples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		valid, compact := jsonscan.Valid(src)
		if valid != json.Valid(src) {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", src, valid, !valid)
		}
		if valid {
			var buf bytes.Buffer
			if err := json.Compact(&buf, src); err != nil {
				t.Fatal(err)
			}
			if (buf.String() == string(src)) != compact {
				t.Fatalf("Valid(%q): compact %v", src, compact)
			}
		}
	})
}
