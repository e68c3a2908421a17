package events_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

func meeting(tb testing.TB, js string) snapshot.Meeting {
	tb.Helper()
	m, err := snapshot.ParseMeeting([]byte(js))
	require.NoError(tb, err)
	return m
}

var (
	observed = time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	lastSeen = observed.Add(-15 * time.Second)
	builder  = events.Builder{Source: events.Source("api.meeting.huaweicloud.com"), Prefix: "meetings"}
)

func build(tb testing.TB, c snapshot.Change) events.Event {
	tb.Helper()
	e, err := builder.Build(c, observed, false, lastSeen)
	require.NoError(tb, err)
	return e
}

func changes(tb testing.TB) []snapshot.Change {
	tb.Helper()
	old := meeting(tb, `{"confUUID":"050c7898216811eaa6958bf3bb9ac167","conferenceID":"914083136","subject":"user01's meeting"}`)
	cur := meeting(tb, `{"confUUID":"050c7898216811eaa6958bf3bb9ac167","conferenceID":"914083136","subject":"Renamed"}`)
	return snapshot.Diff(snapshot.Snapshot{old.UUID: old}, snapshot.Snapshot{cur.UUID: cur})
}

func TestBuildEnvelope(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","subject":"s","unknownField":[1]}`)
	tests := []struct {
		name   string
		change snapshot.Change
		check  func(t *testing.T, e events.Event)
	}{
		{
			name:   "started from the first snapshot",
			change: snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m},
			check: func(t *testing.T, e events.Event) {
				assert.True(t, e.Data.Initial)
				assert.Nil(t, e.Data.LastSeen)
				assert.Empty(t, e.Data.Previous)
			},
		},
		{
			name:   "ended",
			change: snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: m},
			check: func(t *testing.T, e events.Event) {
				assert.False(t, e.Data.Initial, "initial is for started events only")
				require.NotNil(t, e.Data.LastSeen)
				assert.Equal(t, lastSeen, *e.Data.LastSeen)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := builder.Build(tt.change, observed, true, lastSeen)
			require.NoError(t, err)
			body, err := json.Marshal(e)
			require.NoError(t, err)
			var raw map[string]any
			require.NoError(t, json.Unmarshal(body, &raw))
			assert.Equal(t, "1.0", raw["specversion"])
			assert.Equal(t, "meetwatch://api.meeting.huaweicloud.com", raw["source"])
			assert.Equal(t, "meetwatch.meeting."+string(tt.change.Kind), raw["type"])
			assert.Equal(t, "u1", raw["subject"])
			assert.Equal(t, "2026-11-25T09:30:00Z", raw["time"])
			assert.Equal(t, "application/json", raw["datacontenttype"])
			assert.Len(t, raw["id"], 32)
			assert.JSONEq(t, `{"confUUID":"u1","subject":"s","unknownField":[1]}`, string(e.Data.Conference))
			tt.check(t, e)

			back, err := events.Decode(body)
			require.NoError(t, err)
			assert.Equal(t, e.ID, back.ID)
			assert.Equal(t, tt.change.Kind, back.Kind())
		})
	}
}

func TestIDIsDeterministic(t *testing.T) {
	a := meeting(t, `{"confUUID":"u1","onlineAttendeeAmount":1}`)
	b := meeting(t, `{"confUUID":"u1","onlineAttendeeAmount":2}`)
	c := meeting(t, `{"confUUID":"u1","onlineAttendeeAmount":3}`)
	started := func(m snapshot.Meeting) string {
		return events.ID("", snapshot.Change{Kind: snapshot.Started, Key: m.UUID, New: m})
	}
	changed := func(o, n snapshot.Meeting) string {
		return events.ID("", snapshot.Change{Kind: snapshot.Changed, Key: o.UUID, Old: o, New: n})
	}
	assert.Equal(t, started(a), started(a))
	assert.Equal(t, started(a), started(b), "a meeting starts once, whatever its live fields say")
	assert.Equal(t, changed(a, b), changed(a, b))
	assert.NotEqual(t, changed(a, b), changed(b, c), "two different changes never share an id")
	assert.NotEqual(t, started(a), events.ID("", snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: a}))
	assert.NotEqual(t, started(a), started(meeting(t, `{"confUUID":"u2"}`)))
}

