package chat_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with what the code writes now")

// meetingEvent returns an event of kind about the record rec, as a
// watcher publishes it: secrets already removed, startedAt as read in the
// API's zone.
func meetingEvent(tb testing.TB, kind snapshot.ChangeKind, rec map[string]any, fill func(*events.Event)) (events.Event, []byte) {
	tb.Helper()
	conf, err := json.Marshal(rec)
	require.NoError(tb, err)
	e := events.Event{
		SpecVersion:     events.SpecVersion,
		ID:              eventID,
		Source:          "meetwatch://api.example",
		Type:            events.TypePrefix + string(kind),
		Subject:         "c0ffee00c0ffee00c0ffee00c0ffee00",
		Time:            signedAt,
		DataContentType: events.DataContentType,
		DataSchema:      events.DataSchema(kind),
		Data:            events.Data{Conference: conf, Incarnation: 1},
	}
	if kind == snapshot.Changed {
		e.Data.Previous = conf
	}
	if fill != nil {
		fill(&e)
	}
	raw, err := e.Encode()
	require.NoError(tb, err)
	return e, raw
}

// weeklySync is a published record: every field a message shows, and
// none of the secrets, which the watcher removed.
func weeklySync() map[string]any {
	return map[string]any{
		"confUUID": "c0ffee00c0ffee00c0ffee00c0ffee00", "conferenceID": "987654321", "subject": "Weekly sync",
		"scheduserName": "user8002", "startTime": "2026-11-25 13:02", "onlineAttendeeAmount": 3,
		"size": 5, "confType": "IMMEDIATELY",
	}
}

// messageCases are the events of the golden files: one of each kind with
// every fact, and those that test the bounds and the escaping.
func messageCases(tb testing.TB) map[string]struct {
	e   events.Event
	raw []byte
} {
	tb.Helper()
	startedAt := time.Date(2026, 11, 25, 13, 2, 0, 0, time.UTC)
	endedAt := startedAt.Add(65*time.Minute + 20*time.Second)
	duration := int64(endedAt.Sub(startedAt) / time.Second)
	cases := map[string]struct {
		e   events.Event
		raw []byte
	}{}
	add := func(name string, kind snapshot.ChangeKind, rec map[string]any, fill func(*events.Event)) {
		e, raw := meetingEvent(tb, kind, rec, fill)
		cases[name] = struct {
			e   events.Event
			raw []byte
		}{e, raw}
	}

	add("started", snapshot.Started, weeklySync(), func(e *events.Event) { e.Data.StartedAt = &startedAt })

	// Already running, and from a watcher that wrote no startedAt: the
	// record's startTime is read as UTC; no attendee count in the record.
	initial := weeklySync()
	delete(initial, "onlineAttendeeAmount")
	add("initial", snapshot.Started, initial, func(e *events.Event) { e.Data.Initial = true })

	ended := weeklySync()
	ended["onlineAttendeeAmount"] = 0
	add("ended", snapshot.Ended, ended, func(e *events.Event) {
		e.Data.StartedAt, e.Data.EndedAt, e.Data.DurationSeconds = &startedAt, &endedAt, &duration
		e.Data.LastSeen = &endedAt
	})

	add("changed", snapshot.Changed, weeklySync(), func(e *events.Event) {
		e.Data.StartedAt = &startedAt
		e.Data.Changes = []snapshot.FieldChange{
			{Field: "confConfigInfo.guestPwd", Redacted: true},
			{Field: "confConfigInfo.isAutoMute", Old: json.RawMessage(`false`), New: json.RawMessage(`true`)},
			{Field: "onlineAttendeeAmount", Old: json.RawMessage(`2`), New: json.RawMessage(`3`)},
			{Field: "partAttendeeInfo", Truncated: true},
			{Field: "recordType", New: json.RawMessage(`2`)},
			{Field: "remark", Old: json.RawMessage(`"short"`), New: json.RawMessage(`"` + strings.Repeat("long ", 20) + `"`)},
			{Field: "subject", Old: json.RawMessage(`"Weekly"`), New: json.RawMessage(`"Weekly sync"`)},
		}
	})

	// Beyond every limit: the longest subject and organiser, many changed
	// fields, in characters of one, two and four UTF-16 units.
	long := weeklySync()
	long["subject"] = strings.Repeat("会议😀", 150)
	long["scheduserName"] = strings.Repeat("é", 300)
	add("long", snapshot.Changed, long, func(e *events.Event) {
		e.Data.StartedAt = &startedAt
		for i := range 40 {
			e.Data.Changes = append(e.Data.Changes, snapshot.FieldChange{
				Field: "字段" + strconv.Itoa(i) + strings.Repeat("é😀", 60),
				Old:   json.RawMessage(`"a"`), New: json.RawMessage(`"b"`),
			})
		}
	})

	// Markup in what a meeting's organiser chooses: mentions, links,
	// tags, a heading on a line of its own.
	markup := weeklySync()
	markup["subject"] = "<!channel> <at user_id=\"all\">all</at> <@all>\n# [click](https://evil.example) & *bold*"
	markup["scheduserName"] = "<font color=\"warning\">boss</font>"
	add("markup", snapshot.Started, markup, func(e *events.Event) { e.Data.StartedAt = &startedAt })
	return cases
}

