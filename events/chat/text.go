package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot"
)

// Bounds that keep a message short enough to read in a chat window, and
// well within every platform's size limit before any platform cuts it.
const (
	// maxSubject bounds the meeting subject, in characters.
	maxSubject = 200
	// maxChangeLines bounds the changed fields listed one per line; the
	// rest are counted.
	maxChangeLines = 20
	// maxValue bounds an old or new value shown beside its field, in
	// bytes: a longer one is only said to have changed.
	maxValue = 48
)

// Ellipsis ends a text that was cut.
const Ellipsis = "…"

// Text returns the plain text message people read for an event, the one
// the platforms' text messages carry: a first line naming the kind, the
// meeting's subject and its conference ID, then a line for each of the
// organiser, the start (shown in zone, nil meaning the machine's), the
// attendees online and, for an ended meeting, its duration, when the
// event tells them, and for a changed meeting one line per changed field,
// with its old and new values when both are short.
//
// Secrets never appear: a change of a field the default redaction policy
// names is only said to have changed, even from a watcher that publishes
// records whole; and a value cut from an event to fit its size limit is
// shown as such.
func Text(e events.Event, zone *time.Location) string {
	return newMessage(e, zone).text(maxChangeLines)
}

// headline is the first line of the plain text: the kind, the subject
// and the conference ID.
func (m message) headline() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Meeting %s: ", m.kind)
	if m.subject != "" {
		fmt.Fprintf(&b, "%q", m.subject)
	} else {
		b.WriteString("(no subject)")
	}
	if f := m.facts[0]; f.label == labelConference {
		fmt.Fprintf(&b, " (conference ID %s)", f.value)
	} else {
		fmt.Fprintf(&b, " (meeting %s)", f.value)
	}
	if m.initial {
		b.WriteString(", already running when meetwatch started")
	}
	return b.String()
}

// text lays m out as plain text, with at most n change lines.
func (m message) text(n int) string {
	var b strings.Builder
	b.WriteString(m.headline())
	for _, f := range m.facts[1:] {
		fmt.Fprintf(&b, "\n%s: %s", f.label, f.value)
	}
	lines, more := m.changeLines(n)
	for _, l := range lines {
		b.WriteString("\n• " + l)
	}
	if more != "" {
		b.WriteString("\n" + more)
	}
	return b.String()
}

// changeLine renders one changed field: "subject: "a" → "b"" when both
// values are short, and "field changed" otherwise.
func changeLine(c snapshot.FieldChange) string {
	field := TruncateRunes(c.Field, maxSubject)
	switch {
	case c.Redacted:
		return field + " changed (secret, not shown)"
	case c.Truncated:
		return field + " changed (too large to show)"
	}
	old, oldOK := shortValue(c.Old)
	nw, newOK := shortValue(c.New)
	if !oldOK || !newOK {
		return field + " changed"
	}
	return field + ": " + old + " → " + nw
}

// shortValue renders a value of a change for people: a string quoted, any
// other JSON as it is, and an absent one as "(absent)". It reports false
// when the value is too long to be worth showing.
func shortValue(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "(absent)", true
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return "", false
	}
	v := compact.String()
	if strings.HasPrefix(v, `"`) {
		var s string
		if err := json.Unmarshal(compact.Bytes(), &s); err != nil {
			return "", false
		}
		v = fmt.Sprintf("%q", s)
	}
	return v, len(v) <= maxValue
}

// TruncateBytes returns s cut to at most n bytes, ending with Ellipsis
// when it was cut, and never inside a UTF-8 sequence.
func TruncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n < len(Ellipsis) {
		return ""
	}
	cut := n - len(Ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + Ellipsis
}

// TruncateRunes returns s cut to at most n characters (runes), ending with
// Ellipsis when it was cut.
func TruncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	i, count := 0, 0
	for i < len(s) && count < n-1 {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		count++
	}
	return s[:i] + Ellipsis
}

// TruncateUTF16 returns s cut to at most n UTF-16 code units, the way
// Java and JavaScript count a string's length, ending with Ellipsis (one
// unit) when it was cut. A character outside the Basic Multilingual Plane
// counts two and is never split.
func TruncateUTF16(s string, n int) string {
	if utf16Len(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	i, units := 0, 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		w := utf16.RuneLen(r)
		if w < 0 {
			w = 1 // invalid UTF-8 is sent as U+FFFD, one unit
		}
		if units+w > n-1 {
			break
		}
		units += w
		i += size
	}
	return s[:i] + Ellipsis
}

func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if w := utf16.RuneLen(r); w > 0 {
			n += w
		} else {
			n++
		}
	}
	return n
}
