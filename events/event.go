// Package events is meetwatch's wire contract: the CloudEvents envelope of a
// meeting event, its NATS subject and deterministic id, the JetStream
// publisher that delivers it, and helpers for consumers that read it back.
//
// Everything a downstream service depends on is decided here, so that the
// watcher can change without changing what consumers see.
package events

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Kind is the event kind: the second token of the subject and the suffix of
// the CloudEvents type.
type Kind = snapshot.ChangeKind

// The envelope's fixed values.
const (
	// SpecVersion is the CloudEvents version of the envelope.
	SpecVersion = "1.0"
	// TypePrefix starts every event type: "meetwatch.meeting.started".
	TypePrefix = "meetwatch.meeting."
	// DataContentType is the media type of the data attribute.
	DataContentType = "application/json"
	// ContentType is the NATS Content-Type header of a structured-mode
	// CloudEvent, per the CloudEvents NATS binding.
	ContentType = "application/cloudevents+json"
	// DefaultPrefix is the first subject token when none is configured.
	DefaultPrefix = "meetings"
)

// Event is one meeting event, a CloudEvents 1.0 envelope in structured JSON
// mode: the whole envelope is the message body.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is the payload of a meeting event.
type Data struct {
	// Conference is the record as the API sent it; for an ended meeting,
	// the last record seen.
	Conference json.RawMessage `json:"conference"`
	// Previous is the prior record, on changed events only.
	Previous json.RawMessage `json:"previous,omitempty"`
	// Changes lists the fields that differ, on changed events only.
	Changes []snapshot.FieldChange `json:"changes,omitempty"`
	// Initial marks a started event from the very first snapshot a watcher
	// ever took: the meeting was already running when meetwatch arrived, so
	// a notification bot may want to skip it.
	Initial bool `json:"initial,omitempty"`
	// LastSeen, on ended events only, is when the last snapshot that still
	// held the meeting was observed. The real end lies between it and Time.
	LastSeen *time.Time `json:"lastSeen,omitempty"`
}

// Kind returns the event kind read from its type.
func (e Event) Kind() Kind {
	return Kind(strings.TrimPrefix(e.Type, TypePrefix))
}

// Source returns the CloudEvents source of a watcher polling the API at
// host, such as "meetwatch://api.meeting.huaweicloud.com".
func Source(host string) string { return "meetwatch://" + host }

// Subject returns the NATS subject of an event: <prefix>.<kind>.<confUUID>.
//
// A confUUID is hex in practice, but the API does not promise it. One that
// could not stand as a single subject token (a dot, a wildcard, white space,
// or anything outside [A-Za-z0-9_-]) is written as "=" followed by its
// unpadded base64url form, so it can never widen or split the subject.
func Subject(prefix string, kind Kind, confUUID string) string {
	return prefix + "." + string(kind) + "." + Token(confUUID)
}

// Token returns s when it is safe as one NATS subject token and one
// key-value key segment, and its "=" base64url form otherwise. The mapping is
// one to one: a safe token never starts with "=".
func Token(s string) string {
	if s == "" {
		return "="
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "=" + base64.RawURLEncoding.EncodeToString([]byte(s))
		}
	}
	return s
}

