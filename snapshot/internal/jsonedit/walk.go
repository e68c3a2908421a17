package jsonedit

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Member is one object member that Walk found.
type Member struct {
	// Keys lead from the root object to the member, outermost first,
	// decoded as encoding/json decodes them. The slice is reused from one
	// call to the next: copy it to keep it.
	Keys []string
	// Start and End delimit the member's value: src[Start:End].
	Start, End int
	// Elems is the number of elements of an array value, 0 for any other.
	Elems int
}

// Errors returned by Walk.
var (
	// ErrNotObject means the value Walk was given is not a JSON object.
	ErrNotObject = errors.New("not a JSON object")
)

// Walk calls visit for every member of the JSON object src and, through
// objects only, of every object nested in it: the members of an object
// before the object itself, in the order they are written. Arrays are not
// entered; an array's member reports how many elements it has.
//
// src must be valid JSON: as with Replace, the walk stays in bounds on any
// input but reports only the syntax errors it meets.
func Walk(src []byte, visit func(Member)) error {
	w := walker{editor: editor{src: src}, visit: visit}
	i := w.skipWS(0)
	if i >= len(src) || src[i] != '{' {
		return ErrNotObject
	}
	end, err := w.object(i)
	if err != nil {
		return err
	}
	if w.skipWS(end) != len(src) {
		return w.syntaxError(w.skipWS(end))
	}
	return nil
}

// walker reuses the editor's scanning, and never edits.
type walker struct {
	editor
	visit func(Member)
	keys  []string
}

// object walks the object at i and returns where it ends.
func (w *walker) object(i int) (int, error) {
	i = w.skipWS(i + 1)
	if i < len(w.src) && w.src[i] == '}' {
		return i + 1, nil
	}
	for {
		keyStart := w.skipWS(i)
		keyEnd, escaped, err := w.scanString(keyStart)
		if err != nil {
			return 0, err
		}
		key, err := w.key(keyStart, keyEnd, escaped)
		if err != nil {
			return 0, err
		}
		i = w.skipWS(keyEnd)
		if i >= len(w.src) || w.src[i] != ':' {
			return 0, w.syntaxError(i)
		}
		valStart := w.skipWS(i + 1)
		w.keys = append(w.keys, key)
		var valEnd, elems int
		switch {
		case valStart < len(w.src) && w.src[valStart] == '{':
			valEnd, err = w.object(valStart)
		case valStart < len(w.src) && w.src[valStart] == '[':
			valEnd, elems, err = w.array(valStart)
		default:
			valEnd, err = w.skipValue(valStart)
		}
		if err != nil {
			return 0, err
		}
		w.visit(Member{Keys: w.keys, Start: valStart, End: valEnd, Elems: elems})
		w.keys = w.keys[:len(w.keys)-1]
		i = w.skipWS(valEnd)
		if i >= len(w.src) {
			return 0, errTruncated
		}
		switch w.src[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return 0, w.syntaxError(i)
		}
	}
}

// array skips the array at i, counting its elements.
func (w *walker) array(i int) (end, elems int, err error) {
	i = w.skipWS(i + 1)
	if i < len(w.src) && w.src[i] == ']' {
		return i + 1, 0, nil
	}
	for {
		end, err := w.skipValue(w.skipWS(i))
		if err != nil {
			return 0, 0, err
		}
		elems++
		i = w.skipWS(end)
		if i >= len(w.src) {
			return 0, 0, errTruncated
		}
		switch w.src[i] {
		case ',':
			i++
		case ']':
			return i + 1, elems, nil
		default:
			return 0, 0, w.syntaxError(i)
		}
	}
}

// key returns the key src[start:end], a JSON string, decoded.
func (w *walker) key(start, end int, escaped bool) (string, error) {
	if !escaped {
		return string(w.src[start+1 : end-1]), nil
	}
	var k string
	if err := json.Unmarshal(w.src[start:end], &k); err != nil {
		return "", fmt.Errorf("decoding key at offset %d: %w", start, err)
	}
	return k, nil
}
