package chat_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/chat"
	"github.com/meetwatch/meetwatch/snapshot"
)

func TestText(t *testing.T) {
	started, _ := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	initial := started
	initial.Data.Initial = true
	ended, _ := newEvent(t, snapshot.Ended, "Weekly sync", "987654321")
	bare := started
	bare.Data.Conference = json.RawMessage(`{"confUUID":"c0ffee"}`)

	many := make([]snapshot.FieldChange, 23)
	for i := range many {
		many[i] = snapshot.FieldChange{Field: fmt.Sprintf("f%02d", i), Old: json.RawMessage(`1`), New: json.RawMessage(`2`)}
	}
	manyChanged, _ := newEvent(t, snapshot.Changed, "Weekly sync", "987654321", many...)

	changed, _ := newEvent(t, snapshot.Changed, "Weekly sync", "987654321",
		snapshot.FieldChange{Field: "confConfigInfo.guestPwd", Redacted: true},
		snapshot.FieldChange{Field: "confConfigInfo.isAutoMute", Old: json.RawMessage(`false`), New: json.RawMessage(`true`)},
		snapshot.FieldChange{Field: "partAttendeeInfo", Truncated: true},
		snapshot.FieldChange{Field: "recordType", New: json.RawMessage(`2`)},
		snapshot.FieldChange{Field: "remark", Old: json.RawMessage(`"short"`), New: json.RawMessage(`"` + strings.Repeat("long ", 20) + `"`)},
		snapshot.FieldChange{Field: "subject", Old: json.RawMessage(`"Weekly"`), New: json.RawMessage(`"Weekly sync \u003c3"`)},
	)

	tests := []struct {
		name string
		e    events.Event
		want string
	}{
		{name: "started", e: started, want: `Meeting started: "Weekly sync" (conference ID 987654321)`},
		{name: "already running", e: initial, want: `Meeting started: "Weekly sync" (conference ID 987654321), already running when meetwatch started`},
		{name: "ended", e: ended, want: `Meeting ended: "Weekly sync" (conference ID 987654321)`},
		{name: "no subject nor conference ID", e: bare, want: `Meeting started: (no subject) (meeting c0ffee00c0ffee00c0ffee00c0ffee00)`},
		{name: "changed", e: changed, want: `Meeting changed: "Weekly sync" (conference ID 987654321)
• confConfigInfo.guestPwd changed (secret, not shown)
• confConfigInfo.isAutoMute: false → true
• partAttendeeInfo changed (too large to show)
• recordType: (absent) → 2
• remark changed
• subject: "Weekly" → "Weekly sync <3"`},
		{name: "many changes", e: manyChanged, want: `Meeting changed: "Weekly sync" (conference ID 987654321)
• f00: 1 → 2
• f01: 1 → 2
• f02: 1 → 2
• f03: 1 → 2
• f04: 1 → 2
• f05: 1 → 2
• f06: 1 → 2
• f07: 1 → 2
• f08: 1 → 2
• f09: 1 → 2
• f10: 1 → 2
• f11: 1 → 2
• f12: 1 → 2
• f13: 1 → 2
• f14: 1 → 2
• f15: 1 → 2
• f16: 1 → 2
• f17: 1 → 2
• f18: 1 → 2
• f19: 1 → 2
… and 3 more changed fields`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, chat.Text(tt.e, nil))
		})
	}
}

func TestTruncate(t *testing.T) {
	inputs := []string{"", "abc", "héllo wörld", "会议会议会议", "😀😀😀😀😀", "a😀b😀c😀", "\xff\xfe invalid", strings.Repeat("é", 30)}
	for _, s := range inputs {
		for n := 0; n <= len(s)+1; n++ {
			name := fmt.Sprintf("%q/%d", s, n)

			got := chat.TruncateBytes(s, n)
			assert.LessOrEqual(t, len(got), n, "bytes %s", name)
			assertCut(t, s, got, len(s) <= n, name)

			got = chat.TruncateRunes(s, n)
			assert.LessOrEqual(t, utf8.RuneCountInString(got), n, "runes %s", name)
			assertCut(t, s, got, utf8.RuneCountInString(s) <= n, name)

			got = chat.TruncateUTF16(s, n)
			assert.LessOrEqual(t, len(utf16.Encode([]rune(got))), n, "utf-16 %s", name)
			assertCut(t, s, got, len(utf16.Encode([]rune(s))) <= n, name)
		}
	}
	assert.Equal(t, "a…", chat.TruncateUTF16("a😀b", 3), "a character of two units is not split")
	assert.Equal(t, "a😀…", chat.TruncateUTF16("a😀bc", 4))
	assert.Equal(t, "会…", chat.TruncateBytes("会议会", 6))
	assert.Equal(t, "…", chat.TruncateBytes("会议", 5))
}

