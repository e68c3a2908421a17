package chat_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/chat"
	"github.com/meetwatch/meetwatch/snapshot"
)

// answer is what the fake platform says to one request: a status, headers
// and a body, or a transport error.
type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

// platform is a fake webhook endpoint behind an http.RoundTripper, so that
// the sender's waits run on synctest's clock rather than the real one. It
// answers from a script, repeating the last answer once the script ends.
type platform struct {
	mu     sync.Mutex
	script []answer
	got    []sent
}

// sent is one request the platform received.
type sent struct {
	at   time.Time
	url  string
	body []byte
}

func (p *platform) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, sent{at: time.Now(), url: req.URL.String(), body: body})
	a := p.script[min(len(p.got), len(p.script))-1]
	if a.err != nil {
		return nil, a.err
	}
	h := a.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(strings.NewReader(a.body)), Request: req}, nil
}

func (p *platform) requests() []sent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sent(nil), p.got...)
}

func newSender(tb testing.TB, w *chat.Webhook, p *platform, logs io.Writer) *chat.Sender {
	tb.Helper()
	if logs == nil {
		logs = io.Discard
	}
	s, err := chat.NewSender(chat.SenderConfig{
		Webhook: w,
		Client:  &http.Client{Transport: p, Timeout: chat.DefaultTimeout},
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	})
	require.NoError(tb, err)
	return s
}

var ok = map[chat.Format]answer{
	chat.Slack:    {status: 200, body: "ok"},
	chat.DingTalk: {status: 200, body: `{"errcode":0,"errmsg":"ok"}`},
}

func TestSendWaitsForRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{
			{status: 429, header: http.Header{"Retry-After": {"30"}}, body: "rate_limited"},
			ok[chat.Slack],
		}}
		s := newSender(t, newWebhook(t, "https://hooks.slack.example/services/T0/B0/x", chat.Slack, ""), p, nil)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")

		require.NoError(t, s.Send(t.Context(), e, raw))
		got := p.requests()
		require.Len(t, got, 2)
		assert.Equal(t, 30*time.Second, got[1].at.Sub(got[0].at), "the retry waits exactly Retry-After")
		assert.Equal(t, got[0].body, got[1].body, "the same message again")
	})
}

func TestSendWaitsOnPlatformRateLimitCode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{
			{status: 200, body: `{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}`},
			ok[chat.DingTalk],
		}}
		w := newWebhook(t, "https://oapi.dingtalk.example/robot/send?access_token=t", chat.DingTalk, "SECsecret")
		s := newSender(t, w, p, nil)
		e, raw := newEvent(t, snapshot.Ended, "Weekly sync", "1")

		require.NoError(t, s.Send(t.Context(), e, raw))
		got := p.requests()
		require.Len(t, got, 2)
		wait := got[1].at.Sub(got[0].at)
		assert.GreaterOrEqual(t, wait, 30*time.Second, "a throttled robot is left alone for a while")
		assert.LessOrEqual(t, wait, time.Minute)
		assert.NotEqual(t, got[0].url, got[1].url, "each try is signed anew")
	})
}

func TestSendRetriesFailuresWithoutGivingUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{
			{status: 500},
			{status: 502},
			{err: errors.New("connection reset by peer")},
			{status: 503},
			{err: errors.New("i/o timeout")},
			ok[chat.Slack],
		}}
		s := newSender(t, newWebhook(t, "https://hooks.slack.example/services/T0/B0/x", chat.Slack, ""), p, nil)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")

		start := time.Now()
		require.NoError(t, s.Send(t.Context(), e, raw), "failures are not refusals: the message is delivered")
		got := p.requests()
		assert.Len(t, got, 6)
		// Backoff from 1 s, doubling, drawn from the upper half of each step.
		assert.GreaterOrEqual(t, time.Since(start), (500+1000+2000+4000+8000)*time.Millisecond)
	})
}

func TestSendGivesUpAfterRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{{status: 400, body: "invalid_payload"}}}
		s := newSender(t, newWebhook(t, "https://hooks.slack.example/services/T0/B0/x", chat.Slack, ""), p, nil)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")

		start := time.Now()
		err := s.Send(t.Context(), e, raw)
		require.ErrorIs(t, err, chat.ErrRefused)
		assert.Contains(t, err.Error(), "invalid_payload")
		assert.Len(t, p.requests(), chat.DefaultTries)
		assert.Less(t, time.Since(start), 5*time.Second, "a refused message does not hold the ones after it for long")
	})
}

func TestSendPacesWithinThePlatformRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{ok[chat.DingTalk]}}
		s := newSender(t, newWebhook(t, "https://oapi.dingtalk.example/robot/send?access_token=t", chat.DingTalk, ""), p, nil)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")
		for range 45 {
			require.NoError(t, s.Send(t.Context(), e, raw))
		}
		got := p.requests()
		require.Len(t, got, 45)
		// DingTalk allows 20 messages a minute: in no window of a minute
		// may there be more.
		for i := range got {
			n := 0
			for j := i; j < len(got) && got[j].at.Sub(got[i].at) < time.Minute; j++ {
				n++
			}
			assert.LessOrEqual(t, n, 20, "messages in the minute from message %d", i)
		}
	})
}

func TestSendStopsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &platform{script: []answer{{status: 503}}}
		s := newSender(t, newWebhook(t, "https://hooks.slack.example/services/T0/B0/x", chat.Slack, ""), p, nil)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		err := s.Send(ctx, e, raw)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotEmpty(t, p.requests())
	})
}

func TestSendNeverShowsTheCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const token = "hunter2-token"
		p := &platform{script: []answer{
			{err: errors.New("connection refused")},
			{status: 403, body: `{"errcode":300001,"errmsg":"token is not exist"}`},
		}}
		var logs bytes.Buffer
		w := newWebhook(t, "https://oapi.dingtalk.example/robot/send?access_token="+token, chat.DingTalk, "SEC-hunter2-secret")
		s := newSender(t, w, p, &logs)
		e, raw := newEvent(t, snapshot.Started, "Weekly sync", "1")

		// A token the platform does not know refuses the webhook: the
		// event waits, retried, until the configuration is mended.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		err := s.Send(ctx, e, raw)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.GreaterOrEqual(t, len(p.requests()), 3)
		assert.Contains(t, logs.String(), "the webhook refuses every message")
		for _, text := range []string{err.Error(), logs.String()} {
			assert.NotContains(t, text, "hunter2")
			assert.NotContains(t, text, "sign=")
		}
		assert.Contains(t, logs.String(), "connection refused", "the cause is logged")
		assert.Contains(t, logs.String(), "webhook=https://oapi.dingtalk.example", "the host is logged")
	})
}

// TestTrySendsOnce checks that a test message gets one attempt, whatever
// the answer: a refusal, a rate limit or a failure comes back at once,
// with the platform's words, for the person who asked.
func TestTrySendsOnce(t *testing.T) {
	e, raw, err := chat.Sample(signedAt)
	require.NoError(t, err)
	tests := []struct {
		name   string
		answer answer
		want   error
		words  string
	}{
		{name: "accepted", answer: ok[chat.DingTalk]},
		{name: "refused", answer: answer{status: 200, body: `{"errcode":300001,"errmsg":"token is not exist"}`}, want: chat.ErrRefused, words: "token is not exist"},
		{name: "rate limited", answer: answer{status: 200, body: `{"errcode":130101,"errmsg":"send too fast"}`}, want: chat.ErrRateLimited, words: "send too fast"},
		{name: "failing", answer: answer{status: 503, body: "busy"}, want: chat.ErrUnavailable, words: "http 503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &platform{script: []answer{tt.answer, ok[chat.DingTalk]}}
			s := newSender(t, newWebhook(t, "https://oapi.dingtalk.example/robot/send?access_token=t", chat.DingTalk, ""), p, nil)
			err := s.Try(t.Context(), e, raw)
			assert.Len(t, p.requests(), 1, "one attempt")
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.want)
			assert.ErrorContains(t, err, tt.words)
		})
	}
}

// TestSample checks that the sample message is a started event as the
// watcher publishes it, new at every call, with every fact a message
// shows and no secret.
func TestSample(t *testing.T) {
	first, raw, err := chat.Sample(signedAt)
	require.NoError(t, err)
	got, err := events.Decode(raw)
	require.NoError(t, err)
	assert.Equal(t, first.ID, got.ID)
	assert.Equal(t, snapshot.Started, got.Kind())
	assert.Equal(t, events.DataSchema(snapshot.Started), got.DataSchema)
	require.NotNil(t, got.Data.StartedAt)
	assert.Equal(t, signedAt, *got.Data.StartedAt)
	assert.Contains(t, chat.Text(got, time.UTC), `Meeting started: "meetwatch test message" (conference ID 914083136)
Organiser: user8002
Started: 2026-01-01 00:00 (UTC)
Online attendees: 3`)
	for _, secret := range []string{"JoinUri", "password", "guestPwd", "liveUrl", "Address"} {
		assert.NotContains(t, string(raw), secret)
	}
	again, _, err := chat.Sample(signedAt)
	require.NoError(t, err)
	assert.NotEqual(t, first.ID, again.ID, "a new id: no platform takes a second test for a repeat")
}
