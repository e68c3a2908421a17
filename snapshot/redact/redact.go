// Package redact keeps secrets out of everything meetwatch stores,
// publishes and prints.
//
// A meeting record carries what gives control of the meeting (the host
// link, the passwords, the live-stream push addresses), and published
// records reach every subscriber of a wide subject. A Policy names those
// fields: Seal replaces them with digests in the stored state, so that a
// changed secret is still a change, Strip removes them from a published
// record, and RedactChanges keeps their values out of a published diff.
//
// Secret does the same for the credentials meetwatch itself holds: no way
// of printing one shows its value.
package redact

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/internal/jsonedit"
	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

// Default is the default policy's field paths: everything the API sends
// that gives control of a meeting (the host link, the passwords, the
// live-stream push addresses) or lets anyone join or watch it (the guest
// and webinar audience links, the live viewing link, which can carry the
// token that lets its holder watch). passwordEntry holds the host's, the
// guests' and a webinar audience's passwords alike. Published records
// reach every subscriber of a wide subject, so these must not travel with
// them unless an operator explicitly opts out.
//
// This is the one list of defaults; help texts show it with DefaultSpec.
var Default = []string{
	"chairJoinUri",
	"guestJoinUri",
	"audienceJoinUri",
	"liveAddress",
	"auxAddress",
	"liveUrl",
	"passwordEntry[].password",
	"confConfigInfo.guestPwd",
}

// DefaultSpec returns Default as Parse reads it, comma-separated, for help
// texts and documentation that must not drift from the real defaults.
func DefaultSpec() string { return strings.Join(Default, ",") }

// Errors returned when a redaction policy cannot be used.
var (
	// ErrInvalidPath means a path of the policy cannot name a field, so the
	// policy would silently redact less than the operator meant.
	ErrInvalidPath = errors.New("invalid redact path")
)

// none is the policy value that redacts nothing. It has to be spelled out
// so that an empty setting can never publish secrets by accident.
const none = "none"

// digestPrefix starts every unkeyed sealed value, keyedPrefix every keyed
// one, followed by the key's id and a colon. A value that already has a
// digest's exact shape is kept, which makes sealing idempotent.
const (
	digestPrefix = "redacted:sha256:"
	keyedPrefix  = "redacted:hmac-sha256:"
	keyIDLen     = 8
	digestBytes  = 12
	// digestJSONLen and keyedJSONLen are the lengths of sealed values as
	// JSON strings.
	digestJSONLen = 1 + len(digestPrefix) + 2*digestBytes + 1
	keyedJSONLen  = 1 + len(keyedPrefix) + keyIDLen + 1 + 2*digestBytes + 1
	// MinKeyBytes is the shortest seal key accepted: a digest keyed with
	// less is not much harder to reverse than an unkeyed one.
	MinKeyBytes = 16
)

// Policy is a redaction policy: the fields of a meeting record that hold
// secrets. Seal hides them from the stored state while keeping them
// comparable, Strip removes them from a published record, and
// RedactChanges keeps their values out of a published diff.
//
// The zero value and a nil *Policy redact nothing. A Policy is read-only
// after construction, so it is safe for concurrent use.
type Policy struct {
	paths []string
	// root is nil when nothing is redacted. A node's Mark is the policy
	// path that redacts the value there whole.
	root *jsonedit.Node
	// rereadKnown is set when a redacted top-level field is one that
	// snapshot.Meeting decodes beside the raw record, which must not keep
	// the secret.
	rereadKnown bool
	// key, when set, keys the digests (HMAC-SHA256), and keyID names it
	// in them; see WithKey.
	key   []byte
	keyID string
	// keyedTag starts every keyed digest: keyedPrefix, keyID and ":".
	keyedTag string
	// macs pools the HMACs of key, so that sealing a value allocates
	// nothing: a first listing seals several values in each of a
	// hundred thousand records.
	macs *sync.Pool
}

// keyedMAC is a pooled HMAC with its buffer.
type keyedMAC struct {
	mac hash.Hash
	buf []byte
}

// sealBufs pools the buffers Seal edits records in before it copies each
// to its size.
var sealBufs = sync.Pool{New: func() any { return new([]byte) }}