// ID returns the deterministic id of a transition, so that publishing the
// same transition twice (after a crash, a retry or a failover) yields the
// same id and JetStream drops the second copy.
//
//   - started: the meeting's confUUID. A meeting instance starts once, and a
//     re-publish after a restart must match the first even though fields
//     like onlineAttendeeAmount moved in between.
//   - ended: likewise, the confUUID: an instance ends once.
//   - changed: the confUUID plus the exact old and new records, so that two
//     different changes of one meeting never share an id.
func ID(c snapshot.Change) string {
	h := sha256.New()
	fmt.Fprintf(h, "meetwatch/v1\x00%s\x00%s\x00", c.Kind, c.Key)
	if c.Kind == snapshot.Changed {
		h.Write(c.Old.Raw())
		h.Write([]byte{0})
		h.Write(c.New.Raw())
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Builder turns diff changes into events for one watcher.
type Builder struct {
	// Source is the CloudEvents source; see Source.
	Source string
	// Prefix is the first subject token.
	Prefix string
	// Redact removes secrets from the records and changes an event
	// carries; nil publishes records as they are.
	Redact *redact.Policy
}

// Build returns the event for change c, observed at observed. initial marks
// changes from the first snapshot a watcher ever took; lastSeen is when the
// previous snapshot was observed, reported on ended events.
//
// The id is computed from the change as the diff saw it, before redaction,
// so that a different secret still makes a different changed event.
func (b Builder) Build(c snapshot.Change, observed time.Time, initial bool, lastSeen time.Time) (Event, error) {
	conference, err := b.Redact.Strip(c.Meeting().Raw())
	if err != nil {
		return Event{}, fmt.Errorf("redacting %s: %w", c.Key, err)
	}
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              ID(c),
		Source:          b.Source,
		Type:            TypePrefix + string(c.Kind),
		Subject:         c.Key,
		Time:            observed.UTC(),
		DataContentType: DataContentType,
		Data:            Data{Conference: conference},
	}
	switch c.Kind {
	case snapshot.Started:
		e.Data.Initial = initial
	case snapshot.Changed:
		if e.Data.Previous, err = b.Redact.Strip(c.Old.Raw()); err != nil {
			return Event{}, fmt.Errorf("redacting %s: %w", c.Key, err)
		}
		e.Data.Changes = b.Redact.RedactChanges(c.Fields)
	case snapshot.Ended:
		if !lastSeen.IsZero() {
			ls := lastSeen.UTC()
			e.Data.LastSeen = &ls
		}
	}
	return e, nil
}

// NATSSubject returns the subject the event is published on under prefix.
func (e Event) NATSSubject(prefix string) string {
	return Subject(prefix, e.Kind(), e.Subject)
}

// Decode parses a message body into an Event and checks the attributes that
// CloudEvents requires, so a consumer can trust what it got.
func Decode(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("decoding event: %w", err)
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return Event{}, fmt.Errorf("decoding event: specversion %q: %w", e.SpecVersion, ErrNotMeetingEvent)
	case e.ID == "" || e.Source == "":
		return Event{}, fmt.Errorf("decoding event: missing id or source: %w", ErrNotMeetingEvent)
	case !strings.HasPrefix(e.Type, TypePrefix):
		return Event{}, fmt.Errorf("decoding event: type %q: %w", e.Type, ErrNotMeetingEvent)
	}
	return e, nil
}

// Errors returned when a message cannot be read as a meeting event.
var (
	// ErrNotMeetingEvent means a message is not a meetwatch meeting event,
	// so a consumer sharing a stream can skip it rather than fail.
	ErrNotMeetingEvent = errors.New("not a meetwatch meeting event")
)

// Summary renders the event as one line for people: time, kind, confUUID,
// subject and, for changed events, the fields that changed.
func (e Event) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-7s  %s", e.Time.Local().Format("15:04:05"), e.Kind(), e.Subject)
	var rec struct {
		Subject      string `json:"subject"`
		ConferenceID string `json:"conferenceID"`
	}
	_ = json.Unmarshal(e.Data.Conference, &rec) // best effort: a summary never fails
	if rec.Subject != "" {
		fmt.Fprintf(&b, "  %q", rec.Subject)
	}
	if rec.ConferenceID != "" {
		fmt.Fprintf(&b, " (%s)", rec.ConferenceID)
	}
	if e.Data.Initial {
		b.WriteString("  [already running]")
	}
	if len(e.Data.Changes) > 0 {
		fields := make([]string, len(e.Data.Changes))
		for i, c := range e.Data.Changes {
			fields[i] = c.Field
		}
		b.WriteString("  changed: " + strings.Join(fields, ", "))
	}
	return b.String()
}
