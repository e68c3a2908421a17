package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// feishuRobot is a Feishu custom bot that checks the signature in the
// body as Feishu documents it, requires the keyword "meetwatch" as a
// robot can, and accepts only what passes both.
func feishuRobot(secret string) func(int, *http.Request, []byte) *reply {
	return func(_ int, _ *http.Request, body []byte) *reply {
		var b struct {
			Timestamp string `json:"timestamp"`
			Sign      string `json:"sign"`
		}
		_ = json.Unmarshal(body, &b)
		mac := hmac.New(sha256.New, []byte(b.Timestamp+"\n"+secret))
		ts, err := strconv.ParseInt(b.Timestamp, 10, 64)
		switch {
		case err != nil || b.Sign != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || time.Since(time.Unix(ts, 0)).Abs() > time.Hour:
			return &reply{status: http.StatusOK, body: `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`}
		case !strings.Contains(string(body), "meetwatch"):
			return &reply{status: http.StatusOK, body: `{"code":19024,"msg":"Key Words Not Found"}`}
		}
		return &reply{status: http.StatusOK, body: `{"code":0,"msg":"success","data":{}}`, accepted: true}
	}
}

// TestNotifyTestMessage runs `notify --test` against stand-ins of the
// platforms, with no NATS to reach: it exits 0 when the platform accepted
// the sample message, and 1 with the platform's answer when it did not.
func TestNotifyTestMessage(t *testing.T) {
	t.Parallel()
	const feishuSecret = "FeishuTestSecret-5d1"
	tests := []struct {
		name     string
		format   string
		path     string
		args     []string
		answer   func(int, *http.Request, []byte) *reply
		wantCode int
		// wantOut is in stdout when accepted, in stderr when not.
		wantOut []string
		// wantBody is in the body the platform received.
		wantBody []string
	}{
		{
			name: "feishu card accepted", format: "feishu", path: "/open-apis/bot/v2/hook/FeishuHookId",
			args: []string{"--secret", feishuSecret}, answer: feishuRobot(feishuSecret),
			wantCode: exitOK, wantOut: []string{"accepted the test message (feishu)"},
			wantBody: []string{`"msg_type":"interactive"`, `"card":{`, `"content":"Meeting started: meetwatch test message"`,
				`Organiser: user8002`, `Online attendees: 3`, "(UTC+08:00)"},
		},
		{
			name: "feishu with the wrong secret", format: "feishu", path: "/open-apis/bot/v2/hook/FeishuHookId",
			args: []string{"--secret", "FeishuWrongSecret-77"}, answer: feishuRobot(feishuSecret),
			wantCode: exitFailed, wantOut: []string{"did not accept the test message", "code 19021", "sign match fail"},
		},
		{
			name: "feishu robot wanting another keyword", format: "feishu", path: "/open-apis/bot/v2/hook/FeishuHookId",
			args: []string{"--secret", feishuSecret},
			answer: func(int, *http.Request, []byte) *reply {
				return &reply{status: http.StatusOK, body: `{"code":19024,"msg":"Key Words Not Found"}`}
			},
			wantCode: exitFailed, wantOut: []string{"code 19024", "Key Words Not Found"},
		},
		{
			name: "slack gone", format: "slack", path: "/services/T0/B0/SlackPathSecret7",
			answer: func(int, *http.Request, []byte) *reply {
				return &reply{status: http.StatusNotFound, body: "no_service"}
			},
			wantCode: exitFailed, wantOut: []string{"http 404", "no_service"},
		},
		{
			name: "slack blocks accepted", format: "slack", path: "/services/T0/B0/SlackPathSecret7",
			answer: func(int, *http.Request, []byte) *reply {
				return &reply{status: http.StatusOK, body: "ok", accepted: true}
			},
			wantCode: exitOK, wantOut: []string{"accepted the test message (slack)"},
			wantBody: []string{`"blocks":[`, `"type":"header"`, `*meetwatch test message*`},
		},
		{
			name: "welink text accepted", format: "welink", path: "/api/werobot/v1/webhook/send",
			answer: func(int, *http.Request, []byte) *reply {
				return &reply{status: http.StatusOK, body: `{"code":"0","data":"Send message success."}`, accepted: true}
			},
			wantCode: exitOK, wantOut: []string{"accepted the test message (welink)"},
			wantBody: []string{`"messageType":"text"`, `Meeting started: \"meetwatch test message\" (conference ID 914083136)\nOrganiser: user8002`},
		},
		{
			name: "wecom plain refused", format: "wecom", path: "/cgi-bin/webhook/send", args: []string{"--plain"},
			answer: func(int, *http.Request, []byte) *reply {
				return &reply{status: http.StatusOK, body: `{"errcode":93000,"errmsg":"invalid webhook url"}`}
			},
			wantCode: exitFailed, wantOut: []string{"refused: http 200, code 93000", "invalid webhook url"},
			wantBody: []string{`"msgtype":"text"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hook := startHook(t, tt.answer)
			// A NATS URL where nothing listens: --test never dials it.
			env := map[string]string{"MEETWATCH_NATS_URL": "nats://127.0.0.1:1"}
			args := append([]string{"notify", "--test", "--format", tt.format, "--webhook", hook.URL + tt.path,
				"--time-zone", "Asia/Shanghai"}, tt.args...)
			p := startMeetwatch(t, env, args...)
			code := p.wait(t, eventWait)
			stdout, stderr := p.stdout.String(), p.stderr.String()
			assert.Equal(t, tt.wantCode, code, "exit code; stderr:\n%s", stderr)

			reqs := hook.requests()
			require.Len(t, reqs, 1, "one message, never sent again")
			out := stdout
			if tt.wantCode != exitOK {
				out = stderr
				assert.Empty(t, stdout)
			}
			for _, want := range tt.wantOut {
				assert.Contains(t, out, want)
			}
			for _, want := range tt.wantBody {
				assert.Contains(t, string(reqs[0].body), want)
			}
			for _, secret := range []string{"FeishuHookId", "SlackPathSecret7", "FeishuTestSecret", "FeishuWrongSecret"} {
				assert.NotContains(t, stdout+stderr, secret)
			}
		})
	}
}

// publishRecord publishes an event of kind about the meeting uuid whose
// data is data, as the watcher would, and returns its id.
func publishRecord(tb testing.TB, js jetstream.JetStream, kind, uuid string, data map[string]any) string {
	tb.Helper()
	raw, err := json.Marshal(data)
	require.NoError(tb, err)
	id, _ := publishHandMade(tb, js, "", kind, uuid, string(raw), json.RawMessage(raw))
	return id
}

// TestNotifyDeliversRichMessages follows a meeting's started, changed and
// ended events through the stream and the built binary to a WeCom robot:
// each arrives as WeCom markdown that shows the organiser, the start in
// --time-zone, the attendees online, the duration, and what changed, with
// a changed secret marked and its value nowhere.
func TestNotifyDeliversRichMessages(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	createMeetingsStream(t, js)
	hook := startHook(t, func(int, *http.Request, []byte) *reply {
		return &reply{status: http.StatusOK, body: `{"errcode":0,"errmsg":"ok"}`, accepted: true}
	})
	p := startNotify(t, map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()}, "--format", "wecom",
		"--webhook", hook.URL+"/cgi-bin/webhook/send?key=WeComKey31", "--kinds", "started,changed,ended",
		"--time-zone", "Asia/Shanghai")

	const uuid = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
	record := func(online int) map[string]any {
		return map[string]any{
			"confUUID": uuid, "conferenceID": "914083136", "subject": "Design review", "scheduserName": "user8002",
			"startTime": "2026-11-25 13:02", "onlineAttendeeAmount": online,
		}
	}
	publishRecord(t, js, "started", uuid, map[string]any{
		"conference": record(2), "startedAt": "2026-11-25T13:02:00Z", "incarnation": 1,
	})
	publishRecord(t, js, "changed", uuid, map[string]any{
		"conference": record(4), "previous": record(2), "startedAt": "2026-11-25T13:02:00Z", "incarnation": 1,
		"changes": []map[string]any{
			{"field": "confConfigInfo.guestPwd", "redacted": true},
			{"field": "onlineAttendeeAmount", "old": 2, "new": 4},
		},
	})
	publishRecord(t, js, "ended", uuid, map[string]any{
		"conference": record(0), "startedAt": "2026-11-25T13:02:00Z", "endedAt": "2026-11-25T14:49:30Z",
		"lastSeen": "2026-11-25T14:49:00Z", "durationSeconds": 6450, "incarnation": 1,
	})
	accepted := hook.waitAccepted(t, 3)
	waitSettled(t, js, "meetwatch-notify")
	p.stop(t, syscall.SIGTERM)

	var got []string
	for _, b := range accepted {
		var body struct {
			MsgType  string `json:"msgtype"`
			Markdown struct {
				Content string `json:"content"`
			} `json:"markdown"`
		}
		require.NoError(t, json.Unmarshal(b, &body), "body %s", b)
		assert.Equal(t, "markdown", body.MsgType)
		got = append(got, body.Markdown.Content)
	}
	const facts = "**Conference ID:** 914083136  \n**Organiser:** user8002  \n**Started:** 2026-11-25 21:02 (UTC+08:00)  \n"
	assert.Equal(t, []string{
		"### Meeting started: Design review\n\n" + facts + "**Online attendees:** 2",
		"### Meeting changed: Design review\n\n" + facts + "**Online attendees:** 4  \n\n**Changes:**  \n" +
			"• confConfigInfo.guestPwd changed (secret, not shown)  \n• onlineAttendeeAmount: 2 → 4",
		"### Meeting ended: Design review\n\n" + facts + "**Online attendees:** 0  \n**Duration:** 1 h 47 min",
	}, got)
	assert.NotContains(t, p.stderr.String(), "WeComKey31")
	assert.Contains(t, p.stderr.String(), "sent_total=3")
}
