package snapshot

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/meetwatch/meetwatch/snapshot/internal/jsonedit"
	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

// A NATS message, and so an event or a stored record, has a size limit
// (1 MiB by default). One meeting whose record is larger must not fail
// every poll: Trim makes it fit by replacing its largest values with a
// marker that says what was there.

// markerPrefix starts every truncation marker; the count and "}" follow.
const markerPrefix = `{"truncated":true,"count":`

// markerLen is the length of the marker for count n.
func markerLen(n int) int {
	digits := 1
	for ; n >= 10; n /= 10 {
		digits++
	}
	return len(markerPrefix) + digits + 1
}

func appendMarker(b []byte, n int) []byte {
	b = append(b, markerPrefix...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '}')
}

// IsMarker reports whether value is a truncation marker as Trim writes it:
// exactly {"truncated":true,"count":n}, compact, with n a whole number.
func IsMarker(value []byte) bool {
	rest, ok := bytes.CutPrefix(value, []byte(markerPrefix))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != '}' {
		return false
	}
	digits := rest[:len(rest)-1]
	if len(digits) > 1 && digits[0] == '0' {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// protectedKey reports whether a top-level key is one of the fields that
// Meeting decodes beside the record, which trimming must never change.
// encoding/json matches a key to a field without regard to case, so
// "SUBJECT" may be the subject too: every spelling is kept.
func protectedKey(key string) bool {
	for _, k := range [...]string{"confUUID", "conferenceID", "subject", "startTime"} {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// Trim returns m with its record cut to at most limit bytes, and the
// sorted paths (see JoinPath) of the fields it cut. A record within the
// limit is returned as it is, with no paths.
//
// A field is cut by replacing its value with the marker
//
//	{"truncated":true,"count":n}
//
// where n is the array's number of elements for an array, and otherwise
// the size of the value's JSON text in bytes (as it was in the record,
// for an object before anything inside it was cut). Values are cut
// largest first, until the record fits: first arrays and other values
// that are not objects, at any depth through objects (an array is cut
// whole, never inside); then, only if that is not enough, whole objects.
// A value is cut only when its marker is shorter than it, and a marker is
// never cut again. The fields Meeting decodes (confUUID, conferenceID,
// subject and startTime, in any spelling of their case) are never cut, so
// m's decoded fields stay true.
//
// Trim is deterministic: the same record and limit give the same bytes,
// so a record trimmed at every poll diffs against its trimmed self as
// equal. A lower limit cuts the same fields, or objects that hold them,
// and more; a trimmed record trimmed again with the same limit is kept as
// it is.
//
// When even cutting every value it may cut leaves the record larger than
// limit, Trim returns an error wrapping ErrTooLarge, together with that
// smallest record and its paths, for a caller that must go on anyway.
func Trim(m Meeting, limit int) (Meeting, []string, error) {
	// A Meeting's record is a JSON object in valid UTF-8 already.
	raw, paths, err := trimRaw(m.raw, limit, false)
	switch {
	case err != nil && raw == nil:
		return Meeting{}, nil, fmt.Errorf("trimming record %s: %w", m.UUID, err)
	case err != nil:
		err = fmt.Errorf("trimming record %s: %w", m.UUID, err)
	}
	if paths == nil {
		return m, nil, err
	}
	// Only values of fields that Meeting does not decode changed, each
	// for a compact marker, so raw keeps WithRaw's promises.
	return m.WithRaw(raw), paths, err
}

// TrimRaw is Trim for a record held as raw JSON, such as a record with its
// secrets stripped for publishing. raw must be a JSON object in valid
// UTF-8; a record within the limit is returned as it is, unchecked. The
// result shares nothing with raw when something was cut.
//
// On ErrTooLarge the smallest record is returned with the error; on any
// other error (raw is not a JSON object, or not valid JSON) nothing is.
func TrimRaw(raw json.RawMessage, limit int) (json.RawMessage, []string, error) {
	return trimRaw(raw, limit, true)
}

// trimRaw is TrimRaw; validate checks that raw is valid JSON in valid UTF-8.
func trimRaw(raw json.RawMessage, limit int, validate bool) (json.RawMessage, []string, error) {
	if len(raw) <= limit {
		return raw, nil, nil
	}
	if validate {
		if valid, _ := jsonscan.Valid(raw); !valid {
			return nil, nil, fmt.Errorf("trimming record: %w", errInvalidJSON(raw))
		}
		if !utf8.Valid(raw) {
			return nil, nil, fmt.Errorf("trimming record: %w", ErrInvalidUTF8)
		}
	}
	var cands []trimCandidate
	err := jsonedit.Walk(raw, func(mb jsonedit.Member) {
		if protectedKey(mb.Keys[0]) {
			return
		}
		v := raw[mb.Start:mb.End]
		c := trimCandidate{start: mb.Start, end: mb.End, object: v[0] == '{'}
		switch {
		case c.object && IsMarker(v):
			return
		case v[0] == '[':
			c.count = mb.Elems
		default:
			c.count = len(v)
		}
		if markerLen(c.count) >= len(v) && !c.object {
			return // cutting it would save nothing
		}
		c.path = JoinPath(mb.Keys...)
		cands = append(cands, c)
	})
	if err != nil {
		if err == jsonedit.ErrNotObject {
			err = ErrNotObject
		}
		return nil, nil, fmt.Errorf("trimming record: %w", err)
	}
	cut := planTrim(cands, len(raw), limit)
	out, paths := applyTrim(raw, cut)
	if len(out) > limit {
		return out, paths, fmt.Errorf("%w: %d bytes at the least, over the limit of %d", ErrTooLarge, len(out), limit)
	}
	return out, paths, nil
}

// errInvalidJSON returns why raw is not valid JSON.
func errInvalidJSON(raw []byte) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return ErrNotObject // not reached: json.Valid and Unmarshal agree
}

// trimCandidate is a value Trim may cut.
type trimCandidate struct {
	path       string
	start, end int
	// count is what the marker says: elements or bytes.
	count  int
	object bool
	// size is the value's size when its turn comes: for an object, after
	// the values inside it were cut.
	size int
}

func (c trimCandidate) saving() int { return c.size - markerLen(c.count) }

// byLargest orders candidates largest first; ties by path, then by place,
// so that the order depends on nothing but the record.
func byLargest(a, b trimCandidate) int {
	if c := cmp.Compare(b.size, a.size); c != 0 {
		return c
	}
	if c := strings.Compare(a.path, b.path); c != 0 {
		return c
	}
	return cmp.Compare(a.start, b.start)
}

// planTrim picks the candidates to cut so that a record of size bytes fits
// in limit, largest first: values that are not objects, then objects. It
// cuts all it may when nothing less will do.
func planTrim(cands []trimCandidate, size, limit int) []trimCandidate {
	var leaves, objects []trimCandidate
	for _, c := range cands {
		c.size = c.end - c.start
		if c.object {
			objects = append(objects, c)
		} else {
			leaves = append(leaves, c)
		}
	}
	slices.SortFunc(leaves, byLargest)
	var cut []trimCandidate
	for _, c := range leaves {
		if size <= limit {
			return cut
		}
		size -= c.saving()
		cut = append(cut, c)
	}
	if size <= limit || len(objects) == 0 {
		return cut
	}

	// Every leaf is cut. An object's size is now what is left of it, and
	// an object is always larger than any object inside it, so the
	// largest first comes before what it holds.
	starts := make([]int, len(cut))
	saved := make([]int, len(cut)+1) // saved[i]: savings of cut[:i] by start
	slices.SortFunc(cut, func(a, b trimCandidate) int { return cmp.Compare(a.start, b.start) })
	for i, c := range cut {
		starts[i] = c.start
		saved[i+1] = saved[i] + c.saving()
	}
	savedWithin := func(start, end int) int {
		i, _ := slices.BinarySearch(starts, start)
		j, _ := slices.BinarySearch(starts, end)
		return saved[j] - saved[i]
	}
	for i := range objects {
		objects[i].size -= savedWithin(objects[i].start, objects[i].end)
	}
	slices.SortFunc(objects, byLargest)
	var whole []trimCandidate // objects cut, by start
	for _, c := range objects {
		if size <= limit {
			break
		}
		if c.saving() <= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(whole, c.start, func(o trimCandidate, start int) int { return cmp.Compare(o.start, start) })
		if i > 0 && whole[i-1].end >= c.end {
			continue // inside an object already cut
		}
		size -= c.saving()
		whole = slices.Insert(whole, i, c)
	}
	return append(cut, whole...)
}

// applyTrim writes raw with the values of cut replaced by markers, and
// returns it with the sorted paths of the markers written. A value inside
// another value that is cut is not written, nor is its path.
func applyTrim(raw []byte, cut []trimCandidate) (json.RawMessage, []string) {
	if len(cut) == 0 {
		return raw, nil
	}
	slices.SortFunc(cut, func(a, b trimCandidate) int {
		// By place; of two with the same start, the outer one first.
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return cmp.Compare(b.end, a.end)
	})
	out := make([]byte, 0, len(raw))
	var paths []string
	last := 0
	for _, c := range cut {
		if c.start < last {
			continue // inside the value just cut
		}
		out = append(out, raw[last:c.start]...)
		out = appendMarker(out, c.count)
		last = c.end
		paths = append(paths, c.path)
	}
	out = append(out, raw[last:]...)
	slices.Sort(paths)
	return out, slices.Compact(paths)
}

// TruncatedPaths returns the sorted paths of the fields of the record raw
// that hold a truncation marker (see Trim) instead of their value, at any
// depth through objects; none for a record that holds none, or that is not
// a JSON object.
//
// A record trimmed before it was stored keeps its markers, and whatever
// is built from it later can tell its readers what was cut.
func TruncatedPaths(raw json.RawMessage) []string {
	if !bytes.Contains(raw, []byte(markerPrefix)) {
		return nil
	}
	var paths []string
	err := jsonedit.Walk(raw, func(mb jsonedit.Member) {
		if IsMarker(raw[mb.Start:mb.End]) {
			paths = append(paths, JoinPath(mb.Keys...))
		}
	})
	if err != nil {
		return nil
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}
