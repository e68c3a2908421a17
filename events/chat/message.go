package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Style says how a webhook's messages are written.
type Style struct {
	// Zone is the zone start times are shown in; nil means the machine's
	// (time.Local), where the people reading most likely are.
	Zone *time.Location
	// Plain sends the platform's text message instead of its rich one
	// (Slack blocks, a Feishu card, DingTalk or WeCom markdown): for a
	// client that shows the rich ones badly, or a robot that only takes
	// text.
	Plain bool
}

// Labels of the facts a message shows, the same in every format.
const (
	labelConference = "Conference ID"
	labelOrganiser  = "Organiser"
	labelStarted    = "Started"
	labelOnline     = "Online attendees"
	labelDuration   = "Duration"
	labelChanges    = "Changes"
	initialNote     = "Already running when meetwatch started"
)

// fact is one labelled value of a message, such as the organiser.
type fact struct{ label, value string }

// message is what every format says about an event, each value already
// cut to the bounds that keep a message short; the formats differ only
// in how they lay it out and escape it.
type message struct {
	kind events.Kind
	// subject is the meeting's subject, "" when it has none.
	subject string
	// facts are shown in this order: the conference ID (or the meeting's
	// key when the record has none), the organiser, the start, the
	// attendees online and, on ended, the duration; those the event does
	// not tell are left out.
	facts   []fact
	initial bool
	// changes are the lines of a changed event, at most maxChangeLines;
	// more counts the changed fields beyond them.
	changes []string
	more    int
}

// record is what a message reads of the meeting record.
type record struct {
	Subject       string          `json:"subject"`
	ConferenceID  string          `json:"conferenceID"`
	ScheduserName string          `json:"scheduserName"`
	StartTime     string          `json:"startTime"`
	Online        json.RawMessage `json:"onlineAttendeeAmount"`
}

// newMessage reads what a message says from e, showing times in zone.
func newMessage(e events.Event, zone *time.Location) message {
	if zone == nil {
		zone = time.Local
	}
	var rec record
	// A record that does not decode still gets a message: the kind and
	// the meeting's key say what happened.
	_ = json.Unmarshal(e.Data.Conference, &rec)

	m := message{kind: e.Kind(), subject: TruncateRunes(rec.Subject, maxSubject), initial: e.Data.Initial}
	if rec.ConferenceID != "" {
		m.facts = append(m.facts, fact{labelConference, TruncateRunes(rec.ConferenceID, maxSubject)})
	} else {
		m.facts = append(m.facts, fact{"Meeting", TruncateRunes(e.Subject, maxSubject)})
	}
	if rec.ScheduserName != "" {
		m.facts = append(m.facts, fact{labelOrganiser, TruncateRunes(rec.ScheduserName, maxSubject)})
	}
	if start, ok := startedAt(e, rec.StartTime); ok {
		m.facts = append(m.facts, fact{labelStarted, formatTime(start, zone)})
	}
	if n, ok := count(rec.Online); ok {
		m.facts = append(m.facts, fact{labelOnline, n})
	}
	if e.Kind() == snapshot.Ended && e.Data.DurationSeconds != nil {
		m.facts = append(m.facts, fact{labelDuration, humanDuration(*e.Data.DurationSeconds)})
	}
	// An event carries secrets when its watcher publishes records whole
	// (MEETWATCH_REDACT=none): a chat message, read by a whole group,
	// hides them all the same.
	var changes []snapshot.FieldChange
	for _, c := range e.Data.Changes { // one at a time: in the event's order
		changes = append(changes, secrets.RedactChanges([]snapshot.FieldChange{c})...)
	}
	for i, c := range changes {
		if i == maxChangeLines {
			m.more = len(changes) - i
			break
		}
		m.changes = append(m.changes, changeLine(c))
	}
	return m
}

// secrets is the default redaction policy: what a chat message never
// shows, whatever the event carries.
var secrets = func() *redact.Policy {
	p, err := redact.New(redact.Default)
	if err != nil {
		panic(fmt.Sprintf("the default redaction policy: %v", err)) // a fixed list, checked by its tests
	}
	return p
}()

// startedAt is when the meeting started: data.startedAt, which the
// watcher read in the API's zone, or else the record's startTime read as
// UTC, the zone the API echoes.
func startedAt(e events.Event, startTime string) (time.Time, bool) {
	if e.Data.StartedAt != nil {
		return *e.Data.StartedAt, true
	}
	if startTime == "" {
		return time.Time{}, false
	}
	t, err := events.ParseStartTime(startTime, time.UTC)
	return t, err == nil
}

// formatTime shows t in zone to the minute, the API's precision, with its
// offset from UTC: zone abbreviations are ambiguous (CST is China's and
// the US's), and a reader in another zone can still place it.
func formatTime(t time.Time, zone *time.Location) string {
	t = t.In(zone)
	_, offset := t.Zone()
	if offset == 0 {
		return t.Format("2006-01-02 15:04") + " (UTC)"
	}
	return t.Format("2006-01-02 15:04 (UTC-07:00)")
}

// count reads the attendee count, a number in the model, or a string of
// digits from an API that quotes its numbers.
func count(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", false
	}
	var s string
	if raw[0] == '"' {
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
	} else {
		s = string(raw)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

// humanDuration shows a meeting's length the way people say it: "42 s"
// under a minute, then hours and minutes ("1 h 5 min", "2 h", "45 min"),
// the seconds left out.
func humanDuration(secs int64) string {
	if secs < 60 {
		return fmt.Sprintf("%d s", max(secs, 0))
	}
	h, mins := secs/3600, secs%3600/60
	switch {
	case h == 0:
		return fmt.Sprintf("%d min", mins)
	case mins == 0:
		return fmt.Sprintf("%d h", h)
	default:
		return fmt.Sprintf("%d h %d min", h, mins)
	}
}

// title is the headline of every format: "Meeting started: Weekly sync".
func (m message) title() string {
	s := m.subject
	if s == "" {
		s = "(no subject)"
	}
	return "Meeting " + string(m.kind) + ": " + oneLine(s)
}

// changeLines returns the first n change lines, and a line counting the
// changed fields left out ("" when none is).
func (m message) changeLines(n int) (lines []string, more string) {
	n = max(min(n, len(m.changes)), 0)
	if left := m.more + len(m.changes) - n; left > 0 {
		more = fmt.Sprintf("… and %d more changed fields", left)
	}
	return m.changes[:n], more
}

// oneLine puts s on one line: a line break in a subject must not start
// a heading or a quote in a markdown message.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t\v\f\u2028\u2029") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == '\r' || r == '\n' || r == '\t' || r == '\v' || r == '\f' || r == '\u2028' || r == '\u2029'
	}), " ")
}
