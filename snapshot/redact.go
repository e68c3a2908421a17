package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// DefaultRedact is the default policy's field paths: everything the API
// sends that gives control of a meeting (the host link, the passwords, the
// live-stream push addresses) or lets anyone join it. Published records
// reach every subscriber of a wide subject, so these must not travel with
// them unless an operator explicitly opts out.
var DefaultRedact = []string{
	"chairJoinUri",
	"guestJoinUri",
	"audienceJoinUri",
	"liveAddress",
	"auxAddress",
	"passwordEntry[].password",
	"confConfigInfo.guestPwd",
}

// Errors returned when a redaction policy cannot be used.
var (
	// ErrInvalidRedactPath means a path of the policy cannot name a field,
	// so the policy would silently redact less than the operator meant.
	ErrInvalidRedactPath = errors.New("invalid redact path")
)

// redactNone is the policy value that redacts nothing. It has to be spelled
// out so that an empty setting can never publish secrets by accident.
const redactNone = "none"

// digestPrefix starts every sealed value. A value that already has the
// digest's exact shape is kept, which makes sealing idempotent.
const (
	digestPrefix = "redacted:sha256:"
	digestBytes  = 12
	// digestJSONLen is the length of a sealed value as a JSON string.
	digestJSONLen = 1 + len(digestPrefix) + 2*digestBytes + 1
)

// Redactor applies a redaction policy: Seal hides secrets from the stored
// state while keeping them comparable, Strip removes them from a published
// record, and RedactChanges keeps their values out of a published diff.
//
// The zero value and a nil *Redactor redact nothing. A Redactor is
// read-only after construction, so it is safe for concurrent use.
type Redactor struct {
	paths []string
	// root is nil when nothing is redacted.
	root *node
	// rereadKnown is set when a redacted top-level field is one that
	// Meeting decodes beside the raw record, which must not keep the secret.
	rereadKnown bool
}

// node is one step of the policy's paths, applied to the value found there.
type node struct {
	// path is the policy path when the value here is redacted whole.
	path string
	// fields applies to the members of an object value.
	fields map[string]*node
	// elems applies to every element of an array value.
	elems *node
}

// segment is one dot-separated step of a policy path.
type segment struct {
	key string
	// each is set for "key[]": descend into every element of the array.
	each bool
}

// ParseRedact reads a policy as an operator writes it, for example in
// MEETWATCH_REDACT: "" means DefaultRedact, so that secrets stay private
// unless someone decides otherwise; "none" (alone) means nothing is
// redacted; anything else is a comma-separated list of paths, spaces
// trimmed.
//
// A path is dot-separated keys ("confConfigInfo.guestPwd"); a key followed
// by "[]" descends into every element of an array of objects
// ("passwordEntry[].password"). An invalid path is an error naming it.
func ParseRedact(spec string) (*Redactor, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return NewRedactor(DefaultRedact)
	case strings.EqualFold(spec, redactNone):
		return &Redactor{}, nil
	}
	paths := strings.Split(spec, ",")
	for i, p := range paths {
		p = strings.TrimSpace(p)
		if strings.EqualFold(p, redactNone) {
			return nil, fmt.Errorf("%w %q: %q must stand alone", ErrInvalidRedactPath, p, redactNone)
		}
		paths[i] = p
	}
	return NewRedactor(paths)
}

// NewRedactor builds a Redactor for the given paths, in ParseRedact's
// syntax. Duplicates are ignored; no paths means nothing is redacted.
func NewRedactor(paths []string) (*Redactor, error) {
	r := &Redactor{}
	for _, p := range paths {
		segs, err := parseRedactPath(p)
		if err != nil {
			return nil, err
		}
		if slices.Contains(r.paths, p) {
			continue
		}
		r.paths = append(r.paths, p)
		if r.root == nil {
			r.root = &node{}
		}
		r.root.insert(p, segs)
		if len(segs) == 1 {
			switch segs[0].key {
			case "conferenceID", "subject", "startTime":
				r.rereadKnown = true
			}
		}
	}
	return r, nil
}

func parseRedactPath(p string) ([]segment, error) {
	if p == "" {
		return nil, fmt.Errorf("%w %q: empty", ErrInvalidRedactPath, p)
	}
	parts := strings.Split(p, ".")
	segs := make([]segment, 0, len(parts))
	for _, part := range parts {
		key, each := strings.CutSuffix(part, "[]")
		if key == "" {
			return nil, fmt.Errorf("%w %q: empty segment", ErrInvalidRedactPath, p)
		}
		for _, c := range key {
			if !isKeyChar(c) {
				return nil, fmt.Errorf("%w %q: bad character %q (want letters, digits, '_' or '-', and \"[]\" after a key)", ErrInvalidRedactPath, p, c)
			}
		}
		segs = append(segs, segment{key: key, each: each})
	}
	if segs[len(segs)-1].each {
		return nil, fmt.Errorf("%w %q: \"[]\" at the end (name a field of the elements)", ErrInvalidRedactPath, p)
	}
	if segs[0].key == "confUUID" {
		// Sealing it would change the meeting's identity in every snapshot.
		return nil, fmt.Errorf("%w %q: confUUID is the meeting's key", ErrInvalidRedactPath, p)
	}
	return segs, nil
}

func isKeyChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// insert adds one path below n. A path inside one already redacted whole
// adds nothing, and a shorter path replaces what was below it.
func (n *node) insert(path string, segs []segment) {
	for i, s := range segs {
		if n.fields == nil {
			n.fields = make(map[string]*node)
		}
		child := n.fields[s.key]
		if child == nil {
			child = &node{}
			n.fields[s.key] = child
		}
		n = child
		if n.path != "" {
			return
		}
		if i == len(segs)-1 {
			*n = node{path: path}
			return
		}
		if s.each {
			if n.elems == nil {
				n.elems = &node{}
			}
			n = n.elems
		}
	}
}

// terminals lists the policy paths at or below n, sorted.
func (n *node) terminals() []string {
	var out []string
	var walk func(*node)
	walk = func(n *node) {
		if n.path != "" {
			out = append(out, n.path)
			return
		}
		for _, c := range n.fields {
			walk(c)
		}
		if n.elems != nil {
			walk(n.elems)
		}
	}
	walk(n)
	slices.Sort(out)
	return out
}

// Paths returns the policy's field paths, in the order given, without
// duplicates; none when nothing is redacted.
func (r *Redactor) Paths() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.paths)
}

// Seal returns m with every redacted value replaced by a digest string,
// "redacted:sha256:" and the hex of the first 12 bytes of
// sha256(confUUID, 0x00, policy path, 0x00, canonical JSON of the value).
//
// The state stores sealed records and Diff compares them, so a secret that
// changes still shows up as a change, while its value is neither stored nor
// published. The confUUID in the digest keeps the same secret in two
// meetings from looking the same.
//
// Absent fields stay absent and a null stays null: neither is a secret.
// A value that already is a digest is kept, so sealing a sealed record (a
// state reloaded after a restart) changes nothing. Every other byte of the
// record is kept as it was; a record with nothing to seal is returned as
// is, sharing its raw bytes.
func (r *Redactor) Seal(m Meeting) (Meeting, error) {
	if r == nil || r.root == nil || len(m.raw) == 0 {
		return m, nil
	}
	e := editor{src: m.raw, seal: true, uuid: m.UUID}
	if err := e.run(r.root); err != nil {
		return Meeting{}, fmt.Errorf("sealing record %s: %w", m.UUID, err)
	}
	if e.out == nil {
		return m, nil
	}
	if r.rereadKnown {
		sealed, err := ParseMeeting(e.out)
		if err != nil {
			return Meeting{}, fmt.Errorf("sealing record %s: %w", m.UUID, err)
		}
		return sealed, nil
	}
	m.raw = e.out
	return m, nil
}

// Strip returns the record raw (a JSON object, sealed or not) with every
// redacted field removed entirely, for publishing: a consumer should not
// even learn a digest it has no use for. A record with nothing to remove is
// returned as is.
func (r *Redactor) Strip(raw json.RawMessage) (json.RawMessage, error) {
	if trimmed := bytes.TrimLeft(raw, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("stripping record: %w", ErrNotObject)
	}
	if r == nil || r.root == nil {
		return raw, nil
	}
	out, err := stripValue(raw, r.root)
	if err != nil {
		return nil, fmt.Errorf("stripping record: %w", err)
	}
	return out, nil
}

// stripValue removes the fields that n redacts from any JSON value.
func stripValue(raw json.RawMessage, n *node) (json.RawMessage, error) {
	if len(raw) == 0 {
		return raw, nil
	}
	if !json.Valid(raw) {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return nil, errors.New("invalid JSON")
	}
	e := editor{src: raw}
	if err := e.run(n); err != nil {
		return nil, err
	}
	if e.out == nil {
		return raw, nil
	}
	return e.out, nil
}

