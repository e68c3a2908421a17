// Package jsonedit edits JSON values in place, byte for byte: it walks a
// value along a tree of keys and replaces or removes the values the tree
// marks, leaving every other byte (spacing, escapes, number spellings, key
// order, duplicate keys) as it was. It also holds the one decoding of JSON
// values by meaning that the diff and the redaction policy share, so that
// both agree on when two values are the same.
//
// Redaction needs this rather than encoding/json: decoding a record and
// encoding it again would rewrite what the API sent, and a record with
// nothing to redact must cost no copy at all.
package jsonedit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Node says what to do with the JSON value found at its place in a tree,
// and below it.
type Node struct {
	// Mark, when not empty, marks the value here to be edited whole;
	// Fields and Elems are then not used. It is handed to Replace's
	// function, so a caller can tell its marks apart.
	Mark string
	// Fields applies to the members of an object value, by decoded key.
	Fields map[string]*Node
	// Elems applies to every element of an array value.
	Elems *Node
	// Else, when not empty, marks the value here whole, as Mark would,
	// when it is not null and it, or a value below it, has another shape
	// than Fields or Elems expect (an object, an array): the tree cannot
	// tell where in such a value what it marks is, so it takes all of it.
	// Of a value of another shape and no Else above it, Replace and
	// Remove fail with ErrShape.
	Else string
}

// ErrShape means a value has another shape than the tree expects, and no
// node above it says what to do then (see Node.Else).
var ErrShape = errors.New("jsonedit: a value has another shape than expected")

// Replace returns src with every value that root marks replaced by what
// replace returns for it; replace returns nil to keep a value. Each
// replacement is copied at once, so replace may reuse one buffer.
//
// The result is nil when nothing was replaced, so that the caller can keep
// sharing src; nothing is allocated then. src must be valid JSON (the walk
// stays in bounds on any input, but only reports the syntax errors it
// meets).
func Replace(src []byte, root *Node, replace func(mark string, value []byte) []byte) ([]byte, error) {
	return ReplaceInto(nil, src, root, replace)
}

// ReplaceInto is Replace writing its result from the start of dst's
// array, grown when too small, so that a caller that copies each result
// away can edit many values in one buffer. The result, when not nil,
// shares dst's array or a larger one.
func ReplaceInto(dst, src []byte, root *Node, replace func(mark string, value []byte) []byte) ([]byte, error) {
	if replace == nil {
		return nil, errors.New("jsonedit: nil replace function")
	}
	e := editor{src: src, buf: dst[:0:cap(dst)]}
	if err := e.run(root, replace); err != nil {
		return nil, err
	}
	return e.out, nil
}

// Remove returns src with every object member whose value root marks
// removed, key and all, commas mended. Marked array elements are kept: an
// element has no key to remove with it.
//
// As with Replace, the result is nil when nothing was removed, and src
// must be valid JSON.
func Remove(src []byte, root *Node) ([]byte, error) {
	e := editor{src: src}
	if err := e.run(root, nil); err != nil {
		return nil, err
	}
	return e.out, nil
}

// editor walks one JSON value and copies it with edits. It allocates only
// at the first edit, so a value with nothing to edit costs no copy.
//
// The replace function is passed down the walk rather than kept here: a
// function stored beside the output buffer would be taken to escape with
// it, and the caller's closure would cost an allocation on every call.
type editor struct {
	src []byte
	// out is nil until the first edit; src[:last] has been copied to it.
	out  []byte
	last int
	// buf, when not nil, is where out starts (see ReplaceInto).
	buf []byte
}

// replaceFunc replaces marked values; nil removes them with their keys.
type replaceFunc = func(mark string, value []byte) []byte

// editRoom is the spare capacity of the output: replacements are usually
// a little longer than what they replace.
const editRoom = 192

var errTruncated = errors.New("unexpected end of JSON")

func (e *editor) run(n *Node, replace replaceFunc) error {
	i := e.skipWS(0)
	end, misshapen, err := e.walkValue(i, n, replace)
	if err != nil {
		return err
	}
	if misshapen {
		return ErrShape
	}
	if e.out != nil {
		e.out = append(e.out, e.src[e.last:]...)
	}
	if e.skipWS(end) != len(e.src) {
		return fmt.Errorf("unexpected data at offset %d", end)
	}
	return nil
}

func (e *editor) edit(start, end int, repl []byte) {
	if e.out == nil {
		e.out = slices.Grow(e.buf, len(e.src)+editRoom)
	}
	e.out = append(e.out, e.src[e.last:start]...)
	e.out = append(e.out, repl...)
	e.last = end
}