// WithKey returns a copy of p whose digests are keyed with key: an
// HMAC-SHA256 instead of a plain SHA-256, so that a reader of the state
// bucket without the key cannot test guesses against them (a six-digit
// meeting password otherwise falls to a million hashes). Each digest names
// the key by a short id, so that one made under another key, or none, is
// told apart: see Rekeyed. A nil p stays nil.
func (p *Policy) WithKey(key []byte) *Policy {
	if p == nil {
		return nil
	}
	q := *p
	q.key = slices.Clone(key)
	id := sha256.Sum256(append([]byte("meetwatch seal key id\x00"), key...))
	q.keyID = hex.EncodeToString(id[:keyIDLen/2])
	q.keyedTag = keyedPrefix + q.keyID + ":"
	q.macs = &sync.Pool{New: func() any { return &keyedMAC{mac: hmac.New(sha256.New, q.key)} }}
	return &q
}

// segment is one dot-separated step of a policy path.
type segment struct {
	key string
	// each is set for "key[]": descend into every element of the array.
	each bool
}

// Parse reads a policy as an operator writes it, for example in
// MEETWATCH_REDACT: "" means Default, so that secrets stay private unless
// someone decides otherwise; "none" (alone) means nothing is redacted;
// anything else is a comma-separated list of paths, spaces trimmed.
//
// A path is dot-separated keys ("confConfigInfo.guestPwd"); a key followed
// by "[]" descends into every element of an array of objects
// ("passwordEntry[].password"). An invalid path is an error naming it.
func Parse(spec string) (*Policy, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return New(Default)
	case strings.EqualFold(spec, none):
		return &Policy{}, nil
	}
	paths := strings.Split(spec, ",")
	for i, p := range paths {
		p = strings.TrimSpace(p)
		if strings.EqualFold(p, none) {
			return nil, fmt.Errorf("%w %q: %q must stand alone", ErrInvalidPath, p, none)
		}
		paths[i] = p
	}
	return New(paths)
}

// New builds a Policy for the given paths, in Parse's syntax. Duplicates
// are ignored; no paths means nothing is redacted.
func New(paths []string) (*Policy, error) {
	p := &Policy{}
	for _, path := range paths {
		segs, err := parsePath(path)
		if err != nil {
			return nil, err
		}
		if slices.Contains(p.paths, path) {
			continue
		}
		p.paths = append(p.paths, path)
		if p.root == nil {
			p.root = &jsonedit.Node{}
		}
		insert(p.root, path, segs)
		if len(segs) == 1 {
			switch segs[0].key {
			case "conferenceID", "subject", "startTime":
				p.rereadKnown = true
			}
		}
	}
	return p, nil
}

// parsePath checks one policy path. Keys are limited to characters that
// need no escaping in a change path (snapshot.JoinPath), so a policy path
// and the change paths it covers spell a key the same way.
func parsePath(p string) ([]segment, error) {
	if p == "" {
		return nil, fmt.Errorf("%w %q: empty", ErrInvalidPath, p)
	}
	parts := strings.Split(p, ".")
	segs := make([]segment, 0, len(parts))
	for _, part := range parts {
		key, each := strings.CutSuffix(part, "[]")
		if key == "" {
			return nil, fmt.Errorf("%w %q: empty segment", ErrInvalidPath, p)
		}
		for _, c := range key {
			if !isKeyChar(c) {
				return nil, fmt.Errorf("%w %q: bad character %q (want letters, digits, '_' or '-', and \"[]\" after a key)", ErrInvalidPath, p, c)
			}
		}
		segs = append(segs, segment{key: key, each: each})
	}
	if segs[len(segs)-1].each {
		return nil, fmt.Errorf("%w %q: \"[]\" at the end (name a field of the elements)", ErrInvalidPath, p)
	}
	if segs[0].key == "confUUID" {
		// Sealing it would change the meeting's identity in every snapshot.
		return nil, fmt.Errorf("%w %q: confUUID is the meeting's key", ErrInvalidPath, p)
	}
	return segs, nil
}

// pathOf spells segs as a policy path, without the "[]" of the last.
func pathOf(segs []segment) string {
	parts := make([]string, len(segs))
	for i, s := range segs {
		parts[i] = s.key
		if s.each && i < len(segs)-1 {
			parts[i] += "[]"
		}
	}
	return strings.Join(parts, ".")
}

func isKeyChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// insert adds one path below n. A path inside one already redacted whole
// adds nothing, and a shorter path replaces what was below it.
//
// A field on the way to a secret that comes in another shape than the path
// says (an object where it names an array, say) is redacted whole, under
// the path so far: nothing in it can be told apart from a secret.
func insert(n *jsonedit.Node, path string, segs []segment) {
	for i, s := range segs {
		if n.Fields == nil {
			n.Fields = make(map[string]*jsonedit.Node)
		}
		child := n.Fields[s.key]
		if child == nil {
			child = &jsonedit.Node{}
			n.Fields[s.key] = child
		}
		n = child
		if n.Mark != "" {
			return
		}
		if i == len(segs)-1 {
			*n = jsonedit.Node{Mark: path}
			return
		}
		n.Else = pathOf(segs[:i+1])
		if s.each {
			if n.Elems == nil {
				n.Elems = &jsonedit.Node{}
			}
			n = n.Elems
		}
	}
}