// Without an account, ids are those of a watcher of one account: a
// version with accounts publishes again under the ids already stored.
func TestIDWithoutAnAccountIsUnchanged(t *testing.T) {
	m := meeting(t, `{"confUUID":"050c7898216811eaa6958bf3bb9ac167"}`)
	assert.Equal(t, "27b2a85506f952a7507bbc035e65365a", events.ID("", snapshot.Change{Kind: snapshot.Started, Key: m.UUID, New: m}))
	assert.Equal(t, "324a15fe8654c4841df88dd294e9dba7", events.ID("", snapshot.Change{Kind: snapshot.Ended, Key: m.UUID, Old: m, Incarnation: 2}))
}

// An account's events name it in their source, their account attribute
// and their subject, and hash it into their id: two accounts that list
// one confUUID publish two events, which the stream's deduplication
// keeps apart.
func TestBuildForAnAccount(t *testing.T) {
	m := meeting(t, `{"confUUID":"u1","conferenceID":"914083136","subject":"s"}`)
	change := snapshot.Change{Kind: snapshot.Started, Key: "u1", New: m}
	acme := events.Builder{Source: events.AccountSource("api.meeting.huaweicloud.com", "acme"), Prefix: "meetings", Account: "acme"}
	beta := acme
	beta.Source, beta.Account = events.AccountSource("api.meeting.huaweicloud.com", "beta"), "beta"

	e, err := acme.Build(change, observed, false, time.Time{})
	require.NoError(t, err)
	body, err := e.Encode()
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	assert.Equal(t, "meetwatch://api.meeting.huaweicloud.com/acme", raw["source"])
	assert.Equal(t, "acme", raw["account"], "the extension attribute, beside the others")
	assert.Equal(t, "u1", raw["subject"])
	assert.Equal(t, "meetings.acme.started.u1", e.NATSSubject("meetings"))

	back, err := events.Decode(body)
	require.NoError(t, err)
	assert.Equal(t, "acme", back.Account)
	assert.Equal(t, e.ID, back.ID)
	assert.Contains(t, back.Summary(), "  acme  started  u1  \"s\" (914083136)")

	other, err := beta.Build(change, observed, false, time.Time{})
	require.NoError(t, err)
	plain := build(t, change)
	assert.NotEqual(t, e.ID, other.ID, "two accounts listing one confUUID")
	assert.NotEqual(t, e.ID, plain.ID, "an account and no account")
	assert.Equal(t, events.ID("acme", change), e.ID)
	assert.Equal(t, events.ID("", change), plain.ID)

	body, err = plain.Encode()
	require.NoError(t, err)
	assert.NotContains(t, string(body), `"account"`, "no account, no attribute")
	assert.Equal(t, "meetwatch://api.meeting.huaweicloud.com", events.AccountSource("api.meeting.huaweicloud.com", ""))
	assert.Equal(t, "meetings.started.u1", plain.NATSSubject("meetings"))
}

