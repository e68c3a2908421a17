package events

import (
	"bytes"
	"encoding/json"
	"fmt"

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
	b = append(b, '{')
	field("specversion", e.SpecVersion)
	field("id", e.ID)
	field("source", e.Source)
	field("type", e.Type)
	field("subject", e.Subject)
	field("time", e.Time)
	field("datacontenttype", e.DataContentType)
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
	if len(e.Data.Truncated) > 0 {
		field("truncated", e.Data.Truncated)
	}
	if err != nil {
		return nil, err
	}
	return append(b, '}', '}'), nil
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
