// Package jsonscan validates JSON and finds the values in it without
// decoding them. A listing of 100,000 meetings is 160 MB of JSON read
// every poll; encoding/json validates each byte several times over and
// allocates as it goes, while this reads each byte once and allocates
// nothing, which is what lets a poll cost little more than the listing.
//
// It accepts exactly what encoding/json's Valid accepts, except that it
// does not check UTF-8: callers that need valid UTF-8 check it with
// utf8.Valid, which is far faster.
package jsonscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Errors returned when src is not valid JSON.
var (
	// ErrTruncated means src ended inside a value.
	ErrTruncated = errors.New("unexpected end of JSON input")
	// ErrSyntax means src is not JSON; the error wrapping it says where.
	ErrSyntax = errors.New("invalid JSON")
)

// maxDepth bounds the nesting of arrays and objects, as encoding/json's
// does, so that hostile input cannot exhaust the stack.
const maxDepth = 10000

// Scanner reads JSON values from Src. Spaced is set once it has met
// whitespace outside a string: a value it read without setting it is
// already compact.
type Scanner struct {
	Src    []byte
	Spaced bool
	depth  int
}

// Space returns the offset of the first byte at or after i that is not
// whitespace.
func (s *Scanner) Space(i int) int {
	for i < len(s.Src) {
		switch s.Src[i] {
		case ' ', '\t', '\n', '\r':
			s.Spaced = true
			i++
		default:
			return i
		}
	}
	return i
}

// Value validates the JSON value that starts at i, after any whitespace,
// and returns its start and end.
func (s *Scanner) Value(i int) (start, end int, err error) {
	i = s.Space(i)
	if i >= len(s.Src) {
		return i, i, ErrTruncated
	}
	switch c := s.Src[i]; {
	case c == '{':
		end, err = s.Object(i, nil)
	case c == '[':
		end, err = s.Array(i, nil)
	case c == '"':
		end, _, err = s.String(i)
	case c == 't':
		end, err = s.literal(i, "true")
	case c == 'f':
		end, err = s.literal(i, "false")
	case c == 'n':
		end, err = s.literal(i, "null")
	case c == '-' || c >= '0' && c <= '9':
		end, err = s.number(i)
	default:
		err = s.syntax(i, "looking for the beginning of a value")
	}
	return i, end, err
}

// Object validates the object that starts at i (which must be '{') and
// returns its end. member, when not nil, is called with each member's key
// (the bytes between its quotes, escapes as written) and the offset of its
// value, and must read that value with the scanner (Value, or Array to see
// its elements) and return its end; an error it returns stops the scan and
// is returned.
func (s *Scanner) Object(i int, member func(key []byte, escaped bool, at int) (end int, err error)) (int, error) {
	if err := s.enter(i); err != nil {
		return 0, err
	}
	defer s.leave()
	i = s.Space(i + 1)
	if i < len(s.Src) && s.Src[i] == '}' {
		return i + 1, nil
	}
	for {
		i = s.Space(i)
		if i >= len(s.Src) {
			return 0, ErrTruncated
		}
		if s.Src[i] != '"' {
			return 0, s.syntax(i, "looking for the beginning of an object key string")
		}
		keyEnd, escaped, err := s.String(i)
		if err != nil {
			return 0, err
		}
		key := s.Src[i+1 : keyEnd-1]
		i = s.Space(keyEnd)
		if i >= len(s.Src) {
			return 0, ErrTruncated
		}
		if s.Src[i] != ':' {
			return 0, s.syntax(i, "after object key")
		}
		var end int
		if member != nil {
			end, err = member(key, escaped, s.Space(i+1))
		} else {
			_, end, err = s.Value(i + 1)
		}
		if err != nil {
			return 0, err
		}
		next, closed, err := s.after(end, '}', "after object key:value pair")
		if err != nil || closed {
			return next, err
		}
		i = next
	}
}

// Array validates the array that starts at i (which must be '[') and
// returns its end. elem, when not nil, is called with each element; an
// error it returns stops the scan and is returned.
func (s *Scanner) Array(i int, elem func(value []byte) error) (int, error) {
	if err := s.enter(i); err != nil {
		return 0, err
	}
	defer s.leave()
	i = s.Space(i + 1)
	if i < len(s.Src) && s.Src[i] == ']' {
		return i + 1, nil
	}
	for {
		start, end, err := s.Value(i)
		if err != nil {
			return 0, err
		}
		if elem != nil {
			if err := elem(s.Src[start:end]); err != nil {
				return 0, err
			}
		}
		next, closed, err := s.after(end, ']', "after array element")
		if err != nil || closed {
			return next, err
		}
		i = next
	}
}

