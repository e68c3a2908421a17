package chat_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
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

// signedAt is when the tests sign: 2026-01-01T00:00:00Z.
var signedAt = time.Unix(1767225600, 0).UTC()

const eventID = "0123456789abcdef0123456789abcdef"

// newEvent returns an event of kind for a meeting with subject and
// conference ID, as a watcher would publish it.
func newEvent(tb testing.TB, kind snapshot.ChangeKind, subject, conferenceID string, changes ...snapshot.FieldChange) (events.Event, []byte) {
	tb.Helper()
	rec, err := json.Marshal(map[string]any{
		"confUUID": "c0ffee00c0ffee00c0ffee00c0ffee00", "subject": subject, "conferenceID": conferenceID,
	})
	require.NoError(tb, err)
	e := events.Event{
		SpecVersion:     events.SpecVersion,
		ID:              eventID,
		Source:          "meetwatch://api.example",
		Type:            events.TypePrefix + string(kind),
		Subject:         "c0ffee00c0ffee00c0ffee00c0ffee00",
		Time:            signedAt,
		DataContentType: events.DataContentType,
		Data:            events.Data{Conference: rec},
	}
	if kind == snapshot.Changed {
		e.Data.Previous = rec
		e.Data.Changes = changes
	}
	raw, err := e.Encode()
	require.NoError(tb, err)
	return e, raw
}

func newWebhook(tb testing.TB, rawURL string, f chat.Format, secret string) *chat.Webhook {
	tb.Helper()
	w, err := chat.NewWebhook(rawURL, f, redact.NewSecret(secret))
	require.NoError(tb, err)
	return w.WithStyle(chat.Style{Zone: shanghai(tb)})
}

// plainWebhook is newWebhook sending the platforms' text messages.
func plainWebhook(tb testing.TB, rawURL string, f chat.Format, secret string) *chat.Webhook {
	tb.Helper()
	return newWebhook(tb, rawURL, f, secret).WithStyle(chat.Style{Zone: shanghai(tb), Plain: true})
}

// shanghai is the zone the tests show times in: not the machine's, so
// that they pass wherever they run, and not UTC, so that a time left
// in UTC shows.
func shanghai(tb testing.TB) *time.Location {
	tb.Helper()
	z, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(tb, err)
	return z
}

// request builds the request for e and returns it with its body decoded.
func request(tb testing.TB, w *chat.Webhook, e events.Event, raw []byte) (*http.Request, map[string]any) {
	tb.Helper()
	req, err := w.Request(tb.Context(), e, raw, signedAt)
	require.NoError(tb, err)
	body, err := io.ReadAll(req.Body)
	require.NoError(tb, err)
	var got map[string]any
	require.NoError(tb, json.Unmarshal(body, &got), "body %s", body)
	return req, got
}

func TestPlainRequestBodies(t *testing.T) {
	e, raw := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	wantText := `Meeting started: "Weekly sync" (conference ID 987654321)`
	tests := []struct {
		name   string
		format chat.Format
		url    string
		want   map[string]any
	}{
		{
			name: "slack", format: chat.Slack, url: "https://hooks.slack.example/services/T0/B0/xyz",
			want: map[string]any{"text": wantText},
		},
		{
			name: "feishu", format: chat.Feishu, url: "https://open.feishu.example/open-apis/bot/v2/hook/abc",
			want: map[string]any{"msg_type": "text", "content": map[string]any{"text": wantText}},
		},
		{
			name: "dingtalk", format: chat.DingTalk, url: "https://oapi.dingtalk.example/robot/send?access_token=t",
			want: map[string]any{
				"msgtype": "text", "text": map[string]any{"content": wantText},
				"at": map[string]any{"atMobiles": []any{}, "isAtAll": false},
			},
		},
		{
			name: "wecom", format: chat.WeCom, url: "https://qyapi.weixin.example/cgi-bin/webhook/send?key=k",
			want: map[string]any{"msgtype": "text", "text": map[string]any{"content": wantText, "mentioned_list": []any{}}},
		},
		{
			name: "welink", format: chat.WeLink, url: "https://open.welink.example/api/werobot/v1/webhook/send?token=t&channel=standard",
			want: map[string]any{
				"messageType": "text", "content": map[string]any{"text": wantText},
				"timeStamp": float64(signedAt.UnixMilli()), "uuid": eventID,
				"isAt": false, "isAtAll": false, "atAccounts": []any{},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, got := request(t, plainWebhook(t, tt.url, tt.format, ""), e, raw)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, http.MethodPost, req.Method)
			assert.Equal(t, tt.url, req.URL.String(), "an unsigned message goes to the URL as given")
			assert.Equal(t, "application/json; charset=utf-8", req.Header.Get("Content-Type"))
		})
	}
}

