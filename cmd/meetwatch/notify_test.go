package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// hookRequest is one request the webhook stand-in received, and how it
// answered.
type hookRequest struct {
	at       time.Time
	path     string
	query    string
	body     []byte
	status   int
	accepted bool
}

// reply is what the stand-in answers to one request. A nil reply is a
// request it holds until the client gives up.
type reply struct {
	status   int
	header   http.Header
	body     string
	accepted bool
}

// hookStandIn is a chat platform's webhook on the loopback interface,
// answering each request as the test's answer function says.
type hookStandIn struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []hookRequest
	answer func(n int, r *http.Request, body []byte) *reply
}

func startHook(tb testing.TB, answer func(n int, r *http.Request, body []byte) *reply) *hookStandIn {
	tb.Helper()
	h := &hookStandIn{answer: answer}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		n := len(h.reqs)
		h.reqs = append(h.reqs, hookRequest{at: time.Now(), path: r.URL.Path, query: r.URL.RawQuery, body: body})
		h.mu.Unlock()
		a := h.answer(n, r, body)
		if a == nil {
			<-r.Context().Done()
			return
		}
		h.mu.Lock()
		h.reqs[n].status, h.reqs[n].accepted = a.status, a.accepted
		h.mu.Unlock()
		for k, v := range a.header {
			w.Header()[k] = v
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	tb.Cleanup(h.Close)
	return h
}

func (h *hookStandIn) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.reqs...)
}

// accepted returns the bodies the stand-in accepted, in order.
func (h *hookStandIn) accepted() [][]byte {
	var out [][]byte
	for _, r := range h.requests() {
		if r.accepted {
			out = append(out, r.body)
		}
	}
	return out
}

func (h *hookStandIn) waitAccepted(tb testing.TB, n int) [][]byte {
	tb.Helper()
	require.Eventually(tb, func() bool { return len(h.accepted()) >= n }, eventWait, tick,
		"waiting for the webhook to accept %d messages", n)
	return h.accepted()
}

// createMeetingsStream creates the stream as `meetwatch run` does.
func createMeetingsStream(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	_, err := js.CreateStream(tb.Context(), jetstream.StreamConfig{
		Name: "MEETINGS", Subjects: []string{"meetings.>"}, Storage: jetstream.FileStorage, Duplicates: time.Hour,
	})
	require.NoError(tb, err)
}

// meeting is what the tests publish events about.
type meeting struct{ uuid, subject, conferenceID string }