// RedactChanges rewrites a diff's field list for publishing, so that a
// consumer learns that a secret changed but never its value.
//
//   - A change at a redacted path, or inside one, becomes
//     {Field: path, Redacted: true}, without values.
//   - A change of a value that holds redacted fields further down (an array
//     such as "passwordEntry", or an object replaced wholesale) keeps its
//     values with those fields stripped. If nothing else differs it is
//     replaced by a redacted entry per secret path that changed
//     ("passwordEntry[].password"); otherwise those entries are added.
//
// The result is sorted by Field, without duplicates. fields is not
// modified.
func (r *Redactor) RedactChanges(fields []FieldChange) []FieldChange {
	if r == nil || r.root == nil || len(fields) == 0 {
		return fields
	}
	out := make([]FieldChange, 0, len(fields))
	for _, fc := range fields {
		out = r.redactChange(out, fc)
	}
	slices.SortStableFunc(out, func(a, b FieldChange) int { return strings.Compare(a.Field, b.Field) })
	merged := out[:0]
	for _, fc := range out {
		if k := len(merged) - 1; k >= 0 && merged[k].Field == fc.Field {
			if fc.Redacted { // one field, two entries: hiding the values wins
				merged[k] = FieldChange{Field: fc.Field, Redacted: true}
			}
			continue
		}
		merged = append(merged, fc)
	}
	return merged
}

func (r *Redactor) redactChange(out []FieldChange, fc FieldChange) []FieldChange {
	n := r.root
	if fc.Field != "" {
		for key := range strings.SplitSeq(fc.Field, ".") {
			child := n.fields[key]
			if child == nil {
				return append(out, fc) // nothing redacted at or below this path
			}
			if child.path != "" {
				return append(out, FieldChange{Field: child.path, Redacted: true})
			}
			n = child
		}
	}
	oldS, errOld := stripValue(fc.Old, n)
	newS, errNew := stripValue(fc.New, n)
	if errOld != nil || errNew != nil {
		// Not JSON, so it cannot be stripped: hide it whole.
		return append(out, FieldChange{Field: fc.Field, Redacted: true})
	}
	secrets := changedSecrets(fc.Old, fc.New, n)
	if !sameJSON(oldS, newS) {
		out = append(out, FieldChange{Field: fc.Field, Old: oldS, New: newS})
	} else if len(secrets) == 0 {
		// Not reachable for a change CompareRecords reports; never drop one.
		secrets = n.terminals()
	}
	for _, p := range secrets {
		out = append(out, FieldChange{Field: p, Redacted: true})
	}
	return out
}

// sameJSON compares two values by meaning, as CompareRecords does; empty
// stands for an absent value.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	return reflect.DeepEqual(decodeValue(a), decodeValue(b))
}

