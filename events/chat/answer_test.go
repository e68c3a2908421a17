package chat_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/chat"
)

func TestCheck(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		format     chat.Format
		status     int
		header     http.Header
		body       string
		want       error // nil: accepted
		wantCode   string
		wantRetry  time.Duration
		wantInText string
	}{
		{name: "slack ok", format: chat.Slack, status: 200, body: "ok"},
		{name: "slack ok with newline", format: chat.Slack, status: 200, body: "ok\n"},
		{name: "slack 200 without ok", format: chat.Slack, status: 200, body: "", want: chat.ErrRefused},
		{name: "slack invalid payload", format: chat.Slack, status: 400, body: "invalid_payload", want: chat.ErrRefused, wantInText: "invalid_payload"},
		{name: "slack no service", format: chat.Slack, status: 404, body: "no_service", want: chat.ErrWebhookBroken},
		{name: "slack archived channel", format: chat.Slack, status: 410, body: "channel_is_archived", want: chat.ErrWebhookBroken},
		{name: "slack 429", format: chat.Slack, status: 429, header: http.Header{"Retry-After": {"7"}}, body: "rate_limited", want: chat.ErrRateLimited, wantRetry: 7 * time.Second},
		{name: "slack 500", format: chat.Slack, status: 500, body: "oops", want: chat.ErrUnavailable},
		{name: "slack redirect", format: chat.Slack, status: 302, want: chat.ErrRefused},

		{name: "feishu ok", format: chat.Feishu, status: 200, body: `{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}`},
		{name: "feishu bad signature", format: chat.Feishu, status: 200, body: `{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour from current time"}`, want: chat.ErrWebhookBroken, wantCode: "19021", wantInText: "sign match fail"},
		{name: "feishu keyword missing", format: chat.Feishu, status: 200, body: `{"code":19024,"msg":"Key Words Not Found"}`, want: chat.ErrWebhookBroken, wantCode: "19024"},
		{name: "feishu rate limited", format: chat.Feishu, status: 200, body: `{"code":11232,"msg":"frequency limited"}`, want: chat.ErrRateLimited, wantCode: "11232"},
		{name: "feishu rate limited on a 400", format: chat.Feishu, status: 400, body: `{"code":11232,"msg":"frequency limited"}`, want: chat.ErrRateLimited},
		{name: "feishu 200 without a code", format: chat.Feishu, status: 200, body: `{}`, want: chat.ErrRefused},
		{name: "feishu 200 not json", format: chat.Feishu, status: 200, body: `<html>`, want: chat.ErrRefused, wantInText: "<html>"},

		{name: "dingtalk ok", format: chat.DingTalk, status: 200, body: `{"errcode":0,"errmsg":"ok"}`},
		{name: "dingtalk throttled", format: chat.DingTalk, status: 200, body: `{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}`, want: chat.ErrRateLimited, wantCode: "130101"},
		{name: "dingtalk bad token", format: chat.DingTalk, status: 200, body: `{"errcode":300001,"errmsg":"token is not exist"}`, want: chat.ErrRefused, wantCode: "300001", wantInText: "token is not exist"},
		{name: "dingtalk busy", format: chat.DingTalk, status: 200, body: `{"errcode":-1,"errmsg":"system busy"}`, want: chat.ErrUnavailable},

		{name: "wecom ok", format: chat.WeCom, status: 200, body: `{"errcode":0,"errmsg":"ok"}`},
		{name: "wecom invalid key", format: chat.WeCom, status: 200, body: `{"errcode":93000,"errmsg":"invalid webhook url"}`, want: chat.ErrRefused, wantCode: "93000"},
		{name: "wecom frequency", format: chat.WeCom, status: 200, body: `{"errcode":45009,"errmsg":"api freq out of limit"}`, want: chat.ErrRateLimited},
		{name: "wecom ignores a code field", format: chat.WeCom, status: 200, body: `{"code":0}`, want: chat.ErrRefused},

		{name: "welink ok", format: chat.WeLink, status: 200, body: `{"code":"0","data":null,"message":"ok"}`},
		{name: "welink ok as a number", format: chat.WeLink, status: 200, body: `{"code":0}`},
		{name: "welink robot not found", format: chat.WeLink, status: 200, body: `{"code":"58404","message":"robot not found"}`, want: chat.ErrWebhookBroken, wantCode: "58404"},
		{name: "welink bad parameter", format: chat.WeLink, status: 200, body: `{"code":"58601","message":"param error"}`, want: chat.ErrRefused, wantCode: "58601"},
		{name: "welink disabled", format: chat.WeLink, status: 200, body: `{"code":"58602"}`, want: chat.ErrWebhookBroken},
		{name: "welink 503 with a date", format: chat.WeLink, status: 503, header: http.Header{"Retry-After": {"Thu, 01 Jan 2026 00:00:30 GMT"}}, want: chat.ErrUnavailable, wantRetry: 30 * time.Second},

		{name: "cloudevents 200", format: chat.CloudEvents, status: 200, body: "whatever"},
		{name: "cloudevents 202 empty", format: chat.CloudEvents, status: 202},
		{name: "cloudevents 204", format: chat.CloudEvents, status: 204},
		{name: "cloudevents 400", format: chat.CloudEvents, status: 400, want: chat.ErrRefused},
		{name: "cloudevents 413", format: chat.CloudEvents, status: 413, want: chat.ErrRefused},
		{name: "cloudevents 429 without retry-after", format: chat.CloudEvents, status: 429, want: chat.ErrRateLimited},
		{name: "cloudevents 429 huge retry-after", format: chat.CloudEvents, status: 429, header: http.Header{"Retry-After": {"999999999"}}, want: chat.ErrRateLimited, wantRetry: time.Hour},
		{name: "cloudevents 502", format: chat.CloudEvents, status: 502, want: chat.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.format.Check(tt.status, tt.header, []byte(tt.body), now)
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			for _, other := range []error{chat.ErrRefused, chat.ErrRateLimited, chat.ErrUnavailable} {
				if other != tt.want {
					assert.False(t, errors.Is(err, other), "also %v", other)
				}
			}
			var ae *chat.AnswerError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.status, ae.Status)
			if tt.wantCode != "" {
				assert.Equal(t, tt.wantCode, ae.Code)
			}
			assert.Equal(t, tt.wantRetry, ae.RetryAfter)
			assert.Contains(t, err.Error(), tt.wantInText)
		})
	}
}