// publishEvent publishes a well-formed event of kind about m, as the
// watcher would, and returns its id. A changed event carries the changes
// given as field, old, new triples of JSON values.
func publishEvent(tb testing.TB, js jetstream.JetStream, kind string, m meeting, initial bool, changes ...[3]string) string {
	tb.Helper()
	record := map[string]any{"confUUID": m.uuid, "subject": m.subject, "conferenceID": m.conferenceID}
	data := map[string]any{"conference": record, "incarnation": 1}
	if kind == "ended" {
		data["endedAt"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	if initial {
		data["initial"] = true
	}
	if kind == "changed" {
		var cs []map[string]json.RawMessage
		for _, c := range changes {
			cs = append(cs, map[string]json.RawMessage{"field": json.RawMessage(`"` + c[0] + `"`), "old": json.RawMessage(c[1]), "new": json.RawMessage(c[2])})
		}
		data["changes"], data["previous"] = cs, record
	}
	id, _ := publishHandMade(tb, js, "", kind, m.uuid, m.subject, data)
	return id
}

// publishHandMade publishes an event made by hand as a watcher would make
// it: on meetings.[<account>.]<kind>.<uuid>, with the account attribute
// and a source naming it when account is set, and an id hashed from the
// account, kind, uuid and distinct, so that the same call twice is the
// same event. It returns the id and the body.
func publishHandMade(tb testing.TB, js jetstream.JetStream, account, kind, uuid, distinct string, data any) (string, []byte) {
	tb.Helper()
	sum := sha256.Sum256([]byte(account + "\x00" + kind + "\x00" + uuid + "\x00" + distinct))
	id := hex.EncodeToString(sum[:16])
	envelope := map[string]any{
		"specversion": "1.0", "id": id, "source": "meetwatch://127.0.0.1", "type": "meetwatch.meeting." + kind,
		"subject": uuid, "time": time.Now().UTC().Format(time.RFC3339Nano), "datacontenttype": "application/json",
		"dataschema": events.DataSchema(events.Kind(kind)), "data": data,
	}
	subject := "meetings." + kind + "." + uuid
	if account != "" {
		envelope["source"], envelope["account"] = "meetwatch://127.0.0.1/"+account, account
		subject = "meetings." + account + "." + kind + "." + uuid
	}
	body, err := json.Marshal(envelope)
	require.NoError(tb, err)
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	msg.Header.Set("Nats-Msg-Id", id)
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	_, err = js.PublishMsg(tb.Context(), msg)
	require.NoError(tb, err)
	return id, body
}

// startNotify starts `meetwatch notify` against natsURL and waits until
// its durable is in place.
func startNotify(tb testing.TB, env map[string]string, args ...string) *process {
	tb.Helper()
	p := startMeetwatch(tb, env, append([]string{"notify"}, args...)...)
	require.Eventually(tb, func() bool { return strings.Contains(p.stderr.String(), "msg=notifying") },
		eventWait, tick, "waiting for notify to open its durable")
	return p
}

// waitSettled waits until the durable has nothing left to deliver and
// nothing waiting for an acknowledgement.
func waitSettled(tb testing.TB, js jetstream.JetStream, durable string) {
	tb.Helper()
	require.Eventually(tb, func() bool {
		c, err := js.Consumer(tb.Context(), "MEETINGS", durable)
		if err != nil {
			return false
		}
		info := c.CachedInfo()
		return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	}, eventWait, tick, "waiting for durable %s to settle every message", durable)
}

// kill ends p with SIGKILL, as a crash would.
func (p *process) kill(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, p.cmd.Process.Kill())
	<-p.done
}

func slackText(tb testing.TB, body []byte) string {
	tb.Helper()
	var b struct {
		Text string `json:"text"`
	}
	require.NoError(tb, json.Unmarshal(body, &b), "body %s", body)
	return b.Text
}

func TestNotifyDeliversEachSelectedEventOnceInOrder(t *testing.T) {
	t.Parallel()
	const slackPath = "/services/T0001/B0002/SlackPathSecret42"
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	createMeetingsStream(t, js)

	// History: stored before the durable exists, never to be sent.
	history := meeting{"00000000000000000000000000000001", "Old history", "100"}
	publishEvent(t, js, "started", history, false)
	publishEvent(t, js, "ended", history, false)

	hook := startHook(t, func(n int, _ *http.Request, _ []byte) *reply {
		if n == 0 {
			return &reply{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {"1"}}, body: "rate_limited"}
		}
		return &reply{status: http.StatusOK, body: "ok", accepted: true}
	})
	env := map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()}
	args := []string{"--webhook", hook.URL + slackPath, "--format", "slack"}
	first := startNotify(t, env, args...)
	assert.Contains(t, first.stderr.String(), "new_durable=true")

	alpha := meeting{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Alpha review", "1001"}
	beta := meeting{"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "Beta <!channel> standup", "1002"}
	running := meeting{"cccccccccccccccccccccccccccccccc", "Already running", "1003"}
	publishEvent(t, js, "started", alpha, false)
	publishEvent(t, js, "changed", alpha, false, [3]string{"subject", `"Alpha"`, `"Alpha review"`}) // not selected
	publishEvent(t, js, "started", running, true)                                                   // already running: sent, and said so
	publishEvent(t, js, "ended", alpha, false)
	publishEvent(t, js, "started", beta, false)

	hook.waitAccepted(t, 4)
	waitSettled(t, js, "meetwatch-notify")

	// Killed while idle: what arrives while it is down waits in the
	// durable.
	first.kill(t)
	gamma := meeting{"dddddddddddddddddddddddddddddddd", "Gamma 会议", "1004"}
	publishEvent(t, js, "ended", beta, false)
	publishEvent(t, js, "started", gamma, false)
	second := startNotify(t, env, args...)
	assert.Contains(t, second.stderr.String(), "new_durable=false")
	hook.waitAccepted(t, 6)
	waitSettled(t, js, "meetwatch-notify")
	second.stop(t, syscall.SIGTERM)

	var got []string
	for _, b := range hook.accepted() {
		got = append(got, slackText(t, b))
	}
	assert.Equal(t, []string{
		`Meeting started: "Alpha review" (conference ID 1001)`,
		`Meeting started: "Already running" (conference ID 1003), already running when meetwatch started`,
		`Meeting ended: "Alpha review" (conference ID 1001)`,
		`Meeting started: "Beta &lt;!channel&gt; standup" (conference ID 1002)`,
		`Meeting ended: "Beta &lt;!channel&gt; standup" (conference ID 1002)`,
		`Meeting started: "Gamma 会议" (conference ID 1004)`,
	}, got, "each selected event once, in order; no history, no changed")

	reqs := hook.requests()
	require.Len(t, reqs, 7, "six messages and one retry after the 429")
	assert.Equal(t, http.StatusTooManyRequests, reqs[0].status)
	assert.Equal(t, reqs[0].body, reqs[1].body, "the rate-limited message is the one sent next")
	assert.GreaterOrEqual(t, reqs[1].at.Sub(reqs[0].at), 990*time.Millisecond, "the retry waits for Retry-After")
	for _, r := range reqs {
		assert.Equal(t, slackPath, r.path)
	}

	for _, p := range []*process{first, second} {
		assert.NotContains(t, p.stderr.String(), "SlackPathSecret42", "the webhook's secret path is never logged")
		assert.Empty(t, p.stdout.String())
	}
	assert.Contains(t, second.stderr.String(), "sent_total=2")
}

func TestNotifySkipsARefusedMessage(t *testing.T) {
	t.Parallel()
	const (
		accessToken = "DingAccessToken77"
		secret      = "SECding-signing-secret-31"
	)
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	// A DingTalk robot that checks the signature as DingTalk documents it,
	// and refuses, with a 400, any message about the meeting "Refused".
	hook := startHook(t, func(_ int, r *http.Request, body []byte) *reply {
		q := r.URL.Query()
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(q.Get("timestamp") + "\n" + secret))
		switch {
		case q.Get("access_token") != accessToken:
			return &reply{status: http.StatusOK, body: `{"errcode":300001,"errmsg":"token is not exist"}`}
		case q.Get("sign") != base64.StdEncoding.EncodeToString(mac.Sum(nil)):
			return &reply{status: http.StatusOK, body: `{"errcode":310000,"errmsg":"sign not match"}`}
		case strings.Contains(string(body), "Refused"):
			return &reply{status: http.StatusBadRequest, body: "bad request"}
		}
		return &reply{status: http.StatusOK, body: `{"errcode":0,"errmsg":"ok"}`, accepted: true}
	})

	// Started before the stream exists: it waits for it.
	env := map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL(), "MEETWATCH_NOTIFY_SECRET": secret}
	p := startMeetwatch(t, env, "notify", "--webhook", hook.URL+"/robot/send?access_token="+accessToken,
		"--format", "dingtalk", "--plain", "--kinds", "started,ended,changed", "--durable", "ding")
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "waiting for the stream") },
		eventWait, tick, "waiting for notify to wait for the stream")
	createMeetingsStream(t, js)
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "msg=notifying") },
		eventWait, tick, "waiting for notify to open its durable")

	refused := meeting{"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "Refused", "2001"}
	alpha := meeting{"ffffffffffffffffffffffffffffffff", "Alpha review", "2002"}
	publishEvent(t, js, "started", refused, false)
	publishEvent(t, js, "changed", alpha, false,
		[3]string{"subject", `"Alpha"`, `"Alpha review"`}, [3]string{"confConfigInfo.isAutoMute", "false", "true"})
	publishEvent(t, js, "ended", alpha, false)

	accepted := hook.waitAccepted(t, 2)
	waitSettled(t, js, "ding")
	p.stop(t, syscall.SIGINT)

	var got []string
	for _, b := range accepted {
		var body struct {
			MsgType string `json:"msgtype"`
			Text    struct {
				Content string `json:"content"`
			} `json:"text"`
		}
		require.NoError(t, json.Unmarshal(b, &body))
		assert.Equal(t, "text", body.MsgType)
		got = append(got, body.Text.Content)
	}
	assert.Equal(t, []string{
		"Meeting changed: \"Alpha review\" (conference ID 2002)\n• subject: \"Alpha\" → \"Alpha review\"\n• confConfigInfo.isAutoMute: false → true",
		`Meeting ended: "Alpha review" (conference ID 2002)`,
	}, got)

	refusals := 0
	for _, r := range hook.requests() {
		if r.status == http.StatusBadRequest {
			refusals++
		}
	}
	assert.Equal(t, 3, refusals, "the refused message is tried 3 times")
	stderr := p.stderr.String()
	assert.Contains(t, stderr, "event skipped")
	assert.Contains(t, stderr, "skipped_total=1")
	assert.NotContains(t, stderr, accessToken)
	assert.NotContains(t, stderr, secret)
}

