package chat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meetwatch/meetwatch/events"
)

// Documented size limits of the platforms' text messages.
const (
	// WeLinkMaxText is WeLink's limit on a text message, in characters;
	// counted here in UTF-16 code units, the stricter reading, so that a
	// character outside the Basic Multilingual Plane counts twice.
	WeLinkMaxText = 500
	// WeComMaxText is WeCom's limit on a text message's content, in bytes
	// of UTF-8.
	WeComMaxText = 2048
	// FeishuMaxBody is Feishu's limit on a request body, in bytes.
	FeishuMaxBody = 20 << 10
)

const jsonContentType = "application/json; charset=utf-8"

// Request returns the HTTP request that posts event e to the webhook. raw
// is the event's body as stored, which the cloudevents format posts
// unchanged. now is when the request is signed: build a new request for
// every attempt, since the platforms refuse an old signature.
func (w *Webhook) Request(ctx context.Context, e events.Event, raw []byte, now time.Time) (*http.Request, error) {
	body, contentType, err := w.body(e, raw, now)
	if err != nil {
		return nil, fmt.Errorf("building the %s message of event %s: %w", w.format, e.ID, err)
	}
	target := *w.url
	if w.format == DingTalk && !w.secret.IsZero() {
		ts := strconv.FormatInt(now.UnixMilli(), 10)
		q := target.Query()
		q.Set("timestamp", ts)
		q.Set("sign", dingTalkSign(w.secret.Reveal(), ts))
		target.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		// The error would quote the URL, a credential.
		return nil, fmt.Errorf("building the request to %s for event %s: %w", w, e.ID, errBadURL)
	}
	req.Header.Set("Content-Type", contentType)
	return req, nil
}

func (w *Webhook) body(e events.Event, raw []byte, now time.Time) ([]byte, string, error) {
	if w.format == CloudEvents {
		if len(raw) == 0 {
			return nil, "", fmt.Errorf("no stored body to post")
		}
		return raw, events.ContentType, nil
	}
	m := newMessage(e, w.style.Zone)
	if !w.style.Plain {
		return w.richBody(e, m, now)
	}
	text := m.text(maxChangeLines)
	var v any
	switch w.format {
	case Slack:
		v = slackBody{Text: slackEscape(text)}
	case Feishu:
		return w.feishuBody(defuseFeishu(text), now)
	case DingTalk:
		v = dingTalkBody{MsgType: "text", Text: dingTalkText{Content: text}, At: dingTalkAt{AtMobiles: []string{}}}
	case WeCom:
		v = weComBody{MsgType: "text", Text: weComText{Content: TruncateBytes(text, WeComMaxText), MentionedList: []string{}}}
	case WeLink:
		v = w.weLinkBody(e, TruncateUTF16(text, WeLinkMaxText), now)
	default:
		return nil, "", fmt.Errorf("unknown format %q", w.format)
	}
	b, err := marshal(v)
	return b, jsonContentType, err
}

// richBody is the platform's rich message: Slack blocks, a Feishu card,
// DingTalk or WeCom markdown, and WeLink's text, the only kind it takes.
func (w *Webhook) richBody(e events.Event, m message, now time.Time) ([]byte, string, error) {
	var v any
	switch w.format {
	case Slack:
		v = slackRich(m)
	case Feishu:
		b, err := w.feishuRich(m, now)
		return b, jsonContentType, err
	case DingTalk:
		v = dingTalkRich(m)
	case WeCom:
		v = weComRich(m)
	case WeLink:
		v = w.weLinkBody(e, weLinkRich(m), now)
	default:
		return nil, "", fmt.Errorf("unknown format %q", w.format)
	}
	b, err := marshal(v)
	return b, jsonContentType, err
}

// weLinkBody is WeLink's text message of text. Its uuid is the event's,
// the same at every attempt.
func (w *Webhook) weLinkBody(e events.Event, text string, now time.Time) weLinkBody {
	return weLinkBody{
		MessageType: "text",
		Content:     weLinkText{Text: text},
		TimeStamp:   now.UnixMilli(),
		UUID:        messageUUID(e.ID),
		AtAccounts:  []string{},
	}
}

// feishuBody signs the message when there is a secret, and cuts its text
// until the whole body fits FeishuMaxBody.
func (w *Webhook) feishuBody(text string, now time.Time) ([]byte, string, error) {
	body := feishuBody{MsgType: "text"}
	if !w.secret.IsZero() {
		body.Timestamp = strconv.FormatInt(now.Unix(), 10)
		body.Sign = feishuSign(w.secret.Reveal(), body.Timestamp)
	}
	encode := func(n int) ([]byte, error) {
		body.Content.Text = TruncateBytes(text, n)
		return marshal(body)
	}
	b, err := encode(len(text))
	if err != nil || len(b) <= FeishuMaxBody {
		return b, jsonContentType, err
	}
	// Escaping grows some characters sixfold (a control character
	// becomes \u0001), so the longest text that fits is searched for.
	lo, hi := 0, len(text)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if b, err = encode(mid); err != nil {
			return nil, "", err
		}
		if len(b) <= FeishuMaxBody {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	b, err = encode(lo)
	return b, jsonContentType, err
}

// marshal encodes v as JSON without HTML escaping, which only makes a
// body larger for receivers that are not browsers.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// feishuSign is Feishu's signature: base64 of an HMAC-SHA256 keyed with
// timestamp, a newline and the secret, over an empty message.
func feishuSign(secret, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(timestamp+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// dingTalkSign is DingTalk's signature: base64 of an HMAC-SHA256 keyed
// with the secret over the timestamp (milliseconds), a newline and the
// secret. The caller URL-encodes it into the query.
func dingTalkSign(secret, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// slackEscape escapes the three characters Slack reads as markup, so that
// a meeting subject cannot mention a channel or forge a link.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// defuseFeishu breaks Feishu's <at> tag, with which a meeting subject
// could mention everyone in the group, by putting a fullwidth "<" in the
// place of its ASCII one.
func defuseFeishu(s string) string {
	if !strings.Contains(strings.ToLower(s), "<at") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '<' && len(s) >= i+3 && strings.EqualFold(s[i+1:i+3], "at") {
			b.WriteString("\uFF1C")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// The platforms' text message bodies.
type (
	slackBody struct {
		Text string `json:"text"`
	}
	feishuBody struct {
		Timestamp string     `json:"timestamp,omitempty"`
		Sign      string     `json:"sign,omitempty"`
		MsgType   string     `json:"msg_type"`
		Content   feishuText `json:"content"`
	}
	feishuText struct {
		Text string `json:"text"`
	}
	dingTalkBody struct {
		MsgType string       `json:"msgtype"`
		Text    dingTalkText `json:"text"`
		At      dingTalkAt   `json:"at"`
	}
	dingTalkText struct {
		Content string `json:"content"`
	}
	dingTalkAt struct {
		AtMobiles []string `json:"atMobiles"`
		IsAtAll   bool     `json:"isAtAll"`
	}
	weComBody struct {
		MsgType string    `json:"msgtype"`
		Text    weComText `json:"text"`
	}
	weComText struct {
		Content       string   `json:"content"`
		MentionedList []string `json:"mentioned_list"`
	}
	weLinkBody struct {
		MessageType string     `json:"messageType"`
		Content     weLinkText `json:"content"`
		TimeStamp   int64      `json:"timeStamp"`
		UUID        string     `json:"uuid"`
		IsAt        bool       `json:"isAt"`
		IsAtAll     bool       `json:"isAtAll"`
		AtAccounts  []string   `json:"atAccounts"`
	}
	weLinkText struct {
		Text string `json:"text"`
	}
)
