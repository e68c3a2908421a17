package meetingapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/jsonscan"
)

// DecodePage reads one answer of the list endpoint. It accepts only a JSON
// object with an integer count and an array (or null) of records that each
// have a confUUID; anything else is ErrBadPage with the reason. Each record
// is made a Meeting by read; nil means snapshot.ParseMeeting.
//
// The body is read whole (the client's MaxBodyBytes bounds it) into a
// buffer reused from page to page, and scanned once, in place: records are
// handed to read as slices of it, which read must not keep, so that one
// that read remembers costs no decoding at all.
func DecodePage(r io.Reader, read snapshot.ReadFunc) (Page, error) {
	buf, err := readBody(r)
	defer bodies.Put(buf)
	if err != nil {
		return Page{}, err
	}
	return decodeBody(buf.Bytes(), read)
}

// readBody reads r whole into a buffer from bodies, which the caller puts
// back, even on an error.
func readBody(r io.Reader) (*bytes.Buffer, error) {
	buf := bodies.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return buf, fmt.Errorf("%w: reading body: %w", ErrBadPage, err)
	}
	return buf, nil
}

// decodeBody is DecodePage on a body read whole; records are slices of it.
func decodeBody(body []byte, read snapshot.ReadFunc) (Page, error) {
	if read == nil {
		read = snapshot.ParseMeeting
	}
	sc := jsonscan.Scanner{Src: body}
	start := sc.Space(0)
	switch {
	case start == len(body):
		return Page{}, fmt.Errorf("%w: empty body", ErrBadPage)
	case body[start] == '<':
		return Page{}, fmt.Errorf("%w: body is HTML, not JSON (a gateway error page?)", ErrBadPage)
	case body[start] != '{':
		return Page{}, fmt.Errorf("%w: body is not a JSON object (starts with %q)", ErrBadPage, body[start])
	}
	var (
		p     Page
		count *int
		raws  [][]byte
	)
	p.Null = true
	end, err := sc.Object(start, func(key []byte, _ bool, at int) (int, error) {
		if string(key) == "data" && at < len(body) && body[at] == '[' {
			p.Null, raws = false, make([][]byte, 0, 512)
			return sc.Array(at, func(v []byte) error {
				raws = append(raws, v)
				return nil
			})
		}
		vs, end, err := sc.Value(at)
		if err != nil {
			return 0, err
		}
		value := body[vs:end]
		switch string(key) {
		case "offset":
			err = pageInt(key, value, &p.Offset)
		case "limit":
			err = pageInt(key, value, &p.Limit)
		case "count":
			count = nil
			if string(value) != "null" {
				count = new(int)
				err = pageInt(key, value, count)
			}
		case "data":
			if string(value) != "null" {
				err = errors.New("data is not an array")
			}
			p.Null, raws = true, nil
		}
		return end, err
	})
	if errors.Is(err, jsonscan.ErrTruncated) {
		return Page{}, fmt.Errorf("%w: truncated body", ErrBadPage)
	}
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrBadPage, err)
	}
	if sc.Space(end) != len(body) {
		return Page{}, fmt.Errorf("%w: data after the JSON object", ErrBadPage)
	}
	if count == nil {
		return Page{}, fmt.Errorf("%w: no count", ErrBadPage)
	}
	p.Count = *count
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

// bodies holds the buffers pages are read into: a listing reads hundreds
// of bodies of most of a megabyte each.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// pageInt decodes an integer field of the page; null leaves it as it is.
func pageInt(key, value []byte, dst *int) error {
	if string(value) == "null" {
		return nil
	}
	if err := json.Unmarshal(value, dst); err != nil {
		return fmt.Errorf("field %s: %w", key, err)
	}
	return nil
}