// notifyRig is a NATS server with the events' stream, and a webhook
// stand-in that `meetwatch notify` posts CloudEvents to.
type notifyRig struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	hook *hookStandIn
	env  map[string]string
	args []string
}

func newNotifyRig(t *testing.T, answer func(n int, r *http.Request, body []byte) *reply) *notifyRig {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	createMeetingsStream(t, js)
	hook := startHook(t, answer)
	return &notifyRig{nc: nc, js: js, hook: hook,
		env:  map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL()},
		args: []string{"--webhook", hook.URL + "/events", "--format", "cloudevents"}}
}

func (r *notifyRig) start(t *testing.T) *process { return startNotify(t, r.env, r.args...) }

// holdFirst is a webhook that never answers its first request, and
// accepts every later one; sent is closed once the first came.
func holdFirst() (answer func(int, *http.Request, []byte) *reply, sent <-chan struct{}) {
	var once sync.Once
	first := make(chan struct{})
	return func(_ int, _ *http.Request, _ []byte) *reply {
		held := false
		once.Do(func() { held = true; close(first) })
		if held {
			return nil // no answer: notify stops, or dies, while it waits
		}
		return &reply{status: http.StatusAccepted, accepted: true}
	}, first
}

// waitFor fails the test unless ch is closed, or sends, in time.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(eventWait):
		require.FailNow(t, what)
	}
}