// terminals lists the policy paths at or below n, sorted.
func terminals(n *jsonedit.Node) []string {
	var out []string
	var walk func(*jsonedit.Node)
	walk = func(n *jsonedit.Node) {
		if n.Mark != "" {
			out = append(out, n.Mark)
			return
		}
		for _, c := range n.Fields {
			walk(c)
		}
		if n.Elems != nil {
			walk(n.Elems)
		}
	}
	walk(n)
	slices.Sort(out)
	return out
}

// Paths returns the policy's field paths, in the order given, without
// duplicates; none when nothing is redacted.
func (p *Policy) Paths() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.paths)
}

// Seal returns m with every redacted value replaced by a digest string,
// "redacted:sha256:" and the hex of the first 12 bytes of
// sha256(confUUID, 0x00, policy path, 0x00, canonical JSON of the value);
// with a key (WithKey), "redacted:hmac-sha256:", the key's id, a colon and
// the same of an HMAC-SHA256 under the key.
//
// The state stores sealed records and snapshot.Diff compares them, so a
// secret that changes still shows up as a change, while its value is
// neither stored nor published. The confUUID in the digest keeps the same
// secret in two meetings from looking the same.
//
// Absent fields stay absent and a null stays null: neither is a secret.
// A value that already is a digest is kept, so sealing a sealed record (a
// state reloaded after a restart) changes nothing. Every other byte of the
// record is kept as it was; a record with nothing to seal is returned as
// is, sharing its raw bytes.
func (p *Policy) Seal(m snapshot.Meeting) (snapshot.Meeting, error) {
	raw := m.Raw()
	if p == nil || p.root == nil || len(raw) == 0 {
		return m, nil
	}
	uuid := m.UUID
	var digest []byte // allocated at the first value sealed, then reused
	buf := sealBufs.Get().(*[]byte)
	defer sealBufs.Put(buf)
	out, err := jsonedit.ReplaceInto(*buf, raw, p.root, func(path string, v []byte) []byte {
		if string(v) == "null" || isDigest(v) {
			return nil
		}
		if digest == nil {
			digest = make([]byte, p.digestLen())
		}
		p.sealValue(digest, uuid, path, v)
		return digest
	})
	if err != nil {
		return snapshot.Meeting{}, fmt.Errorf("sealing record %s: %w", m.UUID, err)
	}
	if out == nil {
		return m, nil
	}
	*buf = out[:0] // grown, maybe: kept for the next record
	if p.rereadKnown {
		sealed, err := snapshot.ParseMeeting(out)
		if err != nil {
			return snapshot.Meeting{}, fmt.Errorf("sealing record %s: %w", m.UUID, err)
		}
		return sealed, nil
	}
	// Only values of fields that Meeting does not decode changed, each
	// for a compact JSON string, so out keeps WithRaw's promises. It is
	// copied to its size: a snapshot holds a hundred thousand of them.
	return m.WithRaw(bytes.Clone(out)), nil
}

// Strip returns the record raw (a JSON object, sealed or not) with every
// redacted field removed entirely, for publishing: a consumer should not
// even learn a digest it has no use for. A record with nothing to remove is
// returned as is.
func (p *Policy) Strip(raw json.RawMessage) (json.RawMessage, error) {
	if trimmed := bytes.TrimLeft(raw, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("stripping record: %w", snapshot.ErrNotObject)
	}
	if p == nil || p.root == nil {
		return raw, nil
	}
	out, err := stripValue(raw, p.root)
	if err != nil {
		return nil, fmt.Errorf("stripping record: %w", err)
	}
	return out, nil
}