// assertCut checks that got is s when s fits, and otherwise a prefix of s,
// whole characters only, followed by the ellipsis (or nothing, when not
// even that fits).
func assertCut(t *testing.T, s, got string, fits bool, name string) {
	t.Helper()
	if fits {
		assert.Equal(t, s, got, name)
		return
	}
	if got == "" {
		return
	}
	prefix, ok := strings.CutSuffix(got, chat.Ellipsis)
	if assert.True(t, ok, "%s: %q ends with the ellipsis", name, got) {
		assert.True(t, strings.HasPrefix(s, prefix), "%s: %q is a prefix", name, prefix)
		if utf8.ValidString(s) {
			assert.True(t, utf8.ValidString(got), "%s: %q is valid UTF-8", name, got)
		}
	}
}

func ExampleText() {
	e := events.Event{
		SpecVersion: events.SpecVersion,
		ID:          "e83afce2216548e870bbe704c679c842",
		Type:        events.TypePrefix + "changed",
		Subject:     "0546e5e40adfd0f8a313c02cc536de6d",
		Time:        time.Date(2026, 11, 25, 21, 2, 40, 0, time.UTC),
		Data: events.Data{
			Conference: json.RawMessage(`{"confUUID":"0546e5e40adfd0f8a313c02cc536de6d","conferenceID":"669697932","subject":"All hands"}`),
			Changes: []snapshot.FieldChange{
				{Field: "subject", Old: json.RawMessage(`"All hands 10"`), New: json.RawMessage(`"All hands"`)},
				{Field: "confConfigInfo.guestPwd", Redacted: true},
			},
		},
	}
	fmt.Println(chat.Text(e, nil))
	// Output:
	// Meeting changed: "All hands" (conference ID 669697932)
	// • subject: "All hands 10" → "All hands"
	// • confConfigInfo.guestPwd changed (secret, not shown)
}

// TestTextShowsDurationsAsPeopleSayThem checks the duration of an ended
// meeting: seconds under a minute, then hours and minutes.
func TestTextShowsDurationsAsPeopleSayThem(t *testing.T) {
	for secs, want := range map[int64]string{
		0: "0 s", 42: "42 s", 60: "1 min", 119: "1 min", 2700: "45 min", 3600: "1 h", 3900: "1 h 5 min", 90061: "25 h 1 min",
	} {
		e, _ := newEvent(t, snapshot.Ended, "Weekly sync", "987654321")
		e.Data.DurationSeconds = &secs
		assert.Equal(t, "Meeting ended: \"Weekly sync\" (conference ID 987654321)\nDuration: "+want, chat.Text(e, nil), "%d s", secs)
	}
}

// TestTextShowsTheStartInTheZoneAsked checks that the start is
// data.startedAt, or else the record's startTime read as UTC, shown in
// the zone asked for with its offset.
func TestTextShowsTheStartInTheZoneAsked(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)
	newYork, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	started := time.Date(2026, 11, 25, 13, 2, 0, 0, time.UTC)
	e, _ := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	e.Data.StartedAt = &started
	e.Data.Conference = json.RawMessage(`{"subject":"Weekly sync","conferenceID":"987654321","startTime":"2026-11-25 09:00"}`)
	assert.Contains(t, chat.Text(e, shanghai), "\nStarted: 2026-11-25 21:02 (UTC+08:00)", "startedAt first")
	assert.Contains(t, chat.Text(e, newYork), "\nStarted: 2026-11-25 08:02 (UTC-05:00)")
	assert.Contains(t, chat.Text(e, time.UTC), "\nStarted: 2026-11-25 13:02 (UTC)")

	e.Data.StartedAt = nil
	assert.Contains(t, chat.Text(e, shanghai), "\nStarted: 2026-11-25 17:00 (UTC+08:00)", "else startTime, read as UTC")
	e.Data.Conference = json.RawMessage(`{"subject":"Weekly sync","conferenceID":"987654321","startTime":"soon"}`)
	assert.NotContains(t, chat.Text(e, shanghai), "Started", "an unreadable start is left out")
}
