package events_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// attendees returns a partAttendeeInfo array of n attendees, about 60
// bytes each.
func attendees(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"name":"user%05d","phone":"+99111****%03d","type":"normal"}`, i, i%1000)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// big returns a record whose partAttendeeInfo holds n attendees.
func big(tb testing.TB, n, amount int) snapshot.Meeting {
	tb.Helper()
	return meeting(tb, fmt.Sprintf(`{"confUUID":"u1","conferenceID":"914083136","subject":"All hands","startTime":"2026-11-25 08:00","onlineAttendeeAmount":%d,"remark":"%s","confConfigInfo":{"isAutoMute":true},"partAttendeeInfo":%s}`,
		amount, strings.Repeat("r", 300), attendees(n)))
}

// encode returns the body the publisher sends.
func encode(tb testing.TB, e events.Event) []byte {
	tb.Helper()
	body, err := e.Encode()
	require.NoError(tb, err)
	return body
}

func TestBuildFitsMaxBytes(t *testing.T) {
	const limit = 8 << 10
	small, large := big(t, 3, 1), big(t, 400, 2) // about 0.6 KiB and 25 KiB
	larger := big(t, 401, 3)
	tests := []struct {
		name      string
		change    snapshot.Change
		truncated []string
		changes   []snapshot.FieldChange
	}{
		{
			name:      "started",
			change:    snapshot.Change{Kind: snapshot.Started, Key: "u1", New: large},
			truncated: []string{"conference.partAttendeeInfo"},
		},
		{
			name:      "ended",
			change:    snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: large},
			truncated: []string{"conference.partAttendeeInfo"},
		},
		{
			name:      "changed: both records, and the change of what was cut",
			change:    snapshot.Diff(snapshot.Snapshot{"u1": large}, snapshot.Snapshot{"u1": larger})[0],
			truncated: []string{"conference.partAttendeeInfo", "previous.partAttendeeInfo"},
			changes: []snapshot.FieldChange{
				{Field: "onlineAttendeeAmount", Old: json.RawMessage(`2`), New: json.RawMessage(`3`)},
				{Field: "partAttendeeInfo", Truncated: true},
			},
		},
		{
			name:      "changed: only the record that needs it",
			change:    snapshot.Diff(snapshot.Snapshot{"u1": small}, snapshot.Snapshot{"u1": large})[0],
			truncated: []string{"conference.partAttendeeInfo"},
			changes: []snapshot.FieldChange{
				{Field: "onlineAttendeeAmount", Old: json.RawMessage(`1`), New: json.RawMessage(`2`)},
				{Field: "partAttendeeInfo", Truncated: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			whole, err := builder.Build(tt.change, observed, false, lastSeen)
			require.NoError(t, err)
			require.Greater(t, len(encode(t, whole)), limit, "the test needs an event over the limit")
			assert.Empty(t, whole.Data.Truncated)

			b := builder
			b.MaxBytes = limit
			e, err := b.Build(tt.change, observed, false, lastSeen)
			require.NoError(t, err)
			body := encode(t, e)
			assert.LessOrEqual(t, len(body), limit)
			assert.Equal(t, whole.ID, e.ID, "the id does not depend on trimming")
			assert.Equal(t, tt.truncated, e.Data.Truncated)
			if tt.change.Kind == snapshot.Changed {
				assert.Equal(t, tt.changes, e.Data.Changes)
				assert.Len(t, tt.change.Fields, 2, "the diff's own changes are kept")
				assert.NotEmpty(t, tt.change.Fields[1].New)
			}

			var conference map[string]any
			require.NoError(t, json.Unmarshal(e.Data.Conference, &conference))
			assert.Equal(t, map[string]any{"truncated": true, "count": float64(len(mustArray(t, tt.change.Meeting().Raw(), "partAttendeeInfo")))},
				conference["partAttendeeInfo"], "the marker counts the attendees")
			assert.Equal(t, "All hands", conference["subject"])
			assert.Equal(t, strings.Repeat("r", 300), conference["remark"], "only what must go goes")

			back, err := events.Decode(body)
			require.NoError(t, err)
			assert.Equal(t, e.Data.Truncated, back.Data.Truncated)
		})
	}
}

func mustArray(tb testing.TB, raw json.RawMessage, key string) []any {
	tb.Helper()
	var rec map[string]json.RawMessage
	require.NoError(tb, json.Unmarshal(raw, &rec))
	var arr []any
	require.NoError(tb, json.Unmarshal(rec[key], &arr))
	return arr
}

func TestBuildWithinMaxBytesIsUnchanged(t *testing.T) {
	c := changes(t)[0]
	whole, err := builder.Build(c, observed, false, lastSeen)
	require.NoError(t, err)
	b := builder
	b.MaxBytes = len(encode(t, whole))
	e, err := b.Build(c, observed, false, lastSeen)
	require.NoError(t, err)
	assert.Equal(t, whole, e, "an event exactly at the limit is left alone")

	b.MaxBytes--
	e, err = b.Build(c, observed, false, lastSeen)
	if err == nil {
		assert.LessOrEqual(t, len(encode(t, e)), b.MaxBytes)
	} else {
		assert.ErrorIs(t, err, snapshot.ErrTooLarge, "one byte less cannot be had from records with nothing to cut")
	}
}

func TestBuildCountsEscapes(t *testing.T) {
	// encoding/json writes "<" as \u003c, six bytes for one: the limit is on
	// the encoded event, not on the records' sizes.
	m := meeting(t, `{"confUUID":"u1","subject":"s","remark":"`+strings.Repeat("<", 3000)+`","notes":"`+strings.Repeat("n", 2000)+`"}`)
	b := builder
	b.MaxBytes = 5 << 10
	e, err := b.Build(snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m}, observed, false, lastSeen)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(encode(t, e)), b.MaxBytes)
	assert.Equal(t, []string{"conference.remark"}, e.Data.Truncated)
}

func TestBuildTooLarge(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","subject":"`+strings.Repeat("s", 5000)+`","partAttendeeInfo":`+attendees(100)+`}`)
	b := builder
	b.MaxBytes = 4 << 10
	_, err := b.Build(snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m}, observed, false, lastSeen)
	require.ErrorIs(t, err, snapshot.ErrTooLarge, "the subject is never cut")
	assert.ErrorContains(t, err, "u1")
}

