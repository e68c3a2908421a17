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
	"slices"
	"strings"
	"time"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Kind is the event kind: the second token of the subject and the suffix of
// the CloudEvents type.
type Kind = snapshot.ChangeKind

// The kinds of event, for a consumer's switch on Event.Kind.
const (
	Started = snapshot.Started
	Changed = snapshot.Changed
	Ended   = snapshot.Ended
)

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
	// SchemaBase starts every dataschema URI; the version is part of the
	// path, so that a consumer can tell by the URI alone which contract an
	// event keeps (docs/events.md, Versions).
	SchemaBase = "https://github.com/meetwatch/meetwatch/blob/main/events/schema/"
	// SchemaVersion is the version of the schemas the events keep: "v1".
	SchemaVersion = "v1"
	// StartTimeLayout is how the API writes a record's startTime and
	// endTime: minutes, and no zone.
	StartTimeLayout = "2006-01-02 15:04"
)

// DataSchema returns the dataschema URI of events of kind: the $id of the
// JSON Schema of the whole event, which `meetwatch schema <kind>` prints.
func DataSchema(kind Kind) string {
	return SchemaBase + SchemaVersion + "/" + string(kind) + ".json"
}

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
	// DataSchema names the JSON Schema, and its version, that the event
	// keeps (see DataSchema). A consumer never needs to fetch it: it tells
	// which contract the event keeps.
	DataSchema string `json:"dataschema,omitempty"`
	// Account is the CloudEvents extension attribute "account": the name
	// of the account, in an accounts file, whose listing the event comes
	// from. Empty, and absent from the JSON, for a watcher of one account
	// configured by MEETWATCH_* variables.
	Account string `json:"account,omitempty"`
	Data    Data   `json:"data"`
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
	// StartedAt is the record's startTime, read in the zone the API writes
	// it in (MEETWATCH_API_TIME_ZONE, UTC by default), in UTC: the same
	// instant for every consumer, whatever its own zone. Absent when the
	// record has no startTime in the API's layout.
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// EndedAt, on ended events only, is when the first listing that
	// missed the meeting was taken, never before LastSeen: the real end
	// lies between LastSeen and EndedAt (see SetEnd).
	EndedAt *time.Time `json:"endedAt,omitempty"`
	// DurationSeconds, on ended events of a meeting with a StartedAt, is
	// the whole seconds from StartedAt to EndedAt, never negative.
	DurationSeconds *int64 `json:"durationSeconds,omitempty"`
	// Incarnation counts the meeting's starts under its confUUID: 1 for
	// the first, n+1 after it was listed again following its n-th ended
	// event. A consumer that saw a meeting end and then sees it start
	// again tells the two apart by it, as the ids do. Every event carries
	// it; Decode makes it 1 for an event of a version that wrote none.
	Incarnation int `json:"incarnation,omitempty"`
	// Truncated lists, sorted, the fields of Conference and Previous that
	// hold a truncation marker instead of their value, so that the event
	// fits the size limit: "conference.partAttendeeInfo" (the record's
	// path, see snapshot.FieldChange, after "conference." or "previous.").
	// A marker is {"truncated":true,"count":n}; see snapshot.Trim.
	Truncated []string `json:"truncated,omitempty"`
}

// Kind returns the event kind read from its type.
func (e Event) Kind() Kind {
	return Kind(strings.TrimPrefix(e.Type, TypePrefix))
}

// Source returns the CloudEvents source of a watcher polling the API at
// host, such as "meetwatch://api.meeting.huaweicloud.com".
func Source(host string) string { return "meetwatch://" + host }

// AccountSource returns the CloudEvents source of a watcher polling the
// API at host for the named account, such as
// "meetwatch://api.meeting.huaweicloud.com/acme": two accounts on one API
// are two sources, so that source and id together stay unique, as
// CloudEvents asks. Without an account it is Source(host).
func AccountSource(host, account string) string {
	if account == "" {
		return Source(host)
	}
	return Source(host) + "/" + account
}

// Subject returns the NATS subject of an event: <prefix>.<kind>.<confUUID>.
// An account's events go under the prefix <prefix>.<account>, so that
// <prefix>.*.ended.> selects every account's ends and <prefix>.acme.> one
// account's events.
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

