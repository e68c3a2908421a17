package validate_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/schema/validate"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"

	"github.com/meetwatch/meetwatch/internal/repo"
)

// everyFieldPath is a record with every field of the API's ConferenceInfo
// model, secrets included (snapshot/redact/testdata/README.md).
const everyFieldPath = "snapshot/redact/testdata/every-field.json"

var (
	observed = time.Date(2024, 1, 19, 8, 30, 0, 123456789, time.UTC)
	lastSeen = observed.Add(-15 * time.Second)
)

func everyField(tb testing.TB) map[string]any {
	tb.Helper()
	path, err := repo.Path(everyFieldPath)
	require.NoError(tb, err)
	raw, err := os.ReadFile(path)
	require.NoError(tb, err)
	var rec map[string]any
	require.NoError(tb, json.Unmarshal(raw, &rec))
	return rec
}

// sealed returns rec as the watcher holds it: parsed, and with its
// secrets sealed by p, as the state keeps them.
func sealed(tb testing.TB, p *redact.Policy, rec map[string]any) snapshot.Meeting {
	tb.Helper()
	raw, err := json.Marshal(rec)
	require.NoError(tb, err)
	m, err := snapshot.ParseMeeting(raw)
	require.NoError(tb, err)
	m, err = p.Seal(m)
	require.NoError(tb, err)
	return m
}

func encode(tb testing.TB, e events.Event) []byte {
	tb.Helper()
	body, err := e.Encode()
	require.NoError(tb, err)
	return body
}