// hookURLs are webhooks of each chat format; Feishu's is signed, in the
// body.
var hookURLs = map[chat.Format]struct{ url, secret string }{
	chat.Slack:    {url: "https://hooks.slack.example/services/T0/B0/xyz"},
	chat.Feishu:   {url: "https://open.feishu.example/open-apis/bot/v2/hook/abc", secret: "feishu-secret-9c1e"},
	chat.DingTalk: {url: "https://oapi.dingtalk.example/robot/send?access_token=t", secret: "SECb1f0e6c2d9a84e7f"},
	chat.WeCom:    {url: "https://qyapi.weixin.example/cgi-bin/webhook/send?key=k"},
	chat.WeLink:   {url: "https://open.welink.example/api/werobot/v1/webhook/send?token=t&channel=standard"},
}

// body returns the body the webhook posts for e.
func body(tb testing.TB, w *chat.Webhook, e events.Event, raw []byte) []byte {
	tb.Helper()
	req, err := w.Request(tb.Context(), e, raw, signedAt)
	require.NoError(tb, err)
	b, err := io.ReadAll(req.Body)
	require.NoError(tb, err)
	return b
}

// TestMessageGolden compares every format's body, rich and plain, for
// each case with its golden file, and checks it against the platform's
// documented shape. go test -run TestMessageGolden -update rewrites them.
func TestMessageGolden(t *testing.T) {
	cases := messageCases(t)
	for _, f := range chat.Formats() {
		if f == chat.CloudEvents {
			continue
		}
		for _, plain := range []bool{false, true} {
			for name, c := range cases {
				style := "rich"
				if plain {
					style = "plain"
				}
				t.Run(fmt.Sprintf("%s/%s/%s", f, style, name), func(t *testing.T) {
					hook := hookURLs[f]
					w := newWebhook(t, hook.url, f, hook.secret).WithStyle(chat.Style{Zone: shanghai(t), Plain: plain})
					got := body(t, w, c.e, c.raw)
					checkShape(t, f, plain, got)
					checkGolden(t, filepath.Join("testdata", fmt.Sprintf("%s-%s-%s.golden", f, style, name)), got)
				})
			}
		}
	}
}