// ID returns the deterministic id of a transition seen in the named
// account's listing, so that publishing the same transition twice (after
// a crash, a retry or a failover) yields the same id and JetStream drops
// the second copy.
//
// The account is hashed too, since two accounts may list one confUUID
// (an enterprise seen through two logins) and their events share the
// stream's duplicate window. Without an account ("") the id is what it
// was before there were accounts, so that a watcher of one account keeps
// its ids across an upgrade.
//
//   - started: the meeting's confUUID and its incarnation. An incarnation
//     starts once, and a re-publish after a restart must match the first
//     even though fields like onlineAttendeeAmount moved in between. The
//     first incarnation's id hashes the confUUID alone, the same as a
//     version without incarnations gave it.
//   - ended: likewise: an incarnation ends once.
//   - changed: the confUUID plus the exact old and new records, so that two
//     different changes of one meeting never share an id, and the change's
//     Base when it has one, so that a record flapping back to a value it had
//     makes a new event and not a duplicate of the first.
func ID(account string, c snapshot.Change) string {
	h := sha256.New()
	if account != "" {
		// Another opening than the one below, so that no account's id
		// can equal an id without one.
		fmt.Fprintf(h, "meetwatch/v1+account\x00%s\x00", account)
	} else {
		h.Write([]byte("meetwatch/v1\x00"))
	}
	fmt.Fprintf(h, "%s\x00%s\x00", c.Kind, c.Key)
	switch {
	case c.Kind == snapshot.Changed:
		h.Write(c.Old.Raw())
		h.Write([]byte{0})
		h.Write(c.New.Raw())
		if c.Base != 0 {
			fmt.Fprintf(h, "\x00%d", c.Base)
		}
	case c.Incarnation > 1:
		fmt.Fprintf(h, "%d", c.Incarnation)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// HeaderRoom is the part of a NATS message's maximum payload that
// MaxEventBytes leaves for the headers the publisher sends beside the
// body (Content-Type, Nats-Msg-Id, Nats-Expected-Stream): the server
// counts headers and body together.
const HeaderRoom = 4 << 10

// MaxEventBytes returns the largest event body that fits in a message of
// maxPayload bytes (nats.Conn.MaxPayload, known once connected), for
// Builder.MaxBytes; 0, meaning no limit, when maxPayload is not known.
func MaxEventBytes(maxPayload int64) int {
	if maxPayload <= 0 {
		return 0
	}
	return int(max(maxPayload-HeaderRoom, 1))
}

// MaxRecordBytes returns the size a watcher should trim each record to
// (snapshot.Trim) before it diffs and stores it, for messages of
// maxPayload bytes; 0, meaning no limit, when maxPayload is not known.
// A record of that size fits in a key-value value, and a started or ended
// event that carries it keeps an eighth of MaxEventBytes for the rest of
// the envelope, so it seldom needs cutting again.
func MaxRecordBytes(maxPayload int64) int {
	n := MaxEventBytes(maxPayload)
	return n - n/8
}

// Builder turns diff changes into events for one watcher.
type Builder struct {
	// Source is the CloudEvents source; see Source.
	Source string
	// Prefix is the first subject token.
	Prefix string
	// Account names the account whose listing the changes come from, when
	// the watcher is one of an accounts file's: each event carries it in
	// the account attribute, and its id hashes it (see ID). Source should
	// then be AccountSource's. Empty for a watcher of one account.
	Account string
	// Redact removes secrets from the records and changes an event
	// carries; nil publishes records as they are.
	Redact *redact.Policy
	// Ignore holds the fields whose changes are not worth an event: they
	// are left out of data.changes, and a change confined to them gets no
	// event at all (see Publishes). The zero set ignores nothing.
	Ignore snapshot.FieldSet
	// MaxBytes bounds the encoded event: a larger one has its records
	// trimmed to fit (see Build). 0 means no limit.
	MaxBytes int
	// Zone is the zone the API writes startTime in, for data.startedAt;
	// nil means UTC.
	Zone *time.Location
}

// Publishes reports whether c gets an event: every change does except a
// changed meeting none of whose changed fields an event would show (see
// shown). Build does not ask; the watcher does, and still takes the new
// record as its state.
func (b Builder) Publishes(c snapshot.Change) bool {
	return c.Kind != snapshot.Changed || len(c.Fields) == 0 || len(b.shown(c.Fields)) > 0
}

// shown returns the field changes a changed event shows: all but those
// of fields in Ignore, and those that are only a secret sealed anew under
// a rotated key (see redact.Policy.Rekeyed), which are no change of the
// meeting. Each field is judged on its own: a rotation beside an ignored
// change, or beside a real one, shows no secret as changed.
func (b Builder) shown(fields []snapshot.FieldChange) []snapshot.FieldChange {
	fields = b.Ignore.Filter(fields)
	rekeyed := func(fc snapshot.FieldChange) bool { return b.Redact.Rekeyed([]snapshot.FieldChange{fc}) }
	if !slices.ContainsFunc(fields, rekeyed) {
		return fields // the diff's own, untouched
	}
	return slices.DeleteFunc(slices.Clone(fields), rekeyed)
}

// Build returns the event for change c, observed at observed. initial marks
// changes from the first snapshot a watcher ever took; lastSeen is when the
// previous snapshot was observed, reported on ended events.
//
// The id is computed from the change as the diff saw it, before redaction
// and trimming, so that a different secret still makes a different changed
// event, and an event trimmed to fit has the id it would have had whole.
//
// When the encoded event would be larger than MaxBytes, its records are
// trimmed with snapshot.TrimRaw, largest values first, until it fits;
// the changes of a field trimmed from either record lose their values
// and say "truncated" instead; and data.truncated lists what was cut.
// If even that cannot make it fit, Build returns an error wrapping
// snapshot.ErrTooLarge.
func (b Builder) Build(c snapshot.Change, observed time.Time, initial bool, lastSeen time.Time) (Event, error) {
	conference, err := b.Redact.Strip(c.Meeting().Raw())
	if err != nil {
		return Event{}, fmt.Errorf("redacting %s: %w", c.Key, err)
	}
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              ID(b.Account, c),
		Source:          b.Source,
		Type:            TypePrefix + string(c.Kind),
		Subject:         c.Key,
		Time:            observed.UTC(),
		DataContentType: DataContentType,
		DataSchema:      DataSchema(c.Kind),
		Account:         b.Account,
		Data:            Data{Incarnation: max(c.Incarnation, 1)},
	}
	if t, err := ParseStartTime(c.Meeting().StartTime, b.Zone); err == nil {
		e.Data.StartedAt = &t
	}
	var previous json.RawMessage
	var changes []snapshot.FieldChange
	switch c.Kind {
	case snapshot.Started:
		e.Data.Initial = initial
	case snapshot.Changed:
		if previous, err = b.Redact.Strip(c.Old.Raw()); err != nil {
			return Event{}, fmt.Errorf("redacting %s: %w", c.Key, err)
		}
		changes = b.Redact.RedactChanges(b.shown(c.Fields))
	case snapshot.Ended:
		if !lastSeen.IsZero() {
			ls := lastSeen.UTC()
			e.Data.LastSeen = &ls
		}
		e.SetEnd(e.Time)
	}
	setRecords(&e, conference, previous, changes)
	if b.MaxBytes > 0 && !surelyFits(e, b.MaxBytes) {
		if err := b.fit(&e, conference, previous, changes); err != nil {
			return Event{}, fmt.Errorf("fitting the %s event of %s in %d bytes: %w", c.Kind, c.Key, b.MaxBytes, err)
		}
	}
	return e, nil
}

// SetEnd sets when the meeting of an ended event was found gone: endedAt
// is missed, the time of the first listing that missed it, never before
// lastSeen, and durationSeconds follows from it. Build sets the event's
// own time; a watcher that settles an end a listing after the one that
// first missed it says when that was.
func (e *Event) SetEnd(missed time.Time) {
	ended := missed.UTC()
	if ls := e.Data.LastSeen; ls != nil && ls.After(ended) {
		ended = *ls
	}
	e.Data.EndedAt = &ended
	e.Data.DurationSeconds = nil
	if s := e.Data.StartedAt; s != nil {
		d := max(int64(ended.Sub(*s)/time.Second), 0)
		e.Data.DurationSeconds = &d
	}
}

// setRecords puts the records and changes into e, with the paths of the
// records' truncation markers in data.truncated, and the values of every
// change that shares a value with one of them left out.
func setRecords(e *Event, conference, previous json.RawMessage, changes []snapshot.FieldChange) {
	e.Data.Conference, e.Data.Previous, e.Data.Changes, e.Data.Truncated = conference, previous, changes, nil
	inConference, inPrevious := snapshot.TruncatedPaths(conference), snapshot.TruncatedPaths(previous)
	if len(inConference) == 0 && len(inPrevious) == 0 {
		return
	}
	for _, p := range inConference {
		e.Data.Truncated = append(e.Data.Truncated, "conference."+p)
	}
	for _, p := range inPrevious {
		e.Data.Truncated = append(e.Data.Truncated, "previous."+p)
	}
	markers := slices.Concat(inConference, inPrevious)
	cut := snapshot.NewFieldSet(markers...)
	cloned, renamed := false, false
	for i, fc := range changes {
		if (len(fc.Old) == 0 && len(fc.New) == 0) || !cut.Overlaps(fc.Field) {
			continue
		}
		if !cloned {
			e.Data.Changes = slices.Clone(changes) // changes may be the diff's own
			cloned = true
		}
		field := fc.Field
		// Two markers differ in their count, which names no field of the
		// record: the change is of the field the markers stand for.
		if keys := snapshot.SplitPath(field); len(keys) > 1 && (keys[len(keys)-1] == "count" || keys[len(keys)-1] == "truncated") {
			if parent := snapshot.JoinPath(keys[:len(keys)-1]...); slices.Contains(markers, parent) {
				field, renamed = parent, true
			}
		}
		e.Data.Changes[i] = snapshot.FieldChange{Field: field, Truncated: true}
	}
	if renamed {
		slices.SortStableFunc(e.Data.Changes, func(a, b snapshot.FieldChange) int { return strings.Compare(a.Field, b.Field) })
		e.Data.Changes = slices.CompactFunc(e.Data.Changes, func(a, b snapshot.FieldChange) bool { return a.Field == b.Field && a.Truncated && b.Truncated })
	}
}

// surelyFits reports, without encoding e, whether it cannot be larger
// than limit: no byte of JSON text takes more than six once encoded (an
// escape such as \u003c), and the rest of the envelope is small.
func surelyFits(e Event, limit int) bool {
	const envelope, perChange = 1 << 10, 64
	n := len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject) + len(e.Account) + len(e.Data.Conference) + len(e.Data.Previous)
	for _, fc := range e.Data.Changes {
		n += len(fc.Field) + len(fc.Old) + len(fc.New) + perChange
	}
	for _, p := range e.Data.Truncated {
		n += len(p) + perChange
	}
	return 6*n+envelope <= limit
}