// changedSecrets lists the policy paths below n whose values differ
// between oldRaw and newRaw, sorted.
func changedSecrets(oldRaw, newRaw json.RawMessage, n *node) []string {
	oldLeaves, newLeaves := map[string]map[string]any{}, map[string]map[string]any{}
	collectSecrets(decodeValue(oldRaw), n, "", oldLeaves)
	collectSecrets(decodeValue(newRaw), n, "", newLeaves)
	var out []string
	for p := range oldLeaves {
		if !reflect.DeepEqual(oldLeaves[p], newLeaves[p]) {
			out = append(out, p)
		}
	}
	for p := range newLeaves {
		if _, ok := oldLeaves[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// collectSecrets records every redacted value below n, by policy path and
// by where it was found, so that two values can be compared secret by
// secret.
func collectSecrets(v any, n *node, at string, out map[string]map[string]any) {
	if n.path != "" {
		if out[n.path] == nil {
			out[n.path] = map[string]any{}
		}
		out[n.path][at] = v
		return
	}
	switch v := v.(type) {
	case map[string]any:
		for k, child := range n.fields {
			if fv, ok := v[k]; ok {
				collectSecrets(fv, child, at+"."+k, out)
			}
		}
	case []any:
		if n.elems != nil {
			for i, ev := range v {
				collectSecrets(ev, n.elems, at+"["+strconv.Itoa(i)+"]", out)
			}
		}
	}
}

// editor walks one JSON value and copies it with edits. It allocates only
// at the first edit, so a value with nothing to redact costs no copy.
//
// The walk relies on its input being valid JSON (ParseMeeting and
// stripValue check it) but stays in bounds on any input.
type editor struct {
	src []byte
	// out is nil until the first edit; src[:last] has been copied to it.
	out  []byte
	last int
	// seal replaces redacted values with digests; otherwise they are
	// removed with their keys.
	seal bool
	uuid string
}

var errTruncated = errors.New("unexpected end of JSON")

func (e *editor) run(n *node) error {
	i := e.skipWS(0)
	end, err := e.walkValue(i, n)
	if err != nil {
		return err
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
		e.out = make([]byte, 0, len(e.src)+4*digestJSONLen)
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

// walkValue applies n to the value at i and returns where it ends.
func (e *editor) walkValue(i int, n *node) (int, error) {
	if i < len(e.src) {
		switch {
		case e.src[i] == '{' && n.fields != nil:
			return e.walkObject(i, n.fields)
		case e.src[i] == '[' && n.elems != nil:
			return e.walkArray(i, n.elems)
		}
	}
	return e.skipValue(i)
}

func (e *editor) walkArray(i int, elems *node) (int, error) {
	i = e.skipWS(i + 1)
	if i < len(e.src) && e.src[i] == ']' {
		return i + 1, nil
	}
	for {
		end, err := e.walkValue(e.skipWS(i), elems)
		if err != nil {
			return 0, err
		}
		i = e.skipWS(end)
		if i >= len(e.src) {
			return 0, errTruncated
		}
		switch e.src[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return 0, e.syntaxError(i)
		}
	}
}

func (e *editor) walkObject(i int, fields map[string]*node) (int, error) {
	i = e.skipWS(i + 1)
	if i < len(e.src) && e.src[i] == '}' {
		return i + 1, nil
	}
	kept := false   // some member of this object is kept
	prevComma := -1 // the comma before the current member
	for {
		memberStart := e.skipWS(i)
		keyEnd, escaped, err := e.scanString(memberStart)
		if err != nil {
			return 0, err
		}
		child, err := e.lookup(fields, memberStart, keyEnd, escaped)
		if err != nil {
			return 0, err
		}
		i = e.skipWS(keyEnd)
		if i >= len(e.src) || e.src[i] != ':' {
			return 0, e.syntaxError(i)
		}
		valStart := e.skipWS(i + 1)
		var valEnd int
		redact := child != nil && child.path != ""
		switch {
		case redact:
			valEnd, err = e.skipValue(valStart)
		case child != nil:
			valEnd, err = e.walkValue(valStart, child)
		default:
			valEnd, err = e.skipValue(valStart)
		}
		if err != nil {
			return 0, err
		}
		i = e.skipWS(valEnd)
		if i >= len(e.src) || (e.src[i] != ',' && e.src[i] != '}') {
			return 0, e.syntaxError(i)
		}
		switch {
		case redact && e.seal:
			e.sealValue(valStart, valEnd, child.path)
			kept = true
		case redact && kept:
			e.edit(prevComma, valEnd, nil) // `,"key":value`
		case redact && e.src[i] == ',':
			e.edit(memberStart, i+1, nil) // `"key":value,`
		case redact:
			e.edit(memberStart, valEnd, nil) // the only member left
		default:
			kept = true
		}
		if e.src[i] == '}' {
			return i + 1, nil
		}
		prevComma = i
		i++
	}
}

// lookup finds the policy node for the key src[start:end], a JSON string.
// Keys are compared decoded, as CompareRecords sees them, so an escaped
// spelling of a secret's key is redacted too.
func (e *editor) lookup(fields map[string]*node, start, end int, escaped bool) (*node, error) {
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

// sealValue replaces the value at src[start:end] with its digest, unless
// it is null or already a digest.
func (e *editor) sealValue(start, end int, path string) {
	v := e.src[start:end]
	if string(v) == "null" || isDigest(v) {
		return
	}
	var scratch [256]byte
	h := append(scratch[:0], e.uuid...)
	h = append(h, 0)
	h = append(h, path...)
	h = append(h, 0)
	h = appendCanonical(h, v)
	sum := sha256.Sum256(h)

	var repl [digestJSONLen]byte
	repl[0] = '"'
	copy(repl[1:], digestPrefix)
	hex.Encode(repl[1+len(digestPrefix):], sum[:digestBytes])
	repl[digestJSONLen-1] = '"'
	e.edit(start, end, repl[:])
}

// isDigest reports whether the JSON value v is exactly a sealed value.
func isDigest(v []byte) bool {
	if len(v) != digestJSONLen || v[0] != '"' || v[len(v)-1] != '"' ||
		string(v[1:1+len(digestPrefix)]) != digestPrefix {
		return false
	}
	for _, c := range v[1+len(digestPrefix) : len(v)-1] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// appendCanonical appends the canonical JSON of v: what json.Marshal writes
// for it once decoded, numbers as written. Equal values give equal bytes
// whatever escapes, key order or whitespace the record used, so the digest
// changes only when the secret does.
func appendCanonical(dst, v []byte) []byte {
	if plainString(v) || (v[0] != '"' && v[0] != '{' && v[0] != '[') {
		return append(dst, v...) // already what json.Marshal would write
	}
	b, err := json.Marshal(decodeValue(v))
	if err != nil {
		return append(dst, v...) // unreachable for valid JSON
	}
	return append(dst, b...)
}

// plainString reports whether v is a JSON string of printable ASCII that
// json.Marshal would write back unchanged.
func plainString(v []byte) bool {
	if len(v) < 2 || v[0] != '"' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