// TestEventsOfEveryShapeKeepTheirSchemas builds, with events.Builder as
// the watcher does, an event of every shape a consumer can receive, checks
// that it has that shape, and validates it against its kind's schema.
func TestEventsOfEveryShapeKeepTheirSchemas(t *testing.T) {
	policy, err := redact.New(redact.Default)
	require.NoError(t, err)
	b := events.Builder{Source: events.Source("api.meeting.huaweicloud.com"), Prefix: "meetings", Redact: policy}

	rec := everyField(t)
	old := sealed(t, policy, rec)
	rec2 := everyField(t)
	rec2["onlineAttendeeAmount"] = 7
	rec2["confConfigInfo"].(map[string]any)["guestPwd"] = "secret-new-guest-pwd"
	rec2["subject"] = "Renamed"
	cur := sealed(t, policy, rec2)
	changed := snapshot.Change{Kind: snapshot.Changed, Key: cur.UUID, Old: old, New: cur, Fields: snapshot.CompareRecords(old.Raw(), cur.Raw())}

	// A very large attendee list: the event is cut to fit.
	big := everyField(t)
	var attendees []any
	for i := range 3000 {
		attendees = append(attendees, map[string]any{"name": "user" + strings.Repeat("x", i%20), "phone": "+99111****000", "type": "normal", "role": 0, "isMute": 0})
	}
	big["partAttendeeInfo"] = attendees
	bigOld := sealed(t, policy, big)
	big2 := everyField(t)
	big2["partAttendeeInfo"] = append(attendees, map[string]any{"name": "late", "type": "normal"})
	bigCur := sealed(t, policy, big2)
	small := b
	small.MaxBytes = 64 << 10

	// A record stored trimmed: its markers come from the state.
	stored, cut, err := snapshot.Trim(bigOld, 16<<10)
	require.NoError(t, err)
	require.NotEmpty(t, cut)

	// A record without a start time the API's layout reads, with fields
	// the model does not know, and nulls.
	odd := map[string]any{"confUUID": "odd-1", "startTime": "soon", "newField": map[string]any{"x": []any{1, "a"}}, "liveUrl": nil, "size": nil}

	acme := b
	acme.Account, acme.Source = "acme", events.AccountSource("api.meeting.huaweicloud.com", "acme")
	none, err := redact.Parse("none")
	require.NoError(t, err)
	open := b
	open.Redact = none

	tests := []struct {
		name  string
		b     events.Builder
		c     snapshot.Change
		check func(t *testing.T, e events.Event)
	}{
		{name: "started, initial", b: b, c: snapshot.Change{Kind: snapshot.Started, Key: cur.UUID, New: cur}, check: func(t *testing.T, e events.Event) {
			assert.True(t, e.Data.Initial)
			assert.NotNil(t, e.Data.StartedAt)
		}},
		{name: "started of an account", b: acme, c: snapshot.Change{Kind: snapshot.Started, Key: cur.UUID, New: cur, Incarnation: 2}, check: func(t *testing.T, e events.Event) {
			assert.Equal(t, "acme", e.Account)
			assert.Equal(t, 2, e.Data.Incarnation)
		}},
		{name: "started, secrets left in", b: open, c: snapshot.Change{Kind: snapshot.Started, Key: cur.UUID, New: sealed(t, none, rec)}, check: func(t *testing.T, e events.Event) {
			assert.Contains(t, string(e.Data.Conference), "secret-chair-link")
		}},
		{name: "started, odd record", b: b, c: snapshot.Change{Kind: snapshot.Started, Key: "odd-1", New: sealed(t, policy, odd)}, check: func(t *testing.T, e events.Event) {
			assert.Nil(t, e.Data.StartedAt)
		}},
		{name: "changed, a secret among the changes", b: b, c: changed, check: func(t *testing.T, e events.Event) {
			fields := map[string]snapshot.FieldChange{}
			for _, fc := range e.Data.Changes {
				fields[fc.Field] = fc
			}
			assert.True(t, fields["confConfigInfo.guestPwd"].Redacted, "%+v", e.Data.Changes)
			assert.JSONEq(t, `"Renamed"`, string(fields["subject"].New))
			assert.NotEmpty(t, e.Data.Previous)
		}},
		{name: "changed, cut to fit", b: small, c: snapshot.Change{Kind: snapshot.Changed, Key: bigCur.UUID, Old: bigOld, New: bigCur, Fields: snapshot.CompareRecords(bigOld.Raw(), bigCur.Raw())}, check: func(t *testing.T, e events.Event) {
			assert.Contains(t, e.Data.Truncated, "conference.partAttendeeInfo")
			assert.Contains(t, e.Data.Truncated, "previous.partAttendeeInfo")
			assert.Contains(t, e.Data.Changes, snapshot.FieldChange{Field: "partAttendeeInfo", Truncated: true})
		}},
		{name: "changed, from a record stored trimmed", b: b, c: snapshot.Change{Kind: snapshot.Changed, Key: stored.UUID, Old: stored, New: bigCur, Fields: snapshot.CompareRecords(stored.Raw(), bigCur.Raw())}, check: func(t *testing.T, e events.Event) {
			assert.NotEmpty(t, e.Data.Truncated)
		}},
		{name: "started, cut to fit", b: small, c: snapshot.Change{Kind: snapshot.Started, Key: bigCur.UUID, New: bigCur}, check: func(t *testing.T, e events.Event) {
			assert.Equal(t, []string{"conference.partAttendeeInfo"}, e.Data.Truncated)
		}},
		{name: "ended", b: b, c: snapshot.Change{Kind: snapshot.Ended, Key: old.UUID, Old: old}, check: func(t *testing.T, e events.Event) {
			require.NotNil(t, e.Data.LastSeen)
			require.NotNil(t, e.Data.EndedAt)
			require.NotNil(t, e.Data.DurationSeconds)
			assert.Equal(t, int64(observed.Sub(time.Date(2024, 1, 19, 7, 52, 0, 0, time.UTC))/time.Second), *e.Data.DurationSeconds)
		}},
		{name: "ended, no start time", b: b, c: snapshot.Change{Kind: snapshot.Ended, Key: "odd-1", Old: sealed(t, policy, odd)}, check: func(t *testing.T, e events.Event) {
			assert.NotNil(t, e.Data.EndedAt)
			assert.Nil(t, e.Data.DurationSeconds)
		}},
		{name: "ended, cut to fit", b: small, c: snapshot.Change{Kind: snapshot.Ended, Key: bigOld.UUID, Old: bigOld}, check: func(t *testing.T, e events.Event) {
			assert.NotEmpty(t, e.Data.Truncated)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := tt.b.Build(tt.c, observed, true, lastSeen)
			require.NoError(t, err)
			tt.check(t, e)
			body := encode(t, e)
			assert.NoError(t, validate.Event(body), "%s", body)
		})
	}
}