func TestCloudEventsPostsTheStoredBody(t *testing.T) {
	e, raw := newEvent(t, snapshot.Ended, "Weekly sync", "987654321")
	w := newWebhook(t, "http://127.0.0.1:8080/events", chat.CloudEvents, "")
	req, err := w.Request(t.Context(), e, raw, signedAt)
	require.NoError(t, err)
	got, err := io.ReadAll(req.Body)
	require.NoError(t, err)
	assert.Equal(t, raw, got, "the body as stored, byte for byte")
	assert.Equal(t, "application/cloudevents+json", req.Header.Get("Content-Type"))
}

func TestWeLinkUUIDIsStableAndHex(t *testing.T) {
	e, raw := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	e.ID = "not-hex:an id from elsewhere"
	w := newWebhook(t, "https://open.welink.example/api/werobot/v1/webhook/send?token=t", chat.WeLink, "")
	_, first := request(t, w, e, raw)
	_, again := request(t, w, e, raw)
	assert.Regexp(t, `^[0-9a-f]{32}$`, first["uuid"])
	assert.Equal(t, first["uuid"], again["uuid"], "every try of one event carries the same uuid")
}

func TestFeishuSignature(t *testing.T) {
	const secret = "feishu-secret-9c1e"
	e, raw := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	w := newWebhook(t, "https://open.feishu.example/open-apis/bot/v2/hook/abc", chat.Feishu, secret)
	req, got := request(t, w, e, raw)

	assert.Equal(t, "https://open.feishu.example/open-apis/bot/v2/hook/abc", req.URL.String(), "Feishu signs in the body, not the URL")
	assert.Equal(t, strconv.FormatInt(signedAt.Unix(), 10), got["timestamp"], "timestamp in seconds, as a string")

	// Computed here from the documented recipe: HMAC-SHA256 keyed with
	// timestamp + "\n" + secret, over nothing, in base64.
	mac := hmac.New(sha256.New, []byte(got["timestamp"].(string)+"\n"+secret))
	assert.Equal(t, base64.StdEncoding.EncodeToString(mac.Sum(nil)), got["sign"])
	// And by another implementation of HMAC (Python's hmac module).
	assert.Equal(t, "CciHYftS/lI/3Xo3FA/1oyieEH5hw+gIaDYYOnJIdBc=", got["sign"])
}

func TestDingTalkSignature(t *testing.T) {
	const secret = "SECb1f0e6c2d9a84e7f"
	e, raw := newEvent(t, snapshot.Started, "Weekly sync", "987654321")
	w := newWebhook(t, "https://oapi.dingtalk.example/robot/send?access_token=tok123", chat.DingTalk, secret)
	req, got := request(t, w, e, raw)

	q := req.URL.Query()
	assert.Equal(t, "tok123", q.Get("access_token"), "the token stays")
	ts := q.Get("timestamp")
	assert.Equal(t, strconv.FormatInt(signedAt.UnixMilli(), 10), ts, "timestamp in milliseconds")

	// Computed here from the documented recipe: HMAC-SHA256 keyed with
	// the secret over timestamp + "\n" + secret, in base64, URL-encoded.
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "\n" + secret))
	assert.Equal(t, base64.StdEncoding.EncodeToString(mac.Sum(nil)), q.Get("sign"))
	// And by another implementation (Python's hmac and urllib).
	assert.Contains(t, req.URL.RawQuery, "sign=S%2BG39%2FSTb9zpnYQwXPwdt6XsG%2B2j10hyKdWJe1Rrab0%3D")
	assert.NotContains(t, got, "sign", "DingTalk signs in the URL, not the body")
}

func TestNewWebhookRejects(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		format chat.Format
		secret string
		want   string
	}{
		{name: "no scheme", url: "hooks.example/x?token=hunter2", format: chat.Slack, want: "want http(s)"},
		{name: "another scheme", url: "ftp://hooks.example/x?token=hunter2", format: chat.Slack, want: "want http(s)"},
		{name: "no host", url: "https:///x?token=hunter2", format: chat.Slack, want: "want http(s)"},
		{name: "secret on slack", url: "https://hooks.example/x", format: chat.Slack, secret: "s", want: "feishu and dingtalk"},
		{name: "secret on wecom", url: "https://hooks.example/x", format: chat.WeCom, secret: "s", want: "feishu and dingtalk"},
		{name: "unknown format", url: "https://hooks.example/x", format: "teams", want: "unknown format"},
		{name: "user information", url: "https://u:hunter2@hooks.example/x", format: chat.Slack, want: "user information"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := chat.NewWebhook(tt.url, tt.format, redact.NewSecret(tt.secret))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "hunter2", "the URL's credential is never repeated")
		})
	}
}