// encodedSize returns the size of e as the publisher encodes it.
func encodedSize(e Event) (int, error) {
	body, err := e.Encode()
	if err != nil {
		return 0, err
	}
	return len(body), nil
}

// trimmed is one record of an event being fitted to the size limit.
type trimmed struct {
	whole, cur json.RawMessage
	limit      int
	// floor is set once the record is as small as trimming makes it.
	floor bool
}

// fit trims the records of e until it encodes in b.MaxBytes.
//
// The records share a budget: the limit less everything else the event
// holds, counting the changes without their values at first (a change of
// a field trimmed loses them). A record smaller than its share keeps its
// size, and the other gets the rest. While the event is still too large,
// the budget shrinks by the excess and the records are trimmed again, from
// their whole form, which snapshot.TrimRaw does the same way each time.
// Each round cuts at least one more value or finds a record at its
// smallest, so it ends.
func (b Builder) fit(e *Event, conference, previous json.RawMessage, changes []snapshot.FieldChange) error {
	size, err := encodedSize(*e)
	if err != nil || size <= b.MaxBytes {
		return err
	}
	recs := []*trimmed{{whole: conference, cur: conference}}
	if previous != nil {
		recs = append(recs, &trimmed{whole: previous, cur: previous})
	}

	// The budget at first: the event with empty records and bare changes.
	bare := *e
	bare.Data.Conference = json.RawMessage(`{}`)
	if previous != nil {
		bare.Data.Previous = json.RawMessage(`{}`)
	}
	bare.Data.Changes = make([]snapshot.FieldChange, len(changes))
	for i, fc := range changes {
		bare.Data.Changes[i] = snapshot.FieldChange{Field: fc.Field, Redacted: fc.Redacted, Truncated: fc.Truncated || len(fc.Old) > 0 || len(fc.New) > 0}
	}
	bare.Data.Truncated = nil
	overhead, err := encodedSize(bare)
	if err != nil {
		return err
	}
	budget := b.MaxBytes - (overhead - 2*len(recs))

	for {
		share(recs, budget)
		for _, r := range recs {
			if r.floor {
				continue
			}
			out, _, err := snapshot.TrimRaw(r.whole, r.limit)
			switch {
			case errors.Is(err, snapshot.ErrTooLarge):
				r.floor = true
			case err != nil:
				return err
			}
			r.cur = out
		}
		var prev json.RawMessage
		if len(recs) > 1 {
			prev = recs[1].cur
		}
		setRecords(e, recs[0].cur, prev, changes)
		if size, err = encodedSize(*e); err != nil || size <= b.MaxBytes {
			return err
		}
		budget = -(size - b.MaxBytes)
		stuck := true
		for _, r := range recs {
			budget += len(r.cur)
			stuck = stuck && r.floor
		}
		if stuck {
			return fmt.Errorf("%w: %d bytes with every record trimmed as far as it goes", snapshot.ErrTooLarge, size)
		}
	}
}

