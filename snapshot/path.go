package snapshot

import "strings"

// This file is the one place that spells field paths (FieldChange.Field):
// everything that builds or reads one goes through these functions, so
// that the escaping stays the same everywhere.

// pathSep separates the keys of a path; pathEscape makes the next byte of
// a key literal.
const (
	pathSep    = '.'
	pathEscape = '\\'
)

// JoinPath returns the path of a field, given the keys that lead to it from
// the record, outermost first: JoinPath("confConfigInfo", "isAutoMute") is
// "confConfigInfo.isAutoMute". Dots and backslashes inside a key are
// escaped, as FieldChange describes, so that SplitPath gives the keys back.
func JoinPath(keys ...string) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(pathSep)
		}
		writeKey(&b, k)
	}
	return b.String()
}

// SplitPath returns the keys that a path names, outermost first: the
// inverse of JoinPath. The path "" is the key "" (or, for a change of a
// whole value that is not an object, that value; see CompareRecords).
//
// SplitPath never fails: in a path that JoinPath did not write, a
// backslash makes whatever follows it literal, and a backslash at the end
// stands for itself.
func SplitPath(path string) []string {
	if strings.IndexByte(path, pathEscape) < 0 {
		return strings.Split(path, string(pathSep))
	}
	var keys []string
	var key strings.Builder
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == pathEscape && i+1 < len(path):
			i++
			key.WriteByte(path[i])
		case c == pathSep:
			keys = append(keys, key.String())
			key.Reset()
		default:
			key.WriteByte(c)
		}
	}
	return append(keys, key.String())
}

// nextKey splits the first key off path as SplitPath reads it, without
// copying unless the key holds an escape: the key, what follows its
// separator, and whether a separator followed.
func nextKey(path string) (key, rest string, more bool) {
	i := strings.IndexAny(path, `.\`)
	switch {
	case i < 0:
		return path, "", false
	case path[i] == pathSep:
		return path[:i], path[i+1:], true
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == pathEscape && i+1 < len(path):
			i++
			b.WriteByte(path[i])
		case c == pathSep:
			return b.String(), path[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), "", false
}

// appendKey returns the path of the member key of the value at path; root
// is set when that value is the record itself, whose members have no
// prefix. (A path alone cannot tell: "" is both the record and its key "".)
func appendKey(path string, root bool, key string) string {
	if root {
		return escapeKey(key)
	}
	return path + string(pathSep) + escapeKey(key)
}

// escapeKey returns key as it is spelled within a path.
func escapeKey(key string) string {
	if !strings.ContainsAny(key, `.\`) {
		return key
	}
	var b strings.Builder
	writeKey(&b, key)
	return b.String()
}

func writeKey(b *strings.Builder, key string) {
	if !strings.ContainsAny(key, `.\`) {
		b.WriteString(key)
		return
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c == pathSep || c == pathEscape {
			b.WriteByte(pathEscape)
		}
		b.WriteByte(key[i])
	}
}