func TestNotifyHandsBackTheMessageItWasSendingWhenStopped(t *testing.T) {
	t.Parallel()
	answer, sent := holdFirst()
	r := newNotifyRig(t, answer)
	first := r.start(t)

	m := meeting{"12345678123456781234567812345678", "Held", "3001"}
	id := publishEvent(t, r.js, "started", m, false)
	waitFor(t, sent, "the webhook got no request")
	first.stop(t, syscall.SIGTERM)
	assert.Empty(t, r.hook.accepted())

	second := r.start(t)
	accepted := r.hook.waitAccepted(t, 1)
	waitSettled(t, r.js, "meetwatch-notify")
	second.stop(t, syscall.SIGTERM)

	stored := natstest.Messages(t, r.nc, "MEETINGS")
	require.Len(t, stored, 1)
	assert.Equal(t, [][]byte{stored[0].Data}, accepted, "the event as stored, delivered once accepted")
	assert.Contains(t, string(accepted[0]), id)
	assert.Len(t, r.hook.requests(), 2)
}

// A stop while the webhook takes its time lets the message finish and be
// acknowledged, rather than cut it short and post it again on the next
// start: a chat would show it twice.
func TestNotifyFinishesTheMessageItIsSendingWhenStopped(t *testing.T) {
	t.Parallel()
	received := make(chan struct{}, 1)
	r := newNotifyRig(t, func(_ int, _ *http.Request, _ []byte) *reply {
		received <- struct{}{}
		// A slow platform, whose answer comes after the SIGTERM sent
		// meanwhile has landed: notify shows nothing outside when a
		// signal reaches it, so only time can hold the answer past it.
		time.Sleep(time.Second)
		return &reply{status: http.StatusAccepted, accepted: true}
	})
	first := r.start(t)
	publishEvent(t, r.js, "started", meeting{"22345678123456781234567812345678", "Slow", "3002"}, false)
	waitFor(t, received, "the webhook got no request")
	first.stop(t, syscall.SIGTERM)
	assert.Len(t, r.hook.accepted(), 1, "sent before the process stopped")
	waitSettled(t, r.js, "meetwatch-notify")

	second := r.start(t)
	publishEvent(t, r.js, "started", meeting{"32345678123456781234567812345678", "Next", "3003"}, false)
	r.hook.waitAccepted(t, 2)
	waitSettled(t, r.js, "meetwatch-notify")
	second.stop(t, syscall.SIGTERM)
	assert.Len(t, r.hook.requests(), 2, "nothing sent twice")
}