// stripValue removes the fields that n redacts from any JSON value.
func stripValue(raw json.RawMessage, n *jsonedit.Node) (json.RawMessage, error) {
	if len(raw) == 0 {
		return raw, nil
	}
	if valid, _ := jsonscan.Valid(raw); !valid {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return nil, errors.New("invalid JSON")
	}
	out, err := jsonedit.Remove(raw, n)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return raw, nil
	}
	return out, nil
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
// Fields are read with snapshot.SplitPath, so a key holding an escaped dot
// is one key; the Field "" is read as the whole record. The result is
// sorted by Field, without duplicates. fields is not modified.
func (p *Policy) RedactChanges(fields []snapshot.FieldChange) []snapshot.FieldChange {
	if p == nil || p.root == nil || len(fields) == 0 {
		return fields
	}
	out := make([]snapshot.FieldChange, 0, len(fields))
	for _, fc := range fields {
		out = p.redactChange(out, fc)
	}
	slices.SortStableFunc(out, func(a, b snapshot.FieldChange) int { return strings.Compare(a.Field, b.Field) })
	merged := out[:0]
	for _, fc := range out {
		if k := len(merged) - 1; k >= 0 && merged[k].Field == fc.Field {
			if fc.Redacted { // one field, two entries: hiding the values wins
				merged[k] = snapshot.FieldChange{Field: fc.Field, Redacted: true}
			}
			continue
		}
		merged = append(merged, fc)
	}
	return merged
}

func (p *Policy) redactChange(out []snapshot.FieldChange, fc snapshot.FieldChange) []snapshot.FieldChange {
	n := p.root
	if fc.Field != "" {
		for _, key := range snapshot.SplitPath(fc.Field) {
			child := n.Fields[key]
			if child == nil && n.Elems != nil {
				// A step by key into what the policy takes for an
				// array: the value is of another shape, hidden whole.
				return append(out, snapshot.FieldChange{Field: fc.Field, Redacted: true})
			}
			if child == nil {
				return append(out, fc) // nothing redacted at or below this path
			}
			if child.Mark != "" {
				return append(out, snapshot.FieldChange{Field: child.Mark, Redacted: true})
			}
			n = child
		}
	}
	oldS, errOld := stripValue(fc.Old, n)
	newS, errNew := stripValue(fc.New, n)
	if errOld != nil || errNew != nil {
		// Not JSON, so it cannot be stripped: hide it whole.
		return append(out, snapshot.FieldChange{Field: fc.Field, Redacted: true})
	}
	secrets := changedSecrets(fc.Old, fc.New, n)
	if !jsonedit.Equal(oldS, newS) {
		out = append(out, snapshot.FieldChange{Field: fc.Field, Old: oldS, New: newS})
	} else if len(secrets) == 0 {
		// Not reachable for a change CompareRecords reports; never drop one.
		secrets = terminals(n)
	}
	for _, path := range secrets {
		out = append(out, snapshot.FieldChange{Field: path, Redacted: true})
	}
	return out
}

// changedSecrets lists the policy paths below n whose values differ
// between oldRaw and newRaw, sorted.
func changedSecrets(oldRaw, newRaw json.RawMessage, n *jsonedit.Node) []string {
	oldLeaves, newLeaves := map[string]map[string]any{}, map[string]map[string]any{}
	collectSecrets(jsonedit.Decode(oldRaw), n, "", oldLeaves)
	collectSecrets(jsonedit.Decode(newRaw), n, "", newLeaves)
	var out []string
	for path := range oldLeaves {
		if !reflect.DeepEqual(oldLeaves[path], newLeaves[path]) {
			out = append(out, path)
		}
	}
	for path := range newLeaves {
		if _, ok := oldLeaves[path]; !ok {
			out = append(out, path)
		}
	}
	slices.Sort(out)
	return out
}

// collectSecrets records every redacted value below n, by policy path and
// by where it was found, so that two values can be compared secret by
// secret. Policy keys hold no dots, so "where" cannot be ambiguous.
func collectSecrets(v any, n *jsonedit.Node, at string, out map[string]map[string]any) {
	if n.Mark != "" {
		if out[n.Mark] == nil {
			out[n.Mark] = map[string]any{}
		}
		out[n.Mark][at] = v
		return
	}
	switch v := v.(type) {
	case map[string]any:
		for k, child := range n.Fields {
			if fv, ok := v[k]; ok {
				collectSecrets(fv, child, at+"."+k, out)
			}
		}
	case []any:
		if n.Elems != nil {
			for i, ev := range v {
				collectSecrets(ev, n.Elems, at+"["+strconv.Itoa(i)+"]", out)
			}
		}
	}
}

// digestLen is the length of p's sealed values as JSON strings.
func (p *Policy) digestLen() int {
	if p.key != nil {
		return keyedJSONLen
	}
	return digestJSONLen
}

