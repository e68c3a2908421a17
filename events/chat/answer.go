package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What a webhook's answer, or the lack of one, means for the message.
// Match them with errors.Is on what Check and Sender.Send return.
var (
	// ErrRateLimited means the platform asks to slow down (HTTP 429 or
	// its own rate-limit code): the message is sent again after a wait.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable means the platform failed (HTTP 5xx, its "busy"
	// code) or could not be reached: the message is sent again with
	// backoff, for as long as it takes.
	ErrUnavailable = errors.New("unavailable")
	// ErrRefused means the platform will not take this message (another
	// 4xx, its own error code): sending it again is unlikely to help.
	ErrRefused = errors.New("refused")
	// ErrWebhookBroken means the platform refuses the webhook, not the
	// message (HTTP 401, 403, 404 or 410; a bad signature or a clock too
	// far off, a keyword the robot requires, a robot disabled or gone):
	// every message would be refused alike. The message is sent again
	// with backoff, for as long as it takes, so that none is given up
	// before the configuration is mended.
	ErrWebhookBroken = errors.New("the webhook refuses every message")

	errBadURL = errors.New("invalid webhook url")
)

// AnswerError is an answer that did not accept a message. It unwraps to
// ErrRateLimited, ErrUnavailable, ErrWebhookBroken or ErrRefused.
type AnswerError struct {
	// Status is the HTTP status.
	Status int
	// Code is the platform's own code from the body ("" when it has
	// none), such as DingTalk's errcode or Feishu's code.
	Code string
	// Message is the platform's message, or the start of the body.
	Message string
	// RetryAfter is the wait the answer asked for (Retry-After), 0 when
	// it asked for none.
	RetryAfter time.Duration

	kind error
}

func (e *AnswerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: http %d", e.kind, e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, ", code %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %q", e.Message)
	}
	return b.String()
}

// Unwrap returns the sentinel that says what to do about the answer.
func (e *AnswerError) Unwrap() error { return e.kind }

// Platform codes that are not refusals of the message itself.
var (
	rateCodes = map[Format][]string{
		Feishu:   {"11232"},  // frequency limited
		DingTalk: {"130101"}, // sending too fast, throttled
		WeCom:    {"45009"},  // api frequency out of limit
	}
	busyCodes = map[Format][]string{
		DingTalk: {"-1"}, // system busy
		WeCom:    {"-1"}, // system busy
	}
	brokenCodes = map[Format][]string{
		Feishu: {"19021", "19024"}, // bad signature or timestamp; keyword missing
		WeLink: {"58404", "58602"}, // robot not found; robot disabled
	}
)

// brokenStatus says whether an HTTP status refuses the webhook itself:
// its credentials, or its address.
func brokenStatus(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone:
		return true
	}
	return false
}

// maxRetryAfter caps the wait one answer can impose, so that a wrong
// header cannot park the notifier for days.
const maxRetryAfter = time.Hour

// maxMessage bounds what an error repeats of the platform's message.
const maxMessage = 200

// Check reads a webhook's answer, received at now: nil when the platform
// accepted the message, which takes an HTTP 2xx and, for the chat
// platforms, their own word for it in the body (Slack's "ok", Feishu's
// code 0, DingTalk's and WeCom's errcode 0, WeLink's code "0"); otherwise
// an *AnswerError saying whether to wait, retry or give up.
func (f Format) Check(status int, header http.Header, body []byte, now time.Time) error {
	ae := &AnswerError{Status: status}
	code, msg, hasCode := f.answerCode(body)
	ae.Code, ae.Message = code, TruncateBytes(msg, maxMessage)
	switch {
	case status == http.StatusTooManyRequests:
		ae.kind, ae.RetryAfter = ErrRateLimited, retryAfter(header, now)
	case status >= 500:
		ae.kind, ae.RetryAfter = ErrUnavailable, retryAfter(header, now)
	case hasCode && slices.Contains(rateCodes[f], code):
		ae.kind, ae.RetryAfter = ErrRateLimited, retryAfter(header, now)
	case hasCode && slices.Contains(busyCodes[f], code):
		ae.kind = ErrUnavailable
	case brokenStatus(status), hasCode && slices.Contains(brokenCodes[f], code):
		ae.kind = ErrWebhookBroken
	case status < 200 || status > 299:
		ae.kind = ErrRefused
	case f == CloudEvents:
		return nil
	case f == Slack:
		if strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		ae.kind = ErrRefused
	case !hasCode:
		ae.kind = ErrRefused
		if ae.Message == "" {
			ae.Message = "no code in the answer"
		}
	case code == "0":
		return nil
	default:
		ae.kind = ErrRefused
	}
	return ae
}

// answerCode reads the platform's code and message from an answer's body.
// A body that is not the platform's JSON gives its start as the message.
func (f Format) answerCode(body []byte) (code, msg string, ok bool) {
	var a struct {
		Code    json.RawMessage `json:"code"`
		ErrCode json.RawMessage `json:"errcode"`
		Msg     string          `json:"msg"`
		ErrMsg  string          `json:"errmsg"`
		Message string          `json:"message"`
	}
	plain := strings.TrimSpace(string(body))
	if f == Slack || f == CloudEvents || json.Unmarshal(body, &a) != nil {
		return "", plain, false
	}
	raw := a.Code
	if f == DingTalk || f == WeCom {
		raw = a.ErrCode
	}
	msg = firstOf(a.Msg, a.ErrMsg, a.Message)
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", firstOf(msg, plain), false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", plain, false
		}
		return strings.TrimSpace(s), msg, true
	}
	return string(raw), msg, true
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date,
// and returns 0 when there is none or it cannot be read.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(min(secs, int(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