// After a crash mid-send the message goes again once the server's ack wait
// for it runs out, and every later one waits for it: a few seconds, not
// half a minute.
func TestNotifyResendsSoonAfterACrash(t *testing.T) {
	t.Parallel()
	answer, sent := holdFirst()
	r := newNotifyRig(t, answer)
	first := r.start(t)
	publishEvent(t, r.js, "started", meeting{"42345678123456781234567812345678", "Crash", "3004"}, false)
	waitFor(t, sent, "the webhook got no request")
	require.NoError(t, first.cmd.Process.Kill())
	<-first.done

	second := r.start(t)
	restarted := time.Now()
	r.hook.waitAccepted(t, 1)
	assert.Less(t, time.Since(restarted), 10*time.Second, "sent again within the ack wait (5s), not 30s")
	second.stop(t, syscall.SIGTERM)
}

func TestNotifyUsageErrors(t *testing.T) {
	t.Parallel()
	const hookURL = "https://oapi.dingtalk.example/robot/send?access_token=UsageToken9"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "unknown kind", args: []string{"--webhook", hookURL, "--format", "dingtalk", "--kinds", "started,paused"}, want: `--kinds: unknown kind "paused"`},
		{name: "no kind", args: []string{"--webhook", hookURL, "--format", "dingtalk", "--kinds", " , "}, want: "--kinds: name at least one kind"},
		{name: "no webhook", args: []string{"--format", "slack"}, want: "--webhook is required"},
		{name: "no format", args: []string{"--webhook", hookURL}, want: "--format is required"},
		{name: "unknown format", args: []string{"--webhook", hookURL, "--format", "teams"}, want: `unknown format "teams"`},
		{name: "webhook not a URL", args: []string{"--webhook", "oapi.dingtalk.example/robot/send?access_token=UsageToken9", "--format", "dingtalk"}, want: "want http(s)"},
		{name: "secret for slack", args: []string{"--webhook", hookURL, "--format", "slack", "--secret", "UsageSecret"}, want: "feishu and dingtalk"},
		{name: "secret from the environment for wecom", args: []string{"--webhook", hookURL, "--format", "wecom"}, env: map[string]string{"MEETWATCH_NOTIFY_SECRET": "UsageSecret"}, want: "feishu and dingtalk"},
		{name: "bad durable", args: []string{"--webhook", hookURL, "--format", "slack", "--durable", "a.b"}, want: `--durable "a.b"`},
		{name: "argument", args: []string{"--webhook", hookURL, "--format", "slack", "extra"}, want: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"--webhook", hookURL, "--format", "slack", "--channel", "x"}, want: "channel"},
		{name: "unknown time zone", args: []string{"--webhook", hookURL, "--format", "slack", "--time-zone", "Mars/Olympus"}, want: `--time-zone "Mars/Olympus": want an IANA zone`},
		{name: "empty time zone", args: []string{"--webhook", hookURL, "--format", "slack", "--time-zone", ""}, want: `--time-zone "": want an IANA zone`},
		{name: "plain cloudevents", args: []string{"--webhook", hookURL, "--format", "cloudevents", "--plain"}, want: "--plain: the cloudevents format posts the event itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mw := runInProcess(t, tt.env, append([]string{"notify"}, tt.args...)...)
			stderr := mw.stderr.String()
			assert.Equal(t, exitUsage, mw.code, "exit code; stderr:\n%s", stderr)
			assert.Contains(t, stderr, tt.want)
			assert.NotContains(t, stderr, "UsageToken9")
			assert.NotContains(t, stderr, "UsageSecret")
			assert.Empty(t, mw.stdout.String())
		})
	}
}

