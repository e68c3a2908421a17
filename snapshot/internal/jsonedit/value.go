package jsonedit

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// absentValue is the type of Absent, unlike any value JSON decodes to.
type absentValue struct{}

// Absent is what Decode returns for a value that one side does not have,
// which keeps "absent" apart from an explicit null.
var Absent any = absentValue{}

// Decode decodes one JSON value for comparison by meaning: numbers stay as
// written (json.Number), so 1.0 and 1 differ and no precision is lost.
// Empty raw means the value is absent and gives Absent; raw that is not
// JSON gives its text as a string, to be compared as opaque text.
func Decode(raw []byte) any {
	if len(raw) == 0 {
		return Absent
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(raw) // not JSON: compared as opaque text
	}
	return v
}

// Equal reports whether two JSON values mean the same, as Decode reads
// them: key order and white space do not count. Empty stands for an absent
// value, equal only to another absent one.
func Equal(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	return reflect.DeepEqual(Decode(a), Decode(b))
}