// Every account's events go to the one stream, under
// <prefix>.<account>.<kind>.<confUUID>: <prefix>.*.ended.> selects every
// account's ends, <prefix>.acme.> one account's events. Publishers of
// accounts make sure of the stream's subjects <prefix>.>, never of one
// account's alone.
func TestAccountsShareTheStream(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	m := meeting(t, `{"confUUID":"u1"}`)
	for _, account := range []string{"acme", "beta"} {
		pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: "meetings", Account: account, Duplicates: time.Hour})
		require.NoError(t, err)
		require.NoError(t, pub.EnsureStream(t.Context()))
		b := events.Builder{Source: events.AccountSource("api.meeting.huaweicloud.com", account), Prefix: "meetings", Account: account}
		var evs []events.Event
		for _, c := range []snapshot.Change{{Kind: snapshot.Started, Key: "u1", New: m}, {Kind: snapshot.Ended, Key: "u1", Old: m}} {
			e, err := b.Build(c, observed, false, lastSeen)
			require.NoError(t, err)
			evs = append(evs, e)
		}
		res, err := pub.Publish(t.Context(), evs)
		require.NoError(t, err)
		assert.Equal(t, events.PublishResult{Stored: 2}, res, "%s: the same confUUID as the other account, stored all the same", account)
	}
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := js.Stream(t.Context(), "MEETINGS")
	require.NoError(t, err)
	assert.Equal(t, []string{"meetings.>"}, st.CachedInfo().Config.Subjects)

	selected := func(filter string) []string {
		t.Helper()
		cons, err := js.OrderedConsumer(t.Context(), "MEETINGS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		require.NoError(t, err)
		batch, err := cons.FetchNoWait(10)
		require.NoError(t, err)
		var got []string
		for m := range batch.Messages() {
			e, err := events.Decode(m.Data())
			require.NoError(t, err)
			assert.Equal(t, m.Subject(), e.NATSSubject("meetings"), "the subject the event says")
			got = append(got, m.Subject())
		}
		return got
	}
	assert.Equal(t, []string{"meetings.acme.ended.u1", "meetings.beta.ended.u1"}, selected("meetings.*.ended.>"))
	assert.Equal(t, []string{"meetings.acme.started.u1", "meetings.acme.ended.u1"}, selected("meetings.acme.>"))
}

func TestSubjectNeverWidens(t *testing.T) {
	tests := []struct{ uuid, want string }{
		{"050c7898216811eaa6958bf3bb9ac167", "meetings.started.050c7898216811eaa6958bf3bb9ac167"},
		{"a.b", "meetings.started.=YS5i"},
		{">", "meetings.started.=Pg"},
		{"a b", "meetings.started.=YSBi"},
		{"", "meetings.started.="},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, events.Subject("meetings", snapshot.Started, tt.uuid), "confUUID %q", tt.uuid)
	}
}

func TestPublishIsIdempotent(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: "meetings", Duplicates: time.Hour, MaxAge: 30 * 24 * time.Hour})
	require.NoError(t, err)
	require.NoError(t, pub.EnsureStream(t.Context()))

	var evs []events.Event
	for i := range 2500 { // more than one batch
		m := meeting(t, fmt.Sprintf(`{"confUUID":"u%d"}`, i))
		evs = append(evs, build(t, snapshot.Change{Kind: snapshot.Started, Key: m.UUID, New: m}))
	}
	evs = append(evs, build(t, changes(t)[0]))

	res, err := pub.Publish(t.Context(), evs)
	require.NoError(t, err)
	assert.Equal(t, events.PublishResult{Stored: 2501}, res)

	res, err = pub.Publish(t.Context(), evs)
	require.NoError(t, err)
	assert.Equal(t, events.PublishResult{Duplicates: 2501}, res, "a re-publish is a duplicate, not a new event")

	msgs := natstest.Messages(t, nc, "MEETINGS")
	require.Len(t, msgs, 2501)
	last := msgs[2500]
	assert.Equal(t, "meetings.changed.050c7898216811eaa6958bf3bb9ac167", last.Subject)
	assert.Equal(t, evs[2500].ID, last.Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, "application/cloudevents+json", last.Header.Get("Content-Type"))

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := js.Stream(t.Context(), "MEETINGS")
	require.NoError(t, err)
	assert.Equal(t, time.Hour, st.CachedInfo().Config.Duplicates)
	assert.Equal(t, 30*24*time.Hour, st.CachedInfo().Config.MaxAge)
	assert.Equal(t, []string{"meetings.>"}, st.CachedInfo().Config.Subjects)
	assert.Equal(t, jetstream.FileStorage, st.CachedInfo().Config.Storage)
}

