package snapshot

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/meetwatch/meetwatch/snapshot/internal/jsonedit"
)

// ChangeKind names what happened to a meeting between two snapshots.
type ChangeKind string

// The three things that can happen to a meeting between two snapshots.
const (
	// Started: the meeting is in the new snapshot and not in the old.
	Started ChangeKind = "started"
	// Changed: the meeting is in both and some field differs.
	Changed ChangeKind = "changed"
	// Ended: the meeting is in the old snapshot and not in the new.
	Ended ChangeKind = "ended"
)

// Change is one meeting's transition between two snapshots.
type Change struct {
	Kind ChangeKind
	// Key is the meeting's confUUID.
	Key string
	// Old is the record in the previous snapshot; zero for Started.
	Old Meeting
	// New is the record in the next snapshot; zero for Ended.
	New Meeting
	// Fields lists what differs, sorted by path; only for Changed.
	Fields []FieldChange
	// Base, for Changed, is the revision of the stored state that held
	// Old, or 0 when unknown. A record that flaps back and forth (an
	// attendee count going 3, 4, 3, 4) makes the same Old and New more
	// than once; Base tells those changes apart, while a change published
	// again keeps it.
	Base uint64
	// Incarnation counts the meeting's starts under its confUUID: 1 for
	// the first, n+1 when it is listed again after its n-th end, so that
	// a meeting that comes back is started again under a new id. Diff
	// leaves it 0, which reads as 1; the watcher sets it from its state.
	Incarnation int
}

// Meeting returns the record a consumer should see for the change: the new
// record, or for an ended meeting the last one seen.
func (c Change) Meeting() Meeting {
	if c.Kind == Ended {
		return c.Old
	}
	return c.New
}

// FieldChange is one field that differs between two records of a meeting.
//
// Field is a dotted path into nested objects ("confConfigInfo.isAutoMute").
// Arrays are compared and reported whole ("partAttendeeInfo"), because their
// elements have no stable identity. Old or New is empty when the field was
// absent on that side, which keeps "absent" apart from an explicit null.
//
// So that every path names exactly one field, a key holding a dot or a
// backslash is escaped within the path: each `\` becomes `\\` and each `.`
// becomes `\.`. The key "a.b" is the path `a\.b` (in JSON, "a\\.b"), while
// the key "b" inside "a" is `a.b`. Keys without either, such as every key
// of the documented API record, appear as they are, so such paths read as
// they always did. JoinPath and SplitPath convert between keys and paths:
// split a path with SplitPath, never at every dot.
type FieldChange struct {
	Field string          `json:"field"`
	Old   json.RawMessage `json:"old,omitempty"`
	New   json.RawMessage `json:"new,omitempty"`
	// Redacted marks a change of a secret: it happened, but its values are
	// not published (see Policy.RedactChanges in package snapshot/redact).
	Redacted bool `json:"redacted,omitempty"`
	// Truncated marks a change of a field that was cut from the event to
	// make it fit the size limit (see Trim): it happened, but its values
	// are not published.
	Truncated bool `json:"truncated,omitempty"`
}

// Diff returns the transitions from prev to next: ended, then changed, then
// started, each sorted by confUUID so that the same two snapshots always give
// the same list. Two snapshots with the same content give none.
//
// next must be a complete listing; Diff cannot tell a meeting that ended from
// one that a partial listing missed.
func Diff(prev, next Snapshot) []Change {
	var ended, changed, started []Change
	if grown := len(next) - len(prev); grown > 0 {
		// A first snapshot is all starts: grown once, not by doubling.
		started = make([]Change, 0, grown)
	}
	// At 100,000 meetings each pass is tens of milliseconds of lookups in
	// a map far larger than the CPU's caches: the two run side by side.
	var wg sync.WaitGroup
	wg.Go(func() {
		for key, old := range prev {
			if _, ok := next[key]; !ok {
				ended = append(ended, Change{Kind: Ended, Key: key, Old: old})
			}
		}
		slices.SortFunc(ended, byKey)
	})
	for key, cur := range next {
		old, ok := prev[key]
		if !ok {
			started = append(started, Change{Kind: Started, Key: key, New: cur})
			continue
		}
		if old.Same(cur) {
			continue
		}
		if fields := CompareRecords(old.raw, cur.raw); len(fields) > 0 {
			changed = append(changed, Change{Kind: Changed, Key: key, Old: old, New: cur, Fields: fields})
		}
	}
	slices.SortFunc(changed, byKey)
	slices.SortFunc(started, byKey)
	wg.Wait()
	if len(ended)+len(changed) == 0 {
		return started
	}
	return slices.Concat(ended, changed, started)
}

func byKey(a, b Change) int { return strings.Compare(a.Key, b.Key) }

// CompareRecords lists the fields that differ between two JSON objects,
// sorted by path. Values are compared by meaning, not by bytes: key order
// and whitespace do not count, and numbers compare as written.
//
// A side that is not a JSON object is compared whole, under the path "";
// that is then the only change. Otherwise "" is the path of the key "".
func CompareRecords(oldRaw, newRaw json.RawMessage) []FieldChange {
	oldV, newV := jsonedit.Decode(oldRaw), jsonedit.Decode(newRaw)
	var out []FieldChange
	compareValues("", true, oldV, newV, &out)
	slices.SortFunc(out, func(a, b FieldChange) int { return strings.Compare(a.Field, b.Field) })
	return out
}

// compareValues appends the changes between two decoded values at path;
// root is set for the whole record, whose members' paths have no prefix
// (a nested key "" still has one: the key "x" inside "" is ".x").
func compareValues(path string, root bool, oldV, newV any, out *[]FieldChange) {
	oldObj, oldIsObj := oldV.(map[string]any)
	newObj, newIsObj := newV.(map[string]any)
	if oldIsObj && newIsObj {
		for k, ov := range oldObj {
			nv, ok := newObj[k]
			if !ok {
				nv = jsonedit.Absent
			}
			compareValues(appendKey(path, root, k), false, ov, nv, out)
		}
		for k, nv := range newObj {
			if _, ok := oldObj[k]; !ok {
				compareValues(appendKey(path, root, k), false, jsonedit.Absent, nv, out)
			}
		}
		return
	}
	if reflect.DeepEqual(oldV, newV) {
		return
	}
	*out = append(*out, FieldChange{Field: path, Old: encodeValue(oldV), New: encodeValue(newV)})
}

func encodeValue(v any) json.RawMessage {
	if v == jsonedit.Absent {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Unreachable for values decoded from JSON; keep the change visible.
		return json.RawMessage(`null`)
	}
	return b
}
