package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/meetwatch/meetwatch/snapshot"
)

// DefaultViewBucket is the key-value bucket meetwatch keeps the view in
// unless MEETWATCH_VIEW_BUCKET names another.
const DefaultViewBucket = "meetings-now"

// ViewEntry is the value of a meeting's key in the view bucket: the
// meetings going on now, one key each, for consumers that want the
// current set rather than the stream of its changes (see ViewKey, and
// package events/view to watch it from Go). It holds what an event of the
// meeting would: Conference is its latest record with the same fields
// removed (MEETWATCH_REDACT), so that a consumer of the view sees nothing
// a consumer of the events does not.
type ViewEntry struct {
	// Conference is the meeting's latest record, secrets removed.
	Conference json.RawMessage `json:"conference"`
	// StartedAt is the record's startTime in UTC, as data.startedAt of
	// its events; absent when unreadable.
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// Incarnation is the meeting's incarnation, as data.incarnation of its
	// events.
	Incarnation int `json:"incarnation"`
	// Account names the account of an accounts file the meeting is of;
	// absent for a watcher of one account.
	Account string `json:"account,omitempty"`
}

// ViewKey returns the key of a meeting in the view bucket: its confUUID
// (as a subject token, see Token), and with an accounts file
// <account>.<confUUID>, so that the accounts sharing one bucket keep their
// keys apart, and a consumer watches one account with the filter
// "<account>.*" and the meetings of a single watcher with "*".
func ViewKey(account, confUUID string) string {
	if account == "" {
		return Token(confUUID)
	}
	return account + "." + Token(confUUID)
}

// ViewValue returns the encoded ViewEntry of m in its incarnation, with
// b's redaction, zone and account: the same for the same record, so that
// a view already right is not written again.
func (b Builder) ViewValue(m snapshot.Meeting, incarnation int) ([]byte, error) {
	conference, err := b.Redact.Strip(m.Raw())
	if err != nil {
		return nil, fmt.Errorf("redacting %s: %w", m.UUID, err)
	}
	e := ViewEntry{Conference: conference, Incarnation: max(incarnation, 1), Account: b.Account}
	if t, err := ParseStartTime(m.StartTime, b.Zone); err == nil {
		e.StartedAt = &t
	}
	v, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding the view of %s: %w", m.UUID, err)
	}
	return v, nil
}