// share splits budget between the records that may still shrink: a record
// that fits in an even share keeps its size, and the other gets the rest.
// A record at its smallest keeps its size.
func share(recs []*trimmed, budget int) {
	var free []*trimmed
	for _, r := range recs {
		if r.floor {
			budget -= len(r.cur)
			continue
		}
		free = append(free, r)
	}
	switch len(free) {
	case 1:
		free[0].limit = budget
	case 2:
		small, large := free[0], free[1]
		if len(large.cur) < len(small.cur) {
			small, large = large, small
		}
		if len(small.cur) <= budget/2 {
			small.limit = len(small.cur)
		} else {
			small.limit = budget / 2
		}
		large.limit = budget - small.limit
	}
}

// NATSSubject returns the subject the event is published on under prefix:
// under <prefix>.<account> when it carries an account.
func (e Event) NATSSubject(prefix string) string {
	if e.Account != "" {
		prefix += "." + e.Account
	}
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
	e.Data.Incarnation = max(e.Data.Incarnation, 1)
	return e, nil
}

// ParseStartTime reads a record's startTime (or endTime), written in the
// API's layout (StartTimeLayout, or with seconds) in zone, nil meaning
// UTC, and returns the instant in UTC.
func ParseStartTime(s string, zone *time.Location) (time.Time, error) {
	if zone == nil {
		zone = time.UTC
	}
	t, err := time.ParseInLocation(StartTimeLayout, s, zone)
	if err != nil {
		var err2 error
		if t, err2 = time.ParseInLocation(time.DateTime, s, zone); err2 != nil {
			return time.Time{}, fmt.Errorf("reading start time %q: %w", s, err)
		}
	}
	return t.UTC(), nil
}

// Errors returned when a message cannot be read as a meeting event.
var (
	// ErrNotMeetingEvent means a message is not a meetwatch meeting event,
	// so a consumer sharing a stream can skip it rather than fail.
	ErrNotMeetingEvent = errors.New("not a meetwatch meeting event")
)

// Summary renders the event as one line for people: time, the account
// when there is one, kind, confUUID, subject and, for changed events, the
// fields that changed.
func (e Event) Summary() string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("15:04:05"))
	if e.Account != "" {
		b.WriteString("  " + e.Account)
	}
	fmt.Fprintf(&b, "  %-7s  %s", e.Kind(), e.Subject)
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

// PublishResult counts what one Publish did.
type PublishResult struct {
	// Stored events were new to the stream.
	Stored int
	// Duplicates were already in the stream under the same id.
	Duplicates int
}
