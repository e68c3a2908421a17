package meetingapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/meetwatch/meetwatch/snapshot"
)

// pageWire is the list endpoint's answer. Pointers tell a missing field from
// a zero one; a field of the wrong JSON type fails the decode.
type pageWire struct {
	Offset *int               `json:"offset"`
	Limit  *int               `json:"limit"`
	Count  *int               `json:"count"`
	Data   *[]json.RawMessage `json:"data"`
}

// DecodePage reads one answer of the list endpoint. It accepts only a JSON
// object with an integer count and an array (or null) of records that each
// have a confUUID; anything else is ErrBadPage with the reason. Each record
// is made a Meeting by read; nil means snapshot.ParseMeeting.
//
// encoding/json's Decoder reads the whole object into its buffer before it
// decodes it, so a page's body is held beside its records while it is
// decoded; the client's MaxBodyBytes is what bounds that.
func DecodePage(r io.Reader, read snapshot.ReadFunc) (Page, error) {
	if read == nil {
		read = snapshot.ParseMeeting
	}
	br := bufio.NewReader(r)
	if err := expectObject(br); err != nil {
		return Page{}, err
	}
	dec := json.NewDecoder(br)
	var w pageWire
	if err := dec.Decode(&w); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Page{}, fmt.Errorf("%w: truncated body", ErrBadPage)
		}
		return Page{}, fmt.Errorf("%w: %w", ErrBadPage, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Page{}, fmt.Errorf("%w: data after the JSON object", ErrBadPage)
	}
	if w.Count == nil {
		return Page{}, fmt.Errorf("%w: no count", ErrBadPage)
	}
	p := Page{Count: *w.Count, Null: w.Data == nil}
	if w.Offset != nil {
		p.Offset = *w.Offset
	}
	if w.Limit != nil {
		p.Limit = *w.Limit
	}
	var raws []json.RawMessage
	if w.Data != nil {
		raws = *w.Data
	}
	switch {
	case p.Count < 0 || p.Count > maxCount:
		return Page{}, fmt.Errorf("%w: implausible count %d", ErrBadPage, p.Count)
	case len(raws) > p.Count:
		return Page{}, fmt.Errorf("%w: %d records but count is %d", ErrBadPage, len(raws), p.Count)
	}
	p.Records = make([]snapshot.Meeting, len(raws))
	for i, raw := range raws {
		m, err := read(raw)
		if err != nil {
			return Page{}, fmt.Errorf("%w: record %d: %w", ErrBadPage, i, err)
		}
		p.Records[i] = m
	}
	return p, nil
}

// expectObject checks that the body starts with a JSON object, so that an
// empty 200 or a gateway's HTML page gets a reason a person understands.
func expectObject(br *bufio.Reader) error {
	for {
		b, err := br.ReadByte()
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: empty body", ErrBadPage)
		case err != nil:
			return fmt.Errorf("%w: reading body: %w", ErrBadPage, err)
		case b == ' ' || b == '\t' || b == '\r' || b == '\n':
			continue
		case b == '{':
			return br.UnreadByte()
		case b == '<':
			return fmt.Errorf("%w: body is HTML, not JSON (a gateway error page?)", ErrBadPage)
		default:
			return fmt.Errorf("%w: body is not a JSON object (starts with %q)", ErrBadPage, b)
		}
	}
}