func TestPublishFailsWhenNothingAcknowledges(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	// No stream: nobody acknowledges, so Publish must fail, never pretend.
	pub, err := publish.New(nc, publish.Config{Stream: "MEETINGS", Prefix: "meetings", Attempts: 2, AckTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	_, err = pub.Publish(t.Context(), []events.Event{build(t, changes(t)[0])})
	require.Error(t, err)
	assert.ErrorContains(t, err, "1 of 1 events unacknowledged after 2 attempts")
}

func ExampleSubject() {
	fmt.Println(events.Subject("meetings", snapshot.Ended, "050c7898216811eaa6958bf3bb9ac167"))
	// Output: meetings.ended.050c7898216811eaa6958bf3bb9ac167
}

func ExampleAccountSource() {
	// The source and the subject of an event of the account acme.
	fmt.Println(events.AccountSource("api.meeting.huaweicloud.com", "acme"))
	fmt.Println(events.Subject("meetings.acme", snapshot.Ended, "050c7898216811eaa6958bf3bb9ac167"))
	// Output:
	// meetwatch://api.meeting.huaweicloud.com/acme
	// meetings.acme.ended.050c7898216811eaa6958bf3bb9ac167
}

func ExampleDecode() {
	body := []byte(`{"specversion":"1.0","id":"5f0c","source":"meetwatch://api.meeting.huaweicloud.com",
		"type":"meetwatch.meeting.changed","subject":"050c7898216811eaa6958bf3bb9ac167",
		"time":"2026-11-25T09:30:00Z","datacontenttype":"application/json",
		"data":{"conference":{"confUUID":"050c7898216811eaa6958bf3bb9ac167","subject":"Renamed"},
		"changes":[{"field":"subject","old":"user01's meeting","new":"Renamed"}]}}`)
	e, err := events.Decode(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.Kind(), e.Subject)
	for _, c := range e.Data.Changes {
		fmt.Printf("%s: %s -> %s\n", c.Field, c.Old, c.New)
	}
	// Output:
	// changed 050c7898216811eaa6958bf3bb9ac167
	// subject: "user01's meeting" -> "Renamed"
}

func ExampleEvent_Summary() {
	old, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"050c7898216811eaa6958bf3bb9ac167","conferenceID":"914083136","subject":"user01's meeting"}`))
	cur, _ := snapshot.ParseMeeting([]byte(`{"confUUID":"050c7898216811eaa6958bf3bb9ac167","conferenceID":"914083136","subject":"Renamed"}`))
	change := snapshot.Diff(snapshot.Snapshot{old.UUID: old}, snapshot.Snapshot{cur.UUID: cur})[0]

	e, _ := builder.Build(change, observed, false, time.Time{})
	fmt.Println(e.Summary()[len("15:04:05"):]) // the clock part is local time
	// Output:   changed  050c7898216811eaa6958bf3bb9ac167  "Renamed" (914083136)  changed: subject
}

func TestBuildKeepsSecretsOut(t *testing.T) {
	red, err := redact.Parse("")
	require.NoError(t, err)
	b := builder
	b.Redact = red
	seal := func(js string) snapshot.Meeting {
		m, err := red.Seal(meeting(t, js))
		require.NoError(t, err)
		return m
	}
	old := seal(`{"confUUID":"u1","subject":"s","chairJoinUri":"https://c/j/1/chairsecret","confConfigInfo":{"guestPwd":"111111","isAutoMute":true},"passwordEntry":[{"conferenceRole":"chair","password":"222222"}]}`)
	cur := seal(`{"confUUID":"u1","subject":"s","chairJoinUri":"https://c/j/1/chairsecret","confConfigInfo":{"guestPwd":"333333","isAutoMute":true},"passwordEntry":[{"conferenceRole":"chair","password":"222222"}]}`)
	changes := snapshot.Diff(snapshot.Snapshot{"u1": old}, snapshot.Snapshot{"u1": cur})
	require.Len(t, changes, 1)

	e, err := b.Build(changes[0], observed, false, lastSeen)
	require.NoError(t, err)
	body, err := json.Marshal(e)
	require.NoError(t, err)
	for _, secret := range []string{"chairsecret", "111111", "222222", "333333", "chairJoinUri", "redacted:sha256"} {
		assert.NotContains(t, string(body), secret)
	}
	assert.Equal(t, []snapshot.FieldChange{{Field: "confConfigInfo.guestPwd", Redacted: true}}, e.Data.Changes,
		"the change says a secret changed, without its value")
	assert.Contains(t, string(e.Data.Conference), `"passwordEntry":[{"conferenceRole":"chair"}]`)
}

// A secret sealed anew under a rotated key is no change of the meeting,
// whatever else changed beside it: beside only ignored fields, there is no
// event; beside a real change, the event shows the real change alone.
func TestARotationOfTheSealKeyIsNoChange(t *testing.T) {
	plain, err := redact.Parse("")
	require.NoError(t, err)
	k1, k2 := plain.WithKey([]byte("0123456789abcdef-first")), plain.WithKey([]byte("0123456789abcdef-second"))
	ignore, err := snapshot.ParseFieldSet("onlineAttendeeAmount")
	require.NoError(t, err)
	b := builder
	b.Redact, b.Ignore = k2, ignore
	change := func(before, after string) snapshot.Change {
		old, err := k1.Seal(meeting(t, before))
		require.NoError(t, err)
		cur, err := k2.Seal(meeting(t, after))
		require.NoError(t, err)
		changes := snapshot.Diff(snapshot.Snapshot{"u": old}, snapshot.Snapshot{"u": cur})
		require.Len(t, changes, 1)
		return changes[0]
	}

	attendees := change(`{"confUUID":"u","chairJoinUri":"https://x/s","onlineAttendeeAmount":3}`,
		`{"confUUID":"u","chairJoinUri":"https://x/s","onlineAttendeeAmount":4}`)
	assert.False(t, b.Publishes(attendees), "a rotation beside an ignored change")

	renamed := change(`{"confUUID":"u","subject":"a","chairJoinUri":"https://x/s"}`,
		`{"confUUID":"u","subject":"b","chairJoinUri":"https://x/s"}`)
	require.True(t, b.Publishes(renamed))
	e, err := b.Build(renamed, observed, false, lastSeen)
	require.NoError(t, err)
	assert.Equal(t, []snapshot.FieldChange{{Field: "subject", Old: []byte(`"a"`), New: []byte(`"b"`)}}, e.Data.Changes,
		"the real change alone, no secret said to have changed")
}

// Encode writes what json.Marshal would, so that consumers read the same
// event, only faster.
func TestEncodeMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 30, 0, 123, time.UTC)
	evs := []events.Event{
		{SpecVersion: "1.0", ID: "a", Source: "s", Type: "meetwatch.meeting.started", Subject: "u", Time: at, DataContentType: "application/json",
			Data: events.Data{Conference: json.RawMessage(`{"confUUID":"u","subject":"x < y & z"}`), Initial: true}},
		{SpecVersion: "1.0", ID: "b", Source: "s", Type: "meetwatch.meeting.changed", Subject: "u", Time: at, DataContentType: "application/json",
			Data: events.Data{Conference: json.RawMessage(`{ "confUUID": "u" }`), Previous: json.RawMessage(`{"confUUID":"u","n":[1, 2]}`),
				Changes: []snapshot.FieldChange{{Field: "n", Old: json.RawMessage(`[1,2]`)}}, Truncated: []string{"conference.x"}}},
		{SpecVersion: "1.0", ID: "c", Source: "s", Type: "meetwatch.meeting.ended", Subject: "u", Time: at, DataContentType: "application/json",
			Data: events.Data{Conference: json.RawMessage(`{"confUUID":"u"}`), LastSeen: &at}},
		{SpecVersion: "1.0", ID: "e", Source: "meetwatch://h/acme", Type: "meetwatch.meeting.started", Subject: "u", Time: at, DataContentType: "application/json",
			Account: "acme", Data: events.Data{Conference: json.RawMessage(`{"confUUID":"u"}`), Incarnation: 2}},
		// Strings json.Marshal escapes, and a time in another zone with
		// no fraction of a second.
		{SpecVersion: "1.0", ID: "d\"q", Source: "meetwatch://a<b>&c", Type: "meetwatch.meeting.started", Subject: "会议\u2028\n",
			Time: time.Date(2026, 12, 1, 9, 30, 0, 0, time.FixedZone("x", 8*3600)), DataContentType: "application/json",
			Data: events.Data{Conference: json.RawMessage(`{"confUUID":"u"}`)}},
	}
	for _, e := range evs {
		got, err := e.Encode()
		require.NoError(t, err)
		want, err := json.Marshal(e)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(got))
		envelope := func(b []byte) string { return string(b[:bytes.Index(b, []byte(`"data":`))]) }
		assert.Equal(t, envelope(want), envelope(got), "the envelope, byte for byte")
		var back events.Event
		require.NoError(t, json.Unmarshal(got, &back))
		assert.Equal(t, e.ID, back.ID)
	}
	bad := evs[0]
	bad.Data.Conference = json.RawMessage(`{"confUUID":`)
	_, err := bad.Encode()
	assert.Error(t, err, "a record that is not JSON is not sent")
}

// TestNormalisedTimes: startedAt is the record's startTime read in the
// API's zone, in UTC; an ended event says when it was found ended and how
// long the meeting ran; every event names its schema.
func TestNormalisedTimes(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	rec := meeting(t, `{"confUUID":"u1","subject":"s","startTime":"2026-11-25 17:00"}`)
	tests := []struct {
		name      string
		zone      *time.Location
		change    snapshot.Change
		lastSeen  time.Time
		startedAt string // "" for absent
		endedAt   string
		duration  int64 // -1 for absent
	}{
		{name: "started, UTC", change: snapshot.Change{Kind: snapshot.Started, Key: "u1", New: rec},
			startedAt: "2026-11-25T17:00:00Z", duration: -1},
		{name: "started, the API in Shanghai", zone: shanghai, change: snapshot.Change{Kind: snapshot.Started, Key: "u1", New: rec},
			startedAt: "2026-11-25T09:00:00Z", duration: -1},
		{name: "ended", zone: shanghai, change: snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: rec}, lastSeen: lastSeen,
			startedAt: "2026-11-25T09:00:00Z", endedAt: "2026-11-25T09:30:00Z", duration: 1800},
		{name: "ended before it started, by the clocks", change: snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: rec}, lastSeen: lastSeen,
			startedAt: "2026-11-25T17:00:00Z", endedAt: "2026-11-25T09:30:00Z", duration: 0},
		{name: "ended, last seen after the listing's clock", change: snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: rec}, lastSeen: observed.Add(time.Minute),
			startedAt: "2026-11-25T17:00:00Z", endedAt: "2026-11-25T09:31:00Z", duration: 0},
		{name: "ended, no start time", change: snapshot.Change{Kind: snapshot.Ended, Key: "u1", Old: meeting(t, `{"confUUID":"u1","startTime":"soon"}`)},
			endedAt: "2026-11-25T09:30:00Z", duration: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := builder
			b.Zone = tt.zone
			e, err := b.Build(tt.change, observed, false, tt.lastSeen)
			require.NoError(t, err)
			body, err := e.Encode()
			require.NoError(t, err)
			var raw struct {
				DataSchema string `json:"dataschema"`
				Data       struct {
					StartedAt       string `json:"startedAt"`
					EndedAt         string `json:"endedAt"`
					DurationSeconds *int64 `json:"durationSeconds"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal(body, &raw))
			assert.Equal(t, "https://github.com/meetwatch/meetwatch/blob/main/events/schema/v1/"+string(tt.change.Kind)+".json", raw.DataSchema)
			assert.Equal(t, tt.startedAt, raw.Data.StartedAt)
			assert.Equal(t, tt.endedAt, raw.Data.EndedAt)
			if tt.duration < 0 {
				assert.Nil(t, raw.Data.DurationSeconds)
			} else if assert.NotNil(t, raw.Data.DurationSeconds) {
				assert.Equal(t, tt.duration, *raw.Data.DurationSeconds)
			}
			back, err := events.Decode(body)
			require.NoError(t, err)
			assert.Equal(t, e.Data.StartedAt, back.Data.StartedAt)
			assert.Equal(t, e.Data.EndedAt, back.Data.EndedAt)
		})
	}
}