func TestNotifyHelp(t *testing.T) {
	t.Parallel()
	mw := runInProcess(t, nil, "notify", "--help")
	assert.Equal(t, exitOK, mw.code)
	help := mw.stdout.String()
	for _, want := range []string{
		"--webhook URL", "--format FORMAT", "--secret", "--kinds", "--durable", "-skip-initial",
		"-time-zone ZONE", `(default "Local")`, "-plain", "-test", "Block Kit", "interactive card", "markdown",
		"slack", "feishu", "dingtalk", "wecom", "welink", "cloudevents",
		"MEETWATCH_NATS_URL", "MEETWATCH_STREAM", "MEETWATCH_NOTIFY_WEBHOOK", "MEETWATCH_NOTIFY_SECRET",
		`(default "meetwatch-notify")`, `(default "started,ended")`,
	} {
		assert.Contains(t, help, want)
	}
	top := runInProcess(t, nil, "--help")
	assert.Contains(t, top.stdout.String(), "meetwatch notify --webhook URL --format FORMAT")
}

// TestNotifyNATSUser runs notify as a user with exactly the permissions
// docs/security.md lists for it: it delivers, acknowledges, and is
// refused nothing.
func TestNotifyNATSUser(t *testing.T) {
	t.Parallel()
	const (
		user     = "notifier"
		password = "Notify-pw-61b7f2"
		durable  = "meetwatch-notify"
	)
	srv := startPermissionedNATS(t, nil, readerUser(user, password,
		"$JS.API.STREAM.INFO.MEETINGS",
		"$JS.API.CONSUMER.INFO.MEETINGS."+durable,
		"$JS.API.CONSUMER.CREATE.MEETINGS."+durable+".>", // with its filter subject
		"$JS.API.CONSUMER.MSG.NEXT.MEETINGS."+durable,
		"$JS.ACK.MEETINGS."+durable+".>",
	))
	js, err := jetstream.New(connectNATS(t, srv.ClientURL(), nats.UserInfo(adminUser, adminPassword)))
	require.NoError(t, err)
	createMeetingsStream(t, js)
	hook := startHook(t, func(int, *http.Request, []byte) *reply {
		return &reply{status: http.StatusOK, body: "ok", accepted: true}
	})

	env := map[string]string{"MEETWATCH_NATS_URL": srv.ClientURL(), "MEETWATCH_NATS_USER": user, "MEETWATCH_NATS_PASSWORD": password}
	args := []string{"--webhook", hook.URL + "/services/T1/B2/x", "--format", "slack"}
	first := startNotify(t, env, args...)
	m := meeting{"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "Permissions review", "1005"}
	publishEvent(t, js, "started", m, false)
	publishEvent(t, js, "ended", m, false)
	hook.waitAccepted(t, 2)
	waitSettled(t, js, durable)
	first.stop(t, syscall.SIGTERM)
	// A restart finds its durable through the consumer info.
	second := startNotify(t, env, args...)
	assert.Contains(t, second.stderr.String(), "new_durable=false")
	second.stop(t, syscall.SIGTERM)
	for _, p := range []*process{first, second} {
		assert.NotContains(t, p.stderr.String(), "Permissions Violation")
		assert.NotContains(t, p.stderr.String(), password)
	}
	assert.Len(t, hook.accepted(), 2)
}
