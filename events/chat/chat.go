// Package chat posts meeting events to the incoming webhooks of the chat
// platforms people read (Slack, Feishu/Lark, DingTalk, WeCom, WeLink) or
// to any receiver of CloudEvents.
//
// A message says what people want to know of a meeting: its subject and
// conference ID, its organiser, when it started, the attendees online,
// how long it ran, what changed. It is laid out in the platform's rich
// format (Slack blocks, a Feishu card, DingTalk or WeCom markdown; WeLink
// takes text only) or, with Style.Plain, as its text message.
//
// Each platform wants its own body, signs it its own way, limits its size
// and its rate, and says "accepted" in its own words: an HTTP 200 can
// still carry a refusal in the body. This package knows those differences,
// so that a notifier can acknowledge an event only once the platform has
// taken it, wait when it is told to slow down, and give up on a message
// the platform will never take rather than block every message after it.
// It has no NATS import: what to read and when to acknowledge is the
// caller's business.
package chat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Format names the shape of the message a webhook expects.
type Format string

// The formats a webhook can take.
const (
	// Slack is a Slack incoming webhook: Block Kit blocks with a text
	// fallback, or {"text": ...} alone; answered "ok".
	Slack Format = "slack"
	// Feishu is a Feishu or Lark custom bot, optionally signed in the body.
	Feishu Format = "feishu"
	// DingTalk is a DingTalk custom robot, optionally signed in the URL.
	DingTalk Format = "dingtalk"
	// WeCom is a WeCom (WeChat Work) group robot.
	WeCom Format = "wecom"
	// WeLink is a Huawei WeLink group robot.
	WeLink Format = "welink"
	// CloudEvents posts the event itself, as stored in the stream, for
	// receivers that are programs rather than people.
	CloudEvents Format = "cloudevents"
)

// Formats lists every format, in the order help texts show them.
func Formats() []Format {
	return []Format{Slack, Feishu, DingTalk, WeCom, WeLink, CloudEvents}
}

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	f := Format(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Formats(), f) {
		return "", fmt.Errorf("unknown format %q (want %s)", s, formatList())
	}
	return f, nil
}

func formatList() string {
	names := make([]string, 0, len(Formats()))
	for _, f := range Formats() {
		names = append(names, string(f))
	}
	return strings.Join(names, ", ")
}

// Signed reports whether the platform verifies a shared secret, so that
// --secret means something for it.
func (f Format) Signed() bool { return f == Feishu || f == DingTalk }

// platform holds what differs between the formats beside the body: how
// fast they may be sent to, and how long to wait when told to slow down
// without being told for how long.
type platform struct {
	// every and burst pace the sends to one webhook: a token bucket that
	// never lets more through in any window than the platform allows.
	every time.Duration
	burst int
	// cooldown is the first wait after a rate-limited answer without
	// Retry-After; it doubles up to maxCooldown.
	cooldown, maxCooldown time.Duration
}

// platforms pace each webhook within its documented limits. A token
// bucket of burst b refilled every d lets b + w/d sends through in a
// window w, so each is chosen to stay under the limit in every window:
//
//   - Slack, about 1 per second with short bursts: 1 per second, 2 at once.
//   - Feishu, 100 per minute and 5 per second: 4 at once, then 1 per
//     667 ms (5 in any second, 94 in any minute).
//   - DingTalk and WeCom, 20 per minute (DingTalk then throttles for
//     10 minutes): 5 at once, then 1 per 4 s (20 in any minute).
//   - WeLink documents no rate; it gets the strictest of the others.
//   - CloudEvents receivers are programs: no pacing.
var platforms = map[Format]platform{
	Slack:       {every: time.Second, burst: 2, cooldown: time.Second, maxCooldown: time.Minute},
	Feishu:      {every: 2 * time.Second / 3, burst: 4, cooldown: 5 * time.Second, maxCooldown: time.Minute},
	DingTalk:    {every: 4 * time.Second, burst: 5, cooldown: time.Minute, maxCooldown: 10 * time.Minute},
	WeCom:       {every: 4 * time.Second, burst: 5, cooldown: 30 * time.Second, maxCooldown: 5 * time.Minute},
	WeLink:      {every: 4 * time.Second, burst: 5, cooldown: 30 * time.Second, maxCooldown: 5 * time.Minute},
	CloudEvents: {every: 0, burst: 1, cooldown: time.Second, maxCooldown: time.Minute},
}

// Limiter returns a new limiter that paces sends to one webhook of format
// f within the platform's documented rate.
func (f Format) Limiter() *rate.Limiter {
	p := platforms[f]
	if p.every <= 0 {
		return rate.NewLimiter(rate.Inf, p.burst)
	}
	return rate.NewLimiter(rate.Every(p.every), p.burst)
}

// Webhook is one incoming webhook: where to post, in which format, and the
// secret to sign with, if any. Its URL is a credential (a token or key in
// the query, or Slack's and Feishu's path), so String shows only the host.
type Webhook struct {
	url    *url.URL
	format Format
	secret redact.Secret
	style  Style
}

// NewWebhook checks rawURL and returns the webhook. A secret is accepted
// only by the formats that sign (see Format.Signed): given to another, it
// would be silently useless.
func NewWebhook(rawURL string, f Format, secret redact.Secret) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook url: want http(s)://host/..., got a %s", describe(rawURL))
	}
	if _, ok := platforms[f]; !ok {
		return nil, fmt.Errorf("unknown format %q (want %s)", f, formatList())
	}
	if !secret.IsZero() && !f.Signed() {
		return nil, fmt.Errorf("a secret signs only feishu and dingtalk messages, not %s", f)
	}
	if u.User != nil {
		return nil, fmt.Errorf("webhook url: user information is not supported")
	}
	return &Webhook{url: u, format: f, secret: secret}, nil
}

// describe says what kind of text a bad URL is without repeating it: it
// may hold a token.
func describe(s string) string {
	switch {
	case s == "":
		return "empty value"
	case !strings.Contains(s, "://"):
		return "value without a scheme"
	default:
		return "value of another shape"
	}
}

// WithStyle returns a copy of the webhook whose messages are written in
// style s: the zone of their times, and rich or plain. A new webhook
// sends rich messages with times in the machine's zone.
func (w *Webhook) WithStyle(s Style) *Webhook {
	c := *w
	c.style = s
	return &c
}

// Format returns the webhook's format.
func (w *Webhook) Format() Format { return w.format }

// String returns the webhook for logs: scheme and host only, since the
// rest of the URL may be the credential.
func (w *Webhook) String() string { return w.url.Scheme + "://" + w.url.Host }

// Plaintext reports whether the webhook is reached without TLS on a host
// other than the loopback, where its credential travels in the clear.
func (w *Webhook) Plaintext() bool {
	if w.url.Scheme != "http" {
		return false
	}
	h := w.url.Hostname()
	return h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1"
}

// messageUUID returns a 32-hex-digit id for WeLink's uuid: the event id
// when it already is one (meetwatch's ids are), so that every retry of an
// event carries the same uuid, or else a hash of it.
func messageUUID(id string) string {
	if len(id) == 32 && isLowerHex(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