// sealValue writes the digest of the JSON value v, found at the policy
// path in the meeting uuid, to dst, as a JSON string of digestLen bytes.
func (p *Policy) sealValue(dst []byte, uuid, path string, v []byte) {
	var scratch [256]byte
	h := append(scratch[:0], uuid...)
	h = append(h, 0)
	h = append(h, path...)
	h = append(h, 0)
	h = appendCanonical(h, v)
	var sum [sha256.Size]byte
	prefix := digestPrefix
	if p.key != nil {
		sum = p.keyedSum(h)
		prefix = p.keyedTag
	} else {
		sum = sha256.Sum256(h)
	}
	dst[0] = '"'
	copy(dst[1:], prefix)
	hex.Encode(dst[1+len(prefix):], sum[:digestBytes])
	dst[len(dst)-1] = '"'
}

// keyedSum returns the HMAC-SHA256 of h under p's key, with a pooled HMAC.
// h is copied into the pooled buffer rather than handed to the HMAC, which
// would move the caller's stack buffer to the heap on every call.
func (p *Policy) keyedSum(h []byte) [sha256.Size]byte {
	m := p.macs.Get().(*keyedMAC)
	defer p.macs.Put(m)
	m.buf = append(m.buf[:0], h...)
	m.mac.Reset()
	m.mac.Write(m.buf)
	m.buf = m.mac.Sum(m.buf[:0])
	return [sha256.Size]byte(m.buf)
}

// isDigest reports whether the JSON value v is exactly a sealed value,
// keyed or not, under any key.
func isDigest(v []byte) bool {
	_, ok := digestKey(v)
	return ok
}

// digestKey returns the key id of the sealed value v, "" for an unkeyed
// one, and whether v is a sealed value at all.
func digestKey(v []byte) (string, bool) {
	var id string
	var hexPart []byte
	switch {
	case len(v) == digestJSONLen && v[0] == '"' && string(v[1:1+len(digestPrefix)]) == digestPrefix:
		hexPart = v[1+len(digestPrefix) : len(v)-1]
	case len(v) == keyedJSONLen && v[0] == '"' && string(v[1:1+len(keyedPrefix)]) == keyedPrefix &&
		v[1+len(keyedPrefix)+keyIDLen] == ':':
		id = string(v[1+len(keyedPrefix) : 1+len(keyedPrefix)+keyIDLen])
		if !isHex([]byte(id)) {
			return "", false
		}
		hexPart = v[1+len(keyedPrefix)+keyIDLen+1 : len(v)-1]
	default:
		return "", false
	}
	if v[len(v)-1] != '"' || !isHex(hexPart) {
		return "", false
	}
	return id, true
}

func isHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Rekeyed reports whether fields, the changes of one meeting, are nothing
// but its secrets sealed anew under another key: every change's old value
// holds a digest made under another key than p's (or none), and is the new
// value once the digests of both are set aside. Such a change is the key's
// rotation, not the meeting's, and publishes nothing. A secret that did
// change in the same poll cannot be told from it, and goes unannounced.
func (p *Policy) Rekeyed(fields []snapshot.FieldChange) bool {
	if p == nil || p.root == nil || len(fields) == 0 {
		return false
	}
	for _, fc := range fields {
		oldMasked, foreign := p.maskDigests(fc.Old)
		newMasked, _ := p.maskDigests(fc.New)
		if !foreign || !bytes.Equal(oldMasked, newMasked) {
			return false
		}
	}
	return true
}

// maskDigests returns the JSON value v with every sealed value in it
// replaced by "redacted", and whether one of them was made under another
// key than p's.
func (p *Policy) maskDigests(v []byte) ([]byte, bool) {
	var out []byte
	foreign, last := false, 0
	for i := 0; ; {
		j := bytes.Index(v[i:], []byte(`"redacted:`))
		if j < 0 {
			break
		}
		start := i + j
		end := bytes.IndexByte(v[start+1:], '"')
		if end < 0 {
			break
		}
		end += start + 2
		if id, ok := digestKey(v[start:end]); ok {
			foreign = foreign || id != p.keyID
			out = append(append(out, v[last:start]...), `"redacted"`...)
			last = end
		}
		i = end
	}
	if out == nil {
		return v, false
	}
	return append(out, v[last:]...), foreign
}

// appendCanonical appends the canonical JSON of v: what json.Marshal writes
// for it once decoded, numbers as written. Equal values give equal bytes
// whatever escapes, key order or whitespace the record used, so the digest
// changes only when the secret does.
func appendCanonical(dst, v []byte) []byte {
	if plainString(v) || (v[0] != '"' && v[0] != '{' && v[0] != '[') {
		return append(dst, v...) // already what json.Marshal would write
	}
	b, err := json.Marshal(jsonedit.Decode(v))
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
