// Package snapshot is meetwatch's domain: the meeting record as the API sends
// it, a Snapshot of every ongoing meeting keyed by confUUID, and Diff, which
// turns two snapshots into started, ended and changed meetings. Trim cuts
// a record down to a size limit, and FieldSet names fields by path.
//
// The package is pure: no network, no clock, no storage. That keeps the part
// that decides what happened small enough to test exhaustively and to fuzz.
package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

// Meeting is one ongoing meeting, kept exactly as the API sent it.
//
// The API grows: a field meetwatch does not know today must still reach
// consumers tomorrow, so the record is held as its raw JSON object and only
// the few fields the watcher itself needs are decoded beside it.
type Meeting struct {
	raw json.RawMessage

	// UUID is confUUID, unique per meeting instance: the snapshot key.
	UUID string
	// ConferenceID is the meeting ID, which recurring and personal-room
	// meetings reuse; it is what the API's searchKey matches.
	ConferenceID string
	// Subject is the meeting's title, for human-readable output.
	Subject string
	// StartTime is the API's "YYYY-MM-DD HH:MM" string, kept as sent.
	StartTime string
}

// Errors returned when a record cannot be part of a snapshot, cannot be
// trimmed to size, or when a field path cannot be read.
var (
	// ErrNotObject means a record was not a JSON object.
	ErrNotObject = errors.New("record is not a JSON object")
	// ErrInvalidUTF8 means a record is not valid UTF-8, so it cannot be
	// passed on as the JSON it claims to be.
	ErrInvalidUTF8 = errors.New("record is not valid UTF-8")
	// ErrNoUUID means a record has no usable confUUID, so it cannot be
	// keyed, and a listing holding it is not a complete picture.
	ErrNoUUID = errors.New("record has no confUUID")
	// ErrTooLarge means a record stays larger than the limit it must fit
	// in even with every value that Trim may cut cut.
	ErrTooLarge = errors.New("record too large")
	// ErrInvalidField means a field path given as configuration cannot
	// name a field (see ParseFieldSet).
	ErrInvalidField = errors.New("invalid field path")
)

// ParseMeeting builds a Meeting from one ConferenceInfo JSON object. The
// record is compacted, so that the same content always has the same bytes
// whatever whitespace the server used, and otherwise kept as sent; raw is
// not kept.
//
// The fields the watcher reads are decoded leniently: one of an unexpected
// type is left empty rather than failing the record, except confUUID,
// without which the record is useless. As with encoding/json, the last of
// two members with one name counts.
func ParseMeeting(raw []byte) (Meeting, error) {
	m, _, err := parseMeeting(raw, false)
	return m, err
}

// parseMeeting is ParseMeeting. With share set, the Meeting it returns
// holds raw itself, rather than a copy, when raw is already compact, and
// it says so: Memo.Read then copies only what it keeps.
func parseMeeting(raw []byte, share bool) (Meeting, bool, error) {
	raw = bytes.Trim(raw, " \t\r\n") // JSON's whitespace, not Unicode's
	if len(raw) == 0 || raw[0] != '{' {
		return Meeting{}, false, ErrNotObject
	}
	if !utf8.Valid(raw) {
		return Meeting{}, false, ErrInvalidUTF8
	}
	var m Meeting
	var uuid []byte
	sc := jsonscan.Scanner{Src: raw}
	end, err := sc.Object(0, func(key []byte, escaped bool, at int) (int, error) {
		start, end, err := sc.Value(at)
		if err != nil {
			return 0, err
		}
		value := raw[start:end]
		if escaped {
			var k string
			if err := json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k); err != nil {
				return 0, err
			}
			key = []byte(k)
		}
		switch string(key) {
		case "confUUID":
			uuid = value
		case "conferenceID":
			m.ConferenceID = lenientString(value)
		case "subject":
			m.Subject = lenientString(value)
		case "startTime":
			m.StartTime = lenientString(value)
		}
		return end, nil
	})
	if err == nil && end != len(raw) {
		err = fmt.Errorf("%w: data after the record", jsonscan.ErrSyntax)
	}
	if err != nil {
		return Meeting{}, false, fmt.Errorf("decoding record: %w", err)
	}
	if m.UUID = lenientString(uuid); m.UUID == "" {
		return Meeting{}, false, ErrNoUUID
	}
	if !sc.Spaced {
		if share {
			m.raw = raw
			return m, true, nil
		}
		m.raw = bytes.Clone(raw)
		return m, false, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return Meeting{}, false, fmt.Errorf("compacting record %s: %w", m.UUID, err)
	}
	m.raw = buf.Bytes()
	return m, false, nil
}

// lenientString returns the value of a JSON string, or "" for anything else.
func lenientString(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// Raw returns the record as the API sent it, compacted. The slice is shared:
// callers must not modify it.
func (m Meeting) Raw() json.RawMessage { return m.raw }

// Same reports whether m and o hold the same record, byte for byte: what
// Diff counts as no change. Records shared by two snapshots (see Memo)
// compare without reading their bytes.
func (m Meeting) Same(o Meeting) bool { return bytes.Equal(m.raw, o.raw) }

// WithRaw returns m with its record replaced by raw and its decoded fields
// kept, without parsing raw. It is for code that rewrites values inside a
// record it got from ParseMeeting (sealing secrets) and would otherwise pay
// for a second parse of every record.
//
// The caller must guarantee what ParseMeeting would: raw is a compact JSON
// object in valid UTF-8 whose confUUID, conferenceID, subject and startTime
// decode exactly as m's do, for example m's record with only other fields'
// values changed. Nothing checks this; a record whose known fields changed
// must go through ParseMeeting instead. raw is kept, not copied.
func (m Meeting) WithRaw(raw json.RawMessage) Meeting {
	m.raw = raw
	return m
}

// MarshalJSON writes the record as the API sent it, every field included.
func (m Meeting) MarshalJSON() ([]byte, error) {
	if m.raw == nil {
		return []byte("null"), nil
	}
	return m.raw, nil
}

// UnmarshalJSON reads a record with ParseMeeting.
func (m *Meeting) UnmarshalJSON(b []byte) error {
	got, err := ParseMeeting(b)
	if err != nil {
		return err
	}
	*m = got
	return nil
}

// Snapshot is the complete set of ongoing meetings at one moment, keyed by
// confUUID. Only a complete listing may become a Snapshot: a missing key is
// read as "this meeting ended".
type Snapshot map[string]Meeting