// validBody returns an ended event that keeps its schema, decoded, for the
// tests to break.
func validBody(tb testing.TB) map[string]any {
	tb.Helper()
	policy, err := redact.New(redact.Default)
	require.NoError(tb, err)
	b := events.Builder{Source: events.Source("api.meeting.huaweicloud.com"), Prefix: "meetings", Redact: policy}
	m := sealed(tb, policy, everyField(tb))
	e, err := b.Build(snapshot.Change{Kind: snapshot.Ended, Key: m.UUID, Old: m}, observed, false, lastSeen)
	require.NoError(tb, err)
	body := encode(tb, e)
	require.NoError(tb, validate.Event(body))
	var v map[string]any
	require.NoError(tb, json.Unmarshal(body, &v))
	return v
}

// TestViolationsAreRejected: an event that breaks its schema is refused,
// and the error says where and why.
func TestViolationsAreRejected(t *testing.T) {
	data := func(v map[string]any) map[string]any { return v["data"].(map[string]any) }
	conference := func(v map[string]any) map[string]any { return data(v)["conference"].(map[string]any) }
	tests := []struct {
		name   string
		break_ func(v map[string]any)
		want   string // the place, and words of the reason
	}{
		{name: "no id", break_: func(v map[string]any) { delete(v, "id") }, want: "at /: missing property 'id'"},
		{name: "no dataschema", break_: func(v map[string]any) { delete(v, "dataschema") }, want: "missing property 'dataschema'"},
		{name: "another kind's dataschema", break_: func(v map[string]any) { v["dataschema"] = events.DataSchema(events.Started) }, want: "at /dataschema"},
		{name: "another version's dataschema", break_: func(v map[string]any) {
			v["dataschema"] = strings.Replace(events.DataSchema(events.Ended), "/v1/", "/v2/", 1)
		}, want: "at /dataschema"},
		{name: "no incarnation", break_: func(v map[string]any) { delete(data(v), "incarnation") }, want: "at /data: missing property 'incarnation'"},
		{name: "incarnation as a string", break_: func(v map[string]any) { data(v)["incarnation"] = "1" }, want: "at /data/incarnation: got string, want integer"},
		{name: "incarnation 0", break_: func(v map[string]any) { data(v)["incarnation"] = 0 }, want: "at /data/incarnation"},
		{name: "ended without endedAt", break_: func(v map[string]any) { delete(data(v), "endedAt") }, want: "missing property 'endedAt'"},
		{name: "a duration without a start", break_: func(v map[string]any) { delete(data(v), "startedAt") }, want: "at /data"},
		{name: "time not a time", break_: func(v map[string]any) { v["time"] = "yesterday" }, want: "at /time"},
		{name: "no confUUID", break_: func(v map[string]any) { delete(conference(v), "confUUID") }, want: "at /data/conference: missing property 'confUUID'"},
		{name: "size as a string", break_: func(v map[string]any) { conference(v)["size"] = "3" }, want: "at /data/conference/size: got string, want null or integer"},
		{name: "a flag of confConfigInfo as a number", break_: func(v map[string]any) {
			conference(v)["confConfigInfo"].(map[string]any)["isAutoMute"] = 1
		}, want: "at /data/conference/confConfigInfo/isAutoMute"},
		{name: "the subject cut", break_: func(v map[string]any) {
			conference(v)["subject"] = map[string]any{"truncated": true, "count": 40}
		}, want: "at /data/conference/subject: got object, want null or string"},
		{name: "a marker inside an array", break_: func(v map[string]any) {
			conference(v)["partAttendeeInfo"].([]any)[0].(map[string]any)["name"] = map[string]any{"truncated": true, "count": 40}
		}, want: "at /data/conference/partAttendeeInfo/0/name"},
		{name: "a type of another kind", break_: func(v map[string]any) { v["type"] = "meetwatch.meeting.paused" }, want: `type "meetwatch.meeting.paused" is none of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := validBody(t)
			tt.break_(v)
			body, err := json.Marshal(v)
			require.NoError(t, err)
			err = validate.Event(body)
			require.ErrorIs(t, err, validate.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	// A redacted change that carries a value.
	policy, err := redact.New(redact.Default)
	require.NoError(t, err)
	b := events.Builder{Source: events.Source("h"), Prefix: "meetings", Redact: policy}
	m := sealed(t, policy, map[string]any{"confUUID": "u", "subject": "a"})
	n := sealed(t, policy, map[string]any{"confUUID": "u", "subject": "b"})
	e, err := b.Build(snapshot.Change{Kind: snapshot.Changed, Key: "u", Old: m, New: n, Fields: snapshot.CompareRecords(m.Raw(), n.Raw())}, observed, false, lastSeen)
	require.NoError(t, err)
	require.NoError(t, validate.Event(encode(t, e)))
	e.Data.Changes = []snapshot.FieldChange{{Field: "chairJoinUri", New: json.RawMessage(`"x"`), Redacted: true}}
	err = validate.Event(encode(t, e))
	require.ErrorIs(t, err, validate.ErrInvalid)
	assert.Contains(t, err.Error(), "at /data/changes/0/new")
	e.Data.Changes, e.Data.Previous = nil, nil
	assert.ErrorContains(t, validate.Event(encode(t, e)), "missing property 'previous'", "a changed event without its previous record")

	assert.ErrorIs(t, validate.Event([]byte(`{"type":`)), validate.ErrInvalid, "not JSON")
}

// TestTheDocumentsExamplesKeepTheSchemas: the example events in
// docs/events.md are events as meetwatch writes them.
func TestTheDocumentsExamplesKeepTheSchemas(t *testing.T) {
	path, err := repo.Path("docs/events.md")
	require.NoError(t, err)
	doc, err := os.ReadFile(path)
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```json\n(\\{\n  \"specversion\".*?)\n```").FindAllSubmatch(doc, -1)
	require.GreaterOrEqual(t, len(blocks), 4, "the examples of docs/events.md")
	kinds := map[string]bool{}
	for _, m := range blocks {
		e, err := events.Decode(m[1])
		require.NoError(t, err)
		kinds[string(e.Kind())] = true
		assert.NoError(t, validate.Event(m[1]), "the %s example %s", e.Kind(), e.ID)
	}
	assert.Equal(t, map[string]bool{"started": true, "changed": true, "ended": true}, kinds)
}

// TestIsMeetingEvent: what claims to be a meetwatch event is checked, and
// nothing else is.
func TestIsMeetingEvent(t *testing.T) {
	assert.True(t, validate.IsMeetingEvent([]byte(`{"type":"meetwatch.meeting.started"}`)))
	assert.True(t, validate.IsMeetingEvent([]byte(`{"type":"meetwatch.meeting.paused"}`)))
	assert.False(t, validate.IsMeetingEvent([]byte(`{"confUUID":"u"}`)), "a record of the state bucket")
	assert.False(t, validate.IsMeetingEvent([]byte(`room 4 is free`)))
	assert.False(t, validate.IsMeetingEvent(nil))
}