// checkGolden compares body, indented, with the golden file at path.
func checkGolden(t *testing.T, path string, body []byte) {
	t.Helper()
	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, body, "", "  "))
	indented.WriteByte('\n')
	if *update {
		require.NoError(t, os.WriteFile(path, indented.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file: run go test ./events/chat -run TestMessageGolden -update")
	assert.Equal(t, string(want), indented.String(), "the body differs from %s", path)
}

// checkShape checks a body against what the platform documents
// (CHAT-NOTES, the platforms' pages): the keys it requires, their types,
// and its size limits. testdata/README.md lists the facts.
func checkShape(t *testing.T, f chat.Format, plain bool, body []byte) {
	t.Helper()
	var b map[string]any
	require.NoError(t, json.Unmarshal(body, &b), "a JSON object")
	switch {
	case f == chat.Slack && plain:
		assert.Equal(t, []string{"text"}, keys(b))
		assert.NotEmpty(t, str(t, b, "text"))
	case f == chat.Slack:
		assert.Equal(t, []string{"blocks", "text"}, keys(b))
		assert.NotEmpty(t, str(t, b, "text"), "the fallback for notifications")
		blocks := arr(t, b, "blocks")
		assert.NotEmpty(t, blocks)
		assert.LessOrEqual(t, len(blocks), 50, "at most 50 blocks")
		for _, x := range blocks {
			block := x.(map[string]any)
			switch typ := str(t, block, "type"); typ {
			case "header":
				text := obj(t, block, "text")
				assert.Equal(t, "plain_text", str(t, text, "type"))
				assert.LessOrEqual(t, units(str(t, text, "text")), chat.SlackMaxHeader)
			case "section":
				_, hasText := block["text"]
				_, hasFields := block["fields"]
				assert.True(t, hasText || hasFields, "a section has text or fields")
				if hasText {
					text := obj(t, block, "text")
					assert.Contains(t, []string{"plain_text", "mrkdwn"}, str(t, text, "type"))
					assert.LessOrEqual(t, units(str(t, text, "text")), chat.SlackMaxSection)
				}
				if hasFields {
					fields := arr(t, block, "fields")
					assert.LessOrEqual(t, len(fields), chat.SlackMaxFields)
					for _, fl := range fields {
						fl := fl.(map[string]any)
						assert.Contains(t, []string{"plain_text", "mrkdwn"}, str(t, fl, "type"))
						assert.LessOrEqual(t, units(str(t, fl, "text")), chat.SlackMaxField)
					}
				}
			case "context":
				elems := arr(t, block, "elements")
				assert.NotEmpty(t, elems)
				assert.LessOrEqual(t, len(elems), 10)
			default:
				assert.Fail(t, "unexpected block type", typ)
			}
		}
	case f == chat.Feishu:
		assert.LessOrEqual(t, len(body), chat.FeishuMaxBody, "body at most 20 KB")
		assert.NotEmpty(t, str(t, b, "timestamp"), "signed in the body")
		assert.NotEmpty(t, str(t, b, "sign"))
		if plain {
			assert.Equal(t, "text", str(t, b, "msg_type"))
			assert.NotEmpty(t, str(t, obj(t, b, "content"), "text"))
			break
		}
		assert.Equal(t, "interactive", str(t, b, "msg_type"))
		assert.NotContains(t, b, "content", "a webhook's card goes in card")
		card := obj(t, b, "card")
		header := obj(t, card, "header")
		title := obj(t, header, "title")
		assert.Equal(t, "plain_text", str(t, title, "tag"))
		assert.NotEmpty(t, str(t, title, "content"))
		assert.Contains(t, []string{"green", "blue", "grey"}, str(t, header, "template"))
		elems := arr(t, card, "elements")
		assert.NotEmpty(t, elems)
		for _, x := range elems {
			el := x.(map[string]any)
			switch tag := str(t, el, "tag"); tag {
			case "div":
				_, hasText := el["text"]
				_, hasFields := el["fields"]
				assert.True(t, hasText || hasFields, "a div has text or fields")
				fields, _ := el["fields"].([]any)
				for _, fl := range fields {
					fl := fl.(map[string]any)
					assert.IsType(t, true, fl["is_short"])
					assert.Equal(t, "plain_text", str(t, obj(t, fl, "text"), "tag"))
				}
			case "hr":
			case "note":
				assert.NotEmpty(t, arr(t, el, "elements"))
			default:
				assert.Fail(t, "unexpected element tag", tag)
			}
		}
	case f == chat.DingTalk:
		if plain {
			assert.Equal(t, []string{"at", "msgtype", "text"}, keys(b))
		} else {
			assert.Equal(t, []string{"at", "markdown", "msgtype"}, keys(b))
		}
		at := obj(t, b, "at")
		assert.IsType(t, []any{}, at["atMobiles"])
		assert.Equal(t, false, at["isAtAll"])
		if plain {
			assert.Equal(t, "text", str(t, b, "msgtype"))
			assert.NotEmpty(t, str(t, obj(t, b, "text"), "content"))
			break
		}
		assert.Equal(t, "markdown", str(t, b, "msgtype"))
		md := obj(t, b, "markdown")
		assert.NotEmpty(t, str(t, md, "title"))
		assert.NotEmpty(t, str(t, md, "text"))
	case f == chat.WeCom:
		if plain {
			assert.Equal(t, "text", str(t, b, "msgtype"))
			content := str(t, obj(t, b, "text"), "content")
			assert.NotEmpty(t, content)
			assert.LessOrEqual(t, len(content), chat.WeComMaxText, "text at most 2048 bytes")
			break
		}
		assert.Equal(t, []string{"markdown", "msgtype"}, keys(b))
		assert.Equal(t, "markdown", str(t, b, "msgtype"))
		content := str(t, obj(t, b, "markdown"), "content")
		assert.NotEmpty(t, content)
		assert.LessOrEqual(t, len(content), chat.WeComMaxMarkdown, "markdown at most 4096 bytes")
		assert.True(t, utf8.ValidString(content))
	case f == chat.WeLink:
		assert.Equal(t, []string{"atAccounts", "content", "isAt", "isAtAll", "messageType", "timeStamp", "uuid"}, keys(b))
		assert.Equal(t, "text", str(t, b, "messageType"), "WeLink takes text only")
		text := str(t, obj(t, b, "content"), "text")
		assert.GreaterOrEqual(t, units(text), 1)
		assert.LessOrEqual(t, units(text), chat.WeLinkMaxText, "1 to 500 characters")
		assert.IsType(t, float64(0), b["timeStamp"])
		assert.Regexp(t, `^[0-9a-f]{32}$`, b["uuid"])
		assert.Equal(t, false, b["isAt"])
		assert.Equal(t, false, b["isAtAll"])
		assert.Equal(t, []any{}, b["atAccounts"])
	default:
		t.Fatalf("no shape for %s", f)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func str(t *testing.T, m map[string]any, k string) string {
	t.Helper()
	v, ok := m[k].(string)
	assert.True(t, ok, "%s is a string: %v", k, m[k])
	return v
}

func obj(t *testing.T, m map[string]any, k string) map[string]any {
	t.Helper()
	v, ok := m[k].(map[string]any)
	require.True(t, ok, "%s is an object: %v", k, m[k])
	return v
}

func arr(t *testing.T, m map[string]any, k string) []any {
	t.Helper()
	v, ok := m[k].([]any)
	require.True(t, ok, "%s is an array: %v", k, m[k])
	return v
}

// units counts a text as the platforms do at their strictest: in UTF-16
// code units.
func units(s string) int { return len(utf16.Encode([]rune(s))) }

// allText returns every string of a body, joined: what people read.
func allText(tb testing.TB, body []byte) string {
	tb.Helper()
	var v any
	require.NoError(tb, json.Unmarshal(body, &v))
	var b strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case string:
			b.WriteString(v + "\n")
		}
	}
	walk(v)
	return b.String()
}

// TestMessagesShowTheFacts checks that every format, rich and plain, shows
// what people want to read: the kind and the subject, the conference ID,
// the organiser, the start in the zone asked for, the attendees online,
// the duration of an ended meeting, and what changed, old and new, with
// no secret value.
func TestMessagesShowTheFacts(t *testing.T) {
	cases := messageCases(t)
	want := map[string][]string{
		"started": {"started", "Weekly sync", "987654321", "user8002", "2026-11-25 21:02 (UTC+08:00)", "3"},
		"initial": {"started", "Weekly sync", "987654321", "user8002", "2026-11-25 21:02 (UTC+08:00)", "lready running"},
		"ended":   {"ended", "Weekly sync", "987654321", "user8002", "2026-11-25 21:02 (UTC+08:00)", "0", "1 h 5 min"},
		"changed": {"changed", "Weekly sync", "987654321", "user8002", "2026-11-25 21:02 (UTC+08:00)", "3",
			"confConfigInfo.guestPwd changed (secret, not shown)", "confConfigInfo.isAutoMute: false → true",
			"onlineAttendeeAmount: 2 → 3", "partAttendeeInfo changed (too large to show)", "recordType: (absent) → 2",
			"remark changed", `subject: "Weekly" → "Weekly sync"`},
	}
	for _, f := range chat.Formats() {
		if f == chat.CloudEvents {
			continue
		}
		for _, plain := range []bool{false, true} {
			for name, words := range want {
				t.Run(fmt.Sprintf("%s/plain=%t/%s", f, plain, name), func(t *testing.T) {
					hook := hookURLs[f]
					w := newWebhook(t, hook.url, f, hook.secret).WithStyle(chat.Style{Zone: shanghai(t), Plain: plain})
					text := allText(t, body(t, w, cases[name].e, cases[name].raw))
					for _, word := range words {
						assert.Contains(t, text, word)
					}
				})
			}
		}
	}
}

// TestRichMessagesKeepTheirLimits checks that a message beyond every
// limit keeps its first lines and loses changes from its end, saying how
// many, within each platform's limit.
func TestRichMessagesKeepTheirLimits(t *testing.T) {
	long := messageCases(t)["long"]
	for _, f := range []chat.Format{chat.Slack, chat.Feishu, chat.WeCom, chat.WeLink} {
		t.Run(string(f), func(t *testing.T) {
			hook := hookURLs[f]
			got := body(t, newWebhook(t, hook.url, f, hook.secret), long.e, long.raw)
			checkShape(t, f, false, got)
			text := allText(t, got)
			assert.Contains(t, text, "2026-11-25 21:02 (UTC+08:00)", "the facts come before the changes")
			assert.Regexp(t, regexp.MustCompile(`… and \d+ more changed fields`), text)
		})
	}
}

// TestMarkupInRichMessagesIsDefused checks that a subject or an organiser
// cannot mention everyone, forge a link, colour text or start a heading
// in a rich message.
func TestMarkupInRichMessagesIsDefused(t *testing.T) {
	markup := messageCases(t)["markup"]
	tests := []struct {
		format chat.Format
		never  []string
	}{
		// Slack reads <...> in mrkdwn as mentions and links; the header
		// shows only the kind.
		{format: chat.Slack, never: []string{"<"}},
		// Feishu's <at> mentions, even in plain_text.
		{format: chat.Feishu, never: []string{"<at "}},
		{format: chat.DingTalk, never: []string{"<", "[click](", "\n# "}},
		// WeCom's <@userid> mentions, <font> colours.
		{format: chat.WeCom, never: []string{"<", "[click](", "\n# "}},
	}
	for _, tt := range tests {
		t.Run(string(tt.format), func(t *testing.T) {
			hook := hookURLs[tt.format]
			text := allText(t, body(t, newWebhook(t, hook.url, tt.format, hook.secret), markup.e, markup.raw))
			require.Contains(t, text, "click", "the subject is shown")
			for _, s := range tt.never {
				assert.NotContains(t, text, s)
			}
		})
	}
}

// TestSecretsAnEventCarriesAreNotShown: a watcher that publishes records
// whole (MEETWATCH_REDACT=none) sends changes with the secrets' values;
// no format shows them.
func TestSecretsAnEventCarriesAreNotShown(t *testing.T) {
	e, raw := meetingEvent(t, snapshot.Changed, weeklySync(), func(e *events.Event) {
		e.Data.Changes = []snapshot.FieldChange{
			{Field: "confConfigInfo.guestPwd", Old: json.RawMessage(`"111111"`), New: json.RawMessage(`"222222"`)},
			{Field: "guestJoinUri", Old: json.RawMessage(`"https://x/j?k=olds3cret"`), New: json.RawMessage(`"https://x/j?k=news3cret"`)},
			{Field: "subject", Old: json.RawMessage(`"Weekly"`), New: json.RawMessage(`"Weekly sync"`)},
		}
	})
	for _, style := range []chat.Style{{Zone: time.UTC}, {Zone: time.UTC, Plain: true}} {
		for _, f := range chat.Formats() {
			if f == chat.CloudEvents {
				continue // the event itself, as the watcher published it
			}
			w, err := chat.NewWebhook("https://hooks.example/x", f, redact.Secret{})
			require.NoError(t, err)
			req, err := w.WithStyle(style).Request(t.Context(), e, raw, time.Now())
			require.NoError(t, err, "%s", f)
			body, err := io.ReadAll(req.Body)
			require.NoError(t, err)
			for _, secret := range []string{"111111", "222222", "olds3cret", "news3cret"} {
				assert.NotContains(t, string(body), secret, "%s (plain %t)", f, style.Plain)
			}
			assert.Contains(t, string(body), "Weekly sync", "%s (plain %t)", f, style.Plain)
		}
	}
}
