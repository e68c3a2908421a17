package chat

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
)

// SampleSubject is the subject of the sample meeting, which says what the
// message is to whoever reads it in the chat.
const SampleSubject = "meetwatch test message"

// Sample returns a started event as the watcher would publish it, about a
// meeting that started at now, and its stored body: what `notify --test`
// sends to check a webhook before any meeting starts. Its record has no
// secret, as a published one has none. Its id is new at every call, so
// that no platform takes a second test for a repeat of the first.
func Sample(now time.Time) (events.Event, []byte, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return events.Event{}, nil, fmt.Errorf("making a sample event id: %w", err)
	}
	started := now.UTC().Truncate(time.Minute)
	const confUUID = "050c7898216811eaa6958bf3bb9ac167"
	rec, err := json.Marshal(map[string]any{
		"conferenceID":         "914083136",
		"confUUID":             confUUID,
		"subject":              SampleSubject,
		"mediaTypes":           "Voice,Data,Video",
		"size":                 5,
		"timeZoneID":           "56",
		"startTime":            started.Format(events.StartTimeLayout),
		"endTime":              started.Add(time.Hour).Format(events.StartTimeLayout),
		"conferenceState":      "Created",
		"language":             "en-US",
		"scheduserName":        "user8002",
		"confType":             "IMMEDIATELY",
		"onlineAttendeeAmount": 3,
	})
	if err != nil {
		return events.Event{}, nil, fmt.Errorf("encoding the sample record: %w", err)
	}
	e := events.Event{
		SpecVersion:     events.SpecVersion,
		ID:              hex.EncodeToString(id[:]),
		Source:          events.Source("meetwatch-notify-test"),
		Type:            events.TypePrefix + string(snapshot.Started),
		Subject:         confUUID,
		Time:            now.UTC(),
		DataContentType: events.DataContentType,
		DataSchema:      events.DataSchema(snapshot.Started),
		Data:            events.Data{Conference: rec, StartedAt: &started, Incarnation: 1},
	}
	raw, err := e.Encode()
	if err != nil {
		return events.Event{}, nil, fmt.Errorf("encoding the sample event: %w", err)
	}
	return e, raw, nil
}