func TestBuildReportsMarkersAlreadyThere(t *testing.T) {
	// A record the watcher trimmed before storing it keeps its markers.
	old := meeting(t, `{"confUUID":"u1","subject":"s","partAttendeeInfo":{"truncated":true,"count":900},"size":1}`)
	cur := meeting(t, `{"confUUID":"u1","subject":"s","partAttendeeInfo":{"truncated":true,"count":901},"size":2}`)
	c := snapshot.Diff(snapshot.Snapshot{"u1": old}, snapshot.Snapshot{"u1": cur})[0]
	e := build(t, c)
	assert.Equal(t, []string{"conference.partAttendeeInfo", "previous.partAttendeeInfo"}, e.Data.Truncated)
	assert.Equal(t, []snapshot.FieldChange{
		{Field: "partAttendeeInfo", Truncated: true},
		{Field: "size", Old: json.RawMessage(`1`), New: json.RawMessage(`2`)},
	}, e.Data.Changes)
}

func TestBuildTrimsAfterRedacting(t *testing.T) {
	red, err := redact.Parse("")
	require.NoError(t, err)
	m, err := red.Seal(meeting(t, `{"confUUID":"u1","subject":"s","chairJoinUri":"https://c/j/`+strings.Repeat("x", 4000)+`","partAttendeeInfo":`+attendees(40)+`}`))
	require.NoError(t, err)
	b := builder
	b.Redact = red
	b.MaxBytes = 2 << 10
	e, err := b.Build(snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m}, observed, false, lastSeen)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(encode(t, e)), b.MaxBytes)
	assert.Equal(t, []string{"conference.partAttendeeInfo"}, e.Data.Truncated, "the secret is gone, not trimmed")
	assert.NotContains(t, string(e.Data.Conference), "chairJoinUri")
}