// after reads what follows a member or an element that ends at end: a
// comma, and more follow from next, or close, and the object or array
// ends at next.
func (s *Scanner) after(end int, close byte, context string) (next int, closed bool, err error) {
	i := s.Space(end)
	switch {
	case i >= len(s.Src):
		return 0, false, ErrTruncated
	case s.Src[i] == ',':
		return i + 1, false, nil
	case s.Src[i] == close:
		return i + 1, true, nil
	}
	return 0, false, s.syntax(i, context)
}

// String validates the string that starts at i (which must be '"') and
// returns its end, just past the closing quote, and whether it holds an
// escape.
func (s *Scanner) String(i int) (end int, escaped bool, err error) {
	src := s.Src
	for i++; ; {
		i = special(src, i)
		switch {
		case i >= len(src):
			return 0, false, ErrTruncated
		case src[i] == '"':
			return i + 1, escaped, nil
		}
		if src[i] < 0x20 {
			return 0, false, s.syntax(i, "in string literal")
		}
		escaped = true
		i++
		if i >= len(src) {
			return 0, false, ErrTruncated
		}
		switch src[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			for k := 1; k <= 4; k++ {
				if i+k >= len(src) {
					return 0, false, ErrTruncated
				}
				if !isHex(src[i+k]) {
					return 0, false, s.syntax(i+k, "in \\u hexadecimal character escape")
				}
			}
			i += 5
		default:
			return 0, false, s.syntax(i, "in string escape code")
		}
	}
}

// special returns the index of the first byte from i on that a string
// cannot hold as it is (a quote, a backslash or a control character), or
// len(src). It reads eight bytes at a time: most of a page is plain
// string bytes, and a byte at a time was half the time of reading one.
func special(src []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(src); i += 8 {
		x := binary.LittleEndian.Uint64(src[i:])
		q, b := x^(ones*'"'), x^(ones*'\\')
		// A byte's high bit is set when it is zero (q, b) or below 0x20
		// (x), or, after the first such byte only, by the borrow from
		// it: the lowest bit set is the first special byte.
		if m := ((q-ones)&^q | (b-ones)&^b | (x-ones*0x20)&^x) & highs; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(src); i++ {
		if c := src[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return i
}

func (s *Scanner) number(i int) (int, error) {
	src := s.Src
	if src[i] == '-' {
		i++
	}
	switch {
	case i >= len(src):
		return 0, ErrTruncated
	case src[i] == '0':
		i++
	case src[i] >= '1' && src[i] <= '9':
		i = digits(src, i)
	default:
		return 0, s.syntax(i, "in numeric literal")
	}
	if i < len(src) && src[i] == '.' {
		i++
		if i >= len(src) {
			return 0, ErrTruncated
		}
		if !isDigit(src[i]) {
			return 0, s.syntax(i, "after decimal point in numeric literal")
		}
		i = digits(src, i)
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		if i >= len(src) {
			return 0, ErrTruncated
		}
		if !isDigit(src[i]) {
			return 0, s.syntax(i, "in exponent of numeric literal")
		}
		i = digits(src, i)
	}
	return i, nil
}

func (s *Scanner) literal(i int, word string) (int, error) {
	for k := 0; k < len(word); k++ {
		if i+k >= len(s.Src) {
			return 0, ErrTruncated
		}
		if s.Src[i+k] != word[k] {
			return 0, s.syntax(i+k, "in literal "+word)
		}
	}
	return i + len(word), nil
}

func (s *Scanner) enter(i int) error {
	s.depth++
	if s.depth > maxDepth {
		return s.syntax(i, "exceeded max depth")
	}
	return nil
}

func (s *Scanner) leave() { s.depth-- }

func (s *Scanner) syntax(i int, context string) error {
	if i >= len(s.Src) {
		return ErrTruncated
	}
	return fmt.Errorf("%w: character %q at offset %d %s", ErrSyntax, s.Src[i], i, context)
}

func digits(src []byte, i int) int {
	for i < len(src) && isDigit(src[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Valid reports whether src is exactly one JSON value, with whitespace
// around it at most, and whether it is compact (no whitespace outside
// strings).
func Valid(src []byte) (valid, compact bool) {
	s := Scanner{Src: src}
	_, end, err := s.Value(0)
	if err != nil || s.Space(end) != len(src) {
		return false, false
	}
	return true, !s.Spaced
}