func TestWebhookStringHidesTheCredential(t *testing.T) {
	for _, u := range []string{
		"https://hooks.slack.example/services/T0/B0/hunter2",
		"https://open.feishu.example/open-apis/bot/v2/hook/hunter2",
		"https://oapi.dingtalk.example/robot/send?access_token=hunter2",
		"https://qyapi.weixin.example/cgi-bin/webhook/send?key=hunter2",
	} {
		w := newWebhook(t, u, chat.Slack, "")
		assert.NotContains(t, w.String(), "hunter2")
		assert.True(t, strings.HasPrefix(u, w.String()), "%s names the host of %s", w, u)
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range chat.Formats() {
		got, err := chat.ParseFormat(strings.ToUpper(string(f)))
		require.NoError(t, err)
		assert.Equal(t, f, got)
	}
	_, err := chat.ParseFormat("teams")
	assert.ErrorContains(t, err, "slack, feishu, dingtalk, wecom, welink, cloudevents")
}

// longChange is a changed event whose text is far beyond every limit:
// many changed fields, in characters of one, two and four UTF-16 units.
func longChange(tb testing.TB) (events.Event, []byte) {
	tb.Helper()
	var changes []snapshot.FieldChange
	for i := range 40 {
		changes = append(changes, snapshot.FieldChange{
			Field: "字段" + strconv.Itoa(i) + strings.Repeat("é😀", 60),
			Old:   json.RawMessage(`"a"`), New: json.RawMessage(`"b"`),
		})
	}
	return newEvent(tb, snapshot.Changed, strings.Repeat("会议😀", 150), "987654321", changes...)
}

func TestPlainSizeLimits(t *testing.T) {
	e, raw := longChange(t)
	require.Greater(t, len(chat.Text(e, nil)), chat.FeishuMaxBody/4, "the text must be long for this test")

	t.Run("welink 500 characters", func(t *testing.T) {
		_, got := request(t, plainWebhook(t, "https://h.example/?token=t", chat.WeLink, ""), e, raw)
		text := got["content"].(map[string]any)["text"].(string)
		assert.LessOrEqual(t, len(utf16.Encode([]rune(text))), chat.WeLinkMaxText)
		assert.Greater(t, len(utf16.Encode([]rune(text))), chat.WeLinkMaxText-2, "cut at the limit, not far below")
		assert.True(t, utf8.ValidString(text))
		assert.True(t, strings.HasSuffix(text, chat.Ellipsis))
	})
	t.Run("wecom 2048 bytes", func(t *testing.T) {
		_, got := request(t, plainWebhook(t, "https://h.example/?key=k", chat.WeCom, ""), e, raw)
		text := got["text"].(map[string]any)["content"].(string)
		assert.LessOrEqual(t, len(text), chat.WeComMaxText)
		assert.Greater(t, len(text), chat.WeComMaxText-4)
		assert.True(t, utf8.ValidString(text))
	})
	t.Run("feishu body 20 KB", func(t *testing.T) {
		// A control character takes six bytes once escaped in JSON
		// (\u0001): this body outgrows its text.
		heavy := e
		heavy.Data.Changes = nil
		for i := range 40 {
			heavy.Data.Changes = append(heavy.Data.Changes, snapshot.FieldChange{Field: strings.Repeat("\x01", 190) + strconv.Itoa(i)})
		}
		require.Less(t, len(chat.Text(heavy, nil)), chat.FeishuMaxBody, "the text alone fits")
		w := plainWebhook(t, "https://h.example/hook/x", chat.Feishu, "s")
		body := func(ev events.Event) ([]byte, string) {
			req, err := w.Request(t.Context(), ev, raw, signedAt)
			require.NoError(t, err)
			b, err := io.ReadAll(req.Body)
			require.NoError(t, err)
			var got map[string]any
			require.NoError(t, json.Unmarshal(b, &got))
			return b, got["content"].(map[string]any)["text"].(string)
		}

		b, text := body(e)
		assert.LessOrEqual(t, len(b), chat.FeishuMaxBody)
		assert.Equal(t, chat.Text(e, nil), text, "a body within the limit is not cut")

		b, text = body(heavy)
		assert.LessOrEqual(t, len(b), chat.FeishuMaxBody)
		assert.Greater(t, len(b), chat.FeishuMaxBody-8, "cut at the limit, not far below")
		assert.True(t, strings.HasSuffix(text, chat.Ellipsis))
		assert.True(t, utf8.ValidString(text))
	})
}

func TestMarkupInSubjectsIsDefused(t *testing.T) {
	e, raw := newEvent(t, snapshot.Started, `<!channel> & <at user_id="all">everyone</at>`, "1")
	_, slack := request(t, plainWebhook(t, "https://h.example/services/x", chat.Slack, ""), e, raw)
	assert.Equal(t, `Meeting started: "&lt;!channel&gt; &amp; &lt;at user_id=\"all\"&gt;everyone&lt;/at&gt;" (conference ID 1)`, slack["text"])

	_, feishu := request(t, plainWebhook(t, "https://h.example/hook/x", chat.Feishu, ""), e, raw)
	text := feishu["content"].(map[string]any)["text"].(string)
	assert.NotContains(t, text, "<at")
	assert.Contains(t, text, "\uFF1Cat user_id")
}