func TestBuildIgnoresFields(t *testing.T) {
	ignore, err := snapshot.ParseFieldSet("onlineAttendeeAmount,confConfigInfo.isAutoMute")
	require.NoError(t, err)
	b := builder
	b.Ignore = ignore
	a := meeting(t, `{"confUUID":"u1","subject":"s","onlineAttendeeAmount":1,"confConfigInfo":{"isAutoMute":true}}`)
	amount := meeting(t, `{"confUUID":"u1","subject":"s","onlineAttendeeAmount":2,"confConfigInfo":{"isAutoMute":false}}`)
	renamed := meeting(t, `{"confUUID":"u1","subject":"t","onlineAttendeeAmount":3,"confConfigInfo":{"isAutoMute":false}}`)
	diff := func(o, n snapshot.Meeting) snapshot.Change {
		tb := snapshot.Diff(snapshot.Snapshot{"u1": o}, snapshot.Snapshot{"u1": n})
		require.Len(t, tb, 1)
		return tb[0]
	}

	assert.False(t, b.Publishes(diff(a, amount)), "a change confined to ignored fields gets no event")
	assert.True(t, builder.Publishes(diff(a, amount)), "nothing is ignored by default")
	assert.True(t, b.Publishes(snapshot.Change{Kind: snapshot.Started, Key: "u1", New: a}))
	assert.True(t, b.Publishes(snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: a}))

	c := diff(amount, renamed)
	require.True(t, b.Publishes(c))
	e, err := b.Build(c, observed, false, lastSeen)
	require.NoError(t, err)
	assert.Equal(t, []snapshot.FieldChange{{Field: "subject", Old: json.RawMessage(`"s"`), New: json.RawMessage(`"t"`)}}, e.Data.Changes,
		"data.changes leaves ignored fields out")
	assert.JSONEq(t, string(amount.Raw()), string(e.Data.Previous), "previous is the record last seen, ignored fields included")
	assert.Equal(t, events.ID("", c), e.ID)
}

func TestMaxEventBytes(t *testing.T) {
	assert.Equal(t, 1<<20-events.HeaderRoom, events.MaxEventBytes(1<<20))
	assert.Equal(t, 0, events.MaxEventBytes(0), "not connected yet: no limit")
	assert.Equal(t, 1, events.MaxEventBytes(10))

	assert.Equal(t, 0, events.MaxRecordBytes(0))
	assert.Less(t, events.MaxRecordBytes(1<<20), events.MaxEventBytes(1<<20))
	assert.Greater(t, events.MaxRecordBytes(1<<20), 3*events.MaxEventBytes(1<<20)/4)
}

// TestRecordTrimmedForStateFitsAnEvent: a record the watcher trimmed to
// MaxRecordBytes makes a started event within MaxEventBytes without a
// second cut, and the event reports the markers the state holds.
func TestRecordTrimmedForStateFitsAnEvent(t *testing.T) {
	const maxPayload = 64 << 10
	m, paths, err := snapshot.Trim(big(t, 2000, 1), events.MaxRecordBytes(maxPayload))
	require.NoError(t, err)
	require.Equal(t, []string{"partAttendeeInfo"}, paths)

	b := builder
	b.MaxBytes = events.MaxEventBytes(maxPayload)
	e, err := b.Build(snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m}, observed, false, lastSeen)
	require.NoError(t, err)
	assert.Equal(t, string(m.Raw()), string(e.Data.Conference), "no second cut")
	assert.Equal(t, []string{"conference.partAttendeeInfo"}, e.Data.Truncated)
}

