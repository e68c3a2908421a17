package snapshot

import (
	"fmt"
	"slices"
	"strings"
)

// FieldSet is a set of fields named by path (see FieldChange), such as the
// fields whose changes alone are not worth an event. A path in the set
// covers the field it names and every field inside it: "confConfigInfo"
// covers "confConfigInfo.isAutoMute".
//
// The zero value is the empty set. A FieldSet is not modified once built,
// so it is safe for concurrent use.
type FieldSet struct {
	root *fieldNode
	// paths are the set's paths as JoinPath spells them, sorted, unique.
	paths []string
}

// fieldNode is one key of a path in the set; end marks a whole path.
type fieldNode struct {
	end  bool
	next map[string]*fieldNode
}

// NewFieldSet returns the set of the given paths, each read with
// SplitPath; duplicates count once.
func NewFieldSet(paths ...string) FieldSet {
	var s FieldSet
	for _, p := range paths {
		s.add(SplitPath(p))
	}
	return s.done()
}

// ParseFieldSet reads a set as an operator writes it, for example in
// MEETWATCH_IGNORE_FIELDS: paths separated by commas, spaces around each
// trimmed; "" is the empty set.
//
// Each path is spelled as in FieldChange: keys joined by dots, and within
// a key a backslash makes the next character literal, so the key "a.b" is
// `a\.b`, and a comma within a key is `\,`. A path with an empty key
// ("a..b", a trailing dot), an empty path (",,"), a trailing lone
// backslash, or a key ending in "[]" (arrays are compared whole, so name
// the array) is an error wrapping ErrInvalidField, naming the path.
func ParseFieldSet(spec string) (FieldSet, error) {
	var s FieldSet
	if strings.TrimSpace(spec) == "" {
		return s, nil
	}
	for _, p := range splitUnescaped(spec, ',') {
		p = strings.TrimSpace(p)
		keys, err := parseFieldPath(p)
		if err != nil {
			return FieldSet{}, err
		}
		s.add(keys)
	}
	return s.done(), nil
}

// splitUnescaped splits s at each sep that no backslash escapes; escapes
// are kept in the parts.
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case pathEscape:
			i++
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// parseFieldPath reads one path of a FieldSet strictly.
func parseFieldPath(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("%w %q: empty (a comma too many?)", ErrInvalidField, p)
	}
	var keys []string
	var key strings.Builder
	plain := 0 // bytes at the end of key written without an escape
	endKey := func() error {
		k := key.String()
		switch {
		case k == "":
			return fmt.Errorf("%w %q: empty key", ErrInvalidField, p)
		case plain >= 2 && strings.HasSuffix(k, "[]"):
			return fmt.Errorf("%w %q: \"[]\" after a key (arrays are compared whole: name the array)", ErrInvalidField, p)
		}
		keys = append(keys, k)
		key.Reset()
		plain = 0
		return nil
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == pathEscape:
			if i+1 == len(p) {
				return nil, fmt.Errorf("%w %q: ends in a lone backslash", ErrInvalidField, p)
			}
			i++
			key.WriteByte(p[i])
			plain = 0
		case c == pathSep:
			if err := endKey(); err != nil {
				return nil, err
			}
		default:
			key.WriteByte(c)
			plain++
		}
	}
	if err := endKey(); err != nil {
		return nil, err
	}
	return keys, nil
}

func (s *FieldSet) add(keys []string) {
	if s.root == nil {
		s.root = &fieldNode{}
	}
	n := s.root
	for _, k := range keys {
		child := n.next[k]
		if child == nil {
			if n.next == nil {
				n.next = make(map[string]*fieldNode)
			}
			child = &fieldNode{}
			n.next[k] = child
		}
		n = child
	}
	if !n.end {
		n.end = true
		s.paths = append(s.paths, JoinPath(keys...))
	}
}

func (s FieldSet) done() FieldSet {
	slices.Sort(s.paths)
	return s
}

// Len returns the number of paths in the set.
func (s FieldSet) Len() int { return len(s.paths) }

// Paths returns the set's paths as JoinPath spells them, sorted.
func (s FieldSet) Paths() []string { return slices.Clone(s.paths) }

// String returns the set as ParseFieldSet reads it.
func (s FieldSet) String() string {
	var b strings.Builder
	for i, p := range s.paths {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, k := range SplitPath(p) {
			if j > 0 {
				b.WriteByte(pathSep)
			}
			writeSpecKey(&b, k)
		}
	}
	return b.String()
}

// writeSpecKey writes key as ParseFieldSet reads it: escaped as in a path,
// and a comma or a final "[]" escaped too.
func writeSpecKey(b *strings.Builder, key string) {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == pathSep || c == pathEscape || c == ',' || c == ']' && i == len(key)-1 && i > 0 && key[i-1] == '[' {
			b.WriteByte(pathEscape)
		}
		b.WriteByte(c)
	}
}

// Contains reports whether the field at path (as FieldChange spells it) is
// in the set: named by one of its paths, or inside a field that is.
func (s FieldSet) Contains(path string) bool {
	in, _ := s.walk(path)
	return in
}

// Overlaps reports whether the field at path is in the set (see Contains)
// or holds a field that is: whether the two share any value.
func (s FieldSet) Overlaps(path string) bool {
	_, shared := s.walk(path)
	return shared
}

// walk follows path down the set. in: the path, or a field it lies in, is
// in the set. shared: that, or the path leads on to a field of the set.
func (s FieldSet) walk(path string) (in, shared bool) {
	if s.root == nil {
		return false, false
	}
	n := s.root
	for rest, more := path, true; more; {
		var k string
		k, rest, more = nextKey(rest)
		if n = n.next[k]; n == nil {
			return false, false
		}
		if n.end {
			return true, true
		}
	}
	return false, true // a node on the way to a path of the set: it holds one
}

// Covers reports whether c is a change confined to the set: a Changed
// change with every one of its Fields in the set. Started and ended
// meetings are never covered.
func (s FieldSet) Covers(c Change) bool {
	if c.Kind != Changed || len(c.Fields) == 0 || s.root == nil {
		return false
	}
	for _, fc := range c.Fields {
		if !s.Contains(fc.Field) {
			return false
		}
	}
	return true
}

// Filter returns the changes of fields that are not in the set, in their
// order. fields is returned as it is when none is in the set, and is
// never modified.
func (s FieldSet) Filter(fields []FieldChange) []FieldChange {
	if s.root == nil {
		return fields
	}
	for i, fc := range fields {
		if !s.Contains(fc.Field) {
			continue
		}
		out := slices.Clone(fields[:i:i])
		for _, fc := range fields[i+1:] {
			if !s.Contains(fc.Field) {
				out = append(out, fc)
			}
		}
		return out
	}
	return fields
}