func (e *editor) skipWS(i int) int {
	for i < len(e.src) {
		switch e.src[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

func (e *editor) syntaxError(i int) error {
	if i >= len(e.src) {
		return errTruncated
	}
	return fmt.Errorf("unexpected %q at offset %d", e.src[i], i)
}

// walkValue applies n to the value at i and returns where it ends, and
// whether it, or a value below it that no Else took whole, has another
// shape than n expects.
func (e *editor) walkValue(i int, n *Node, replace replaceFunc) (int, bool, error) {
	if i < len(e.src) {
		switch {
		case e.src[i] == '{' && n.Fields != nil:
			return e.walkObject(i, n.Fields, replace)
		case e.src[i] == '[' && n.Elems != nil:
			return e.walkArray(i, n.Elems, replace)
		}
	}
	end, err := e.skipValue(i)
	if err != nil {
		return 0, false, err
	}
	expects := n.Fields != nil || n.Elems != nil
	return end, expects && string(e.src[i:end]) != "null", nil
}

func (e *editor) walkArray(i int, elems *Node, replace replaceFunc) (int, bool, error) {
	i = e.skipWS(i + 1)
	if i < len(e.src) && e.src[i] == ']' {
		return i + 1, false, nil
	}
	misshapen := false
	for {
		end, bad, err := e.walkValue(e.skipWS(i), elems, replace)
		if err != nil {
			return 0, false, err
		}
		misshapen = misshapen || bad
		i = e.skipWS(end)
		if i >= len(e.src) {
			return 0, false, errTruncated
		}
		switch e.src[i] {
		case ',':
			i++
		case ']':
			return i + 1, misshapen, nil
		default:
			return 0, false, e.syntaxError(i)
		}
	}
}

// saved is where the output stood, so that edits made below a value can
// be taken back when the value is taken whole after all.
type saved struct {
	out  int
	last int
	had  bool
}

func (e *editor) save() saved { return saved{len(e.out), e.last, e.out != nil} }

func (e *editor) restore(s saved) {
	if s.had {
		e.out = e.out[:s.out]
	} else {
		e.out = nil
	}
	e.last = s.last
}

func (e *editor) walkObject(i int, fields map[string]*Node, replace replaceFunc) (int, bool, error) {
	i = e.skipWS(i + 1)
	if i < len(e.src) && e.src[i] == '}' {
		return i + 1, false, nil
	}
	misshapen := false
	kept := false   // some member of this object is kept
	prevComma := -1 // the comma before the current member
	for {
		memberStart := e.skipWS(i)
		keyEnd, escaped, err := e.scanString(memberStart)
		if err != nil {
			return 0, false, err
		}
		child, err := e.lookup(fields, memberStart, keyEnd, escaped)
		if err != nil {
			return 0, false, err
		}
		i = e.skipWS(keyEnd)
		if i >= len(e.src) || e.src[i] != ':' {
			return 0, false, e.syntaxError(i)
		}
		valStart := e.skipWS(i + 1)
		var valEnd int
		var mark string
		if child != nil {
			mark = child.Mark
		}
		if child != nil && mark == "" {
			before := e.save()
			var bad bool
			valEnd, bad, err = e.walkValue(valStart, child, replace)
			if bad && child.Else != "" {
				e.restore(before) // taken whole: what was edited below goes
				mark = child.Else
			} else if bad {
				misshapen = true
			}
		} else {
			valEnd, err = e.skipValue(valStart)
		}
		if err != nil {
			return 0, false, err
		}
		i = e.skipWS(valEnd)
		if i >= len(e.src) || (e.src[i] != ',' && e.src[i] != '}') {
			return 0, false, e.syntaxError(i)
		}
		marked := mark != ""
		switch {
		case marked && replace != nil:
			if repl := replace(mark, e.src[valStart:valEnd]); repl != nil {
				e.edit(valStart, valEnd, repl)
			}
			kept = true
		case marked && kept:
			e.edit(prevComma, valEnd, nil) // `,"key":value`
		case marked && e.src[i] == ',':
			e.edit(memberStart, i+1, nil) // `"key":value,`
		case marked:
			e.edit(memberStart, valEnd, nil) // the only member left
		default:
			kept = true
		}
		if e.src[i] == '}' {
			return i + 1, misshapen, nil
		}
		prevComma = i
		i++
	}
}

// lookup finds the node for the key src[start:end], a JSON string. Keys
// are compared decoded, as Decode sees them, so an escaped spelling of a
// key matches too.
func (e *editor) lookup(fields map[string]*Node, start, end int, escaped bool) (*Node, error) {
	if !escaped {
		return fields[string(e.src[start+1:end-1])], nil
	}
	var key string
	if err := json.Unmarshal(e.src[start:end], &key); err != nil {
		return nil, fmt.Errorf("decoding key at offset %d: %w", start, err)
	}
	return fields[key], nil
}

// scanString returns the end of the JSON string at i and whether it holds
// escapes.
func (e *editor) scanString(i int) (end int, escaped bool, err error) {
	if i >= len(e.src) || e.src[i] != '"' {
		return 0, false, e.syntaxError(i)
	}
	for j := i + 1; ; {
		k := bytes.IndexByte(e.src[j:], '"')
		if k < 0 {
			return 0, false, errTruncated
		}
		q := j + k
		backslashes := 0
		for p := q - 1; p > i && e.src[p] == '\\'; p-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return q + 1, bytes.IndexByte(e.src[i+1:q], '\\') >= 0, nil
		}
		j = q + 1
	}
}

// skipValue returns the end of the value at i without looking inside it.
func (e *editor) skipValue(i int) (int, error) {
	if i >= len(e.src) {
		return 0, errTruncated
	}
	switch e.src[i] {
	case '"':
		end, _, err := e.scanString(i)
		return end, err
	case '{', '[':
		depth := 0
		for j := i; j < len(e.src); j++ {
			switch e.src[j] {
			case '"':
				end, _, err := e.scanString(j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errTruncated
	case ',', ':', '}', ']', ' ', '\t', '\r', '\n':
		return 0, e.syntaxError(i)
	default: // a number, true, false or null
		j := i
		for j < len(e.src) {
			switch e.src[j] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return j, nil
			}
			j++
		}
		return j, nil
	}
}