// TestPublishOversizedMeeting is the failure the size limit exists for: a
// meeting larger than the server's max_payload fails every publish, and
// with MaxBytes set from the connection it gets its events.
func TestPublishOversizedMeeting(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: "meetings", Duplicates: time.Hour, Attempts: 1})
	require.NoError(t, err)
	require.NoError(t, pub.EnsureStream(t.Context()))

	n := int(nc.MaxPayload()/60) + 1000 // more attendees than one message holds
	old, cur := big(t, n, 1), big(t, n+1, 2)
	changes := []snapshot.Change{
		{Kind: snapshot.Started, Key: "u1", New: old},
		snapshot.Diff(snapshot.Snapshot{"u1": old}, snapshot.Snapshot{"u1": cur})[0],
		{Kind: snapshot.Ended, Key: "u1", Old: cur},
	}
	buildAll := func(b events.Builder) []events.Event {
		evs := make([]events.Event, len(changes))
		for i, c := range changes {
			e, err := b.Build(c, observed, false, lastSeen)
			require.NoError(t, err)
			evs[i] = e
		}
		return evs
	}

	_, err = pub.Publish(t.Context(), buildAll(builder)[:1])
	require.ErrorIs(t, err, nats.ErrMaxPayload, "without a limit the meeting cannot be published")

	b := builder
	b.MaxBytes = events.MaxEventBytes(nc.MaxPayload())
	evs := buildAll(b)
	res, err := pub.Publish(t.Context(), evs)
	require.NoError(t, err)
	assert.Equal(t, events.PublishResult{Stored: 3}, res, "started, changed and ended all go out")

	msgs := natstest.Messages(t, nc, "MEETINGS")
	require.Len(t, msgs, 3)
	for i, m := range msgs {
		e, err := events.Decode(m.Data)
		require.NoError(t, err)
		assert.Equal(t, evs[i].ID, e.ID)
		assert.Contains(t, e.Data.Truncated, "conference.partAttendeeInfo")
	}
}

func TestBuildFitsEveryLimit(t *testing.T) {
	old := meeting(t, `{"confUUID":"u1","subject":"s","a":`+attendees(300)+`,"b":"`+strings.Repeat("<", 900)+`","o":{"p":`+attendees(20)+`,"q":{"r":"`+strings.Repeat("r", 700)+`"}},"n":1}`)
	cur := meeting(t, `{"confUUID":"u1","subject":"s","a":`+attendees(301)+`,"b":"`+strings.Repeat(">", 800)+`","o":{"p":`+attendees(21)+`,"q":{"r":"`+strings.Repeat("s", 700)+`"}},"n":2,"x":"`+strings.Repeat("x", 5000)+`"}`)
	c := snapshot.Diff(snapshot.Snapshot{"u1": old}, snapshot.Snapshot{"u1": cur})[0]
	whole := build(t, c)
	var fitted, tooLarge int
	for limit := len(encode(t, whole)) + 10; limit > 200; limit = limit * 9 / 10 {
		b := builder
		b.MaxBytes = limit
		e, err := b.Build(c, observed, false, lastSeen)
		if err != nil {
			require.ErrorIs(t, err, snapshot.ErrTooLarge, "limit %d", limit)
			tooLarge++
			continue
		}
		fitted++
		body := encode(t, e)
		assert.LessOrEqual(t, len(body), limit)
		assert.Equal(t, whole.ID, e.ID)
		again, err := b.Build(c, observed, false, lastSeen)
		require.NoError(t, err)
		assert.Equal(t, body, encode(t, again), "limit %d: the same change builds the same event", limit)
		cut := snapshot.NewFieldSet(e.Data.Truncated...)
		for i, fc := range e.Data.Changes {
			assert.Equal(t, c.Fields[i].Field, fc.Field)
			trimmed := cut.Overlaps("conference."+fc.Field) || cut.Overlaps("previous."+fc.Field)
			assert.Equal(t, trimmed, fc.Truncated, "limit %d: change of %q", limit, fc.Field)
			assert.Equal(t, trimmed, len(fc.Old) == 0 && len(fc.New) == 0, "limit %d: change of %q", limit, fc.Field)
		}
	}
	assert.Positive(t, fitted)
	assert.Positive(t, tooLarge, "the smallest limits cannot be met")
}

func BenchmarkBuild(b *testing.B) {
	small := changes(b)[0]
	old, cur := big(b, 20_000, 1), big(b, 20_001, 2) // about 1.2 MiB each
	large := snapshot.Diff(snapshot.Snapshot{"u1": old}, snapshot.Snapshot{"u1": cur})[0]
	for _, bc := range []struct {
		name   string
		change snapshot.Change
		limit  int
	}{
		{name: "changed/small/no-limit", change: small},
		{name: "changed/small/1MiB", change: small, limit: events.MaxEventBytes(1 << 20)},
		{name: "changed/2x1.2MiB/1MiB", change: large, limit: events.MaxEventBytes(1 << 20)},
	} {
		bl := builder
		bl.MaxBytes = bc.limit
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bl.Build(bc.change, observed, false, lastSeen); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
