package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

// Encode returns the message body of e: the same JSON object that
// json.Marshal makes of it, except that the records are copied in as they
// are rather than re-validated and HTML-escaped byte by byte, which made
// encoding most of a first poll's cost. Records that are not compact
// JSON are compacted; ones that are not JSON are an error.
func (e Event) Encode() ([]byte, error) {
	b := make([]byte, 0, 512+len(e.Data.Conference)+len(e.Data.Previous))
	var err error
	// name starts each member: the key, and a comma before all but the
	// first of an object.
	name := func(key string) {
		if c := b[len(b)-1]; c != '{' {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, '"', ':')
	}
	field := func(key string, v any) {
		if err != nil {
			return
		}
		var enc []byte
		if enc, err = json.Marshal(v); err != nil {
			err = fmt.Errorf("encoding event %s: %s: %w", e.ID, key, err)
			return
		}
		name(key)
		b = append(b, enc...)
	}
	raw := func(key string, v json.RawMessage) {
		if err != nil {
			return
		}
		name(key)
		if b, err = appendRaw(b, v); err != nil {
			err = fmt.Errorf("encoding event %s: %s: %w", e.ID, key, err)
		}
	}
	// str writes a string member, without json.Marshal when the string
	// needs no escaping (as ids, subjects and types do): a first poll
	// encodes a hundred thousand events.
	str := func(key, v string) {
		if !plain(v) {
			field(key, v)
			return
		}
		name(key)
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
	}
	b = append(b, '{')
	str("specversion", e.SpecVersion)
	str("id", e.ID)
	str("source", e.Source)
	str("type", e.Type)
	str("subject", e.Subject)
	if y := e.Time.Year(); y < 0 || y > 9999 {
		field("time", e.Time) // json.Marshal's error
	} else {
		name("time")
		b = append(b, '"')
		b = e.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	str("datacontenttype", e.DataContentType)
	if e.DataSchema != "" {
		str("dataschema", e.DataSchema)
	}
	if e.Account != "" {
		str("account", e.Account)
	}
	name("data")
	b = append(b, '{')
	raw("conference", e.Data.Conference)
	if len(e.Data.Previous) > 0 {
		raw("previous", e.Data.Previous)
	}
	if len(e.Data.Changes) > 0 {
		field("changes", e.Data.Changes)
	}
	if e.Data.Initial {
		field("initial", true)
	}
	if e.Data.LastSeen != nil {
		field("lastSeen", e.Data.LastSeen)
	}
	if e.Data.StartedAt != nil {
		field("startedAt", e.Data.StartedAt)
	}
	if e.Data.EndedAt != nil {
		field("endedAt", e.Data.EndedAt)
	}
	if e.Data.DurationSeconds != nil {
		name("durationSeconds")
		b = strconv.AppendInt(b, *e.Data.DurationSeconds, 10)
	}
	if e.Data.Incarnation != 0 {
		name("incarnation")
		b = strconv.AppendInt(b, int64(e.Data.Incarnation), 10)
	}
	if len(e.Data.Truncated) > 0 {
		field("truncated", e.Data.Truncated)
	}
	if err != nil {
		return nil, err
	}
	return append(b, '}', '}'), nil
}

// plain reports whether json.Marshal writes s as it is between quotes:
// printable ASCII, with none of the characters it escapes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// appendRaw appends v, a JSON value, compacted; empty means null.
func appendRaw(b []byte, v json.RawMessage) ([]byte, error) {
	if len(v) == 0 {
		return append(b, "null"...), nil
	}
	switch valid, compact := jsonscan.Valid(v); {
	case !valid:
		return nil, fmt.Errorf("%w: not a JSON value", jsonscan.ErrSyntax)
	case compact:
		return append(b, v...), nil
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Message is an event encoded for publishing: what a Publisher sends of
// it. A watcher encodes each event where it builds it, so that the
// goroutine that publishes, and waits for the acknowledgements, does
// nothing but send.
type Message struct {
	// ID is the event's id, sent as Nats-Msg-Id.
	ID string
	// Kind and Meeting (the event's subject attribute, a confUUID) make
	// the NATS subject.
	Kind    Kind
	Meeting string
	// Body is the encoded event.
	Body []byte
}

// Message returns e encoded (see Encode).
func (e Event) Message() (Message, error) {
	body, err := e.Encode()
	if err != nil {
		return Message{}, err
	}
	return Message{ID: e.ID, Kind: e.Kind(), Meeting: e.Subject, Body: body}, nil
}
