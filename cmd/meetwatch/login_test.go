package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

// TestRunLogsInAndSurvivesTokenExpiry runs the binary with App ID login and
// with account login against a simulator whose tokens live one second, and
// drops them early once: every transition must still arrive, and no
// credential may be printed.
func TestRunLogsInAndSurvivesTokenExpiry(t *testing.T) {
	t.Parallel()
	const (
		appID, appKey     = "meetwatch-app", "app-key-0f3c9e1d"
		account, password = "admin@example.com", "pa55-word-77"
	)
	tests := []struct {
		name    string
		env     map[string]string
		secrets []string
	}{
		{
			name:    "app id",
			env:     map[string]string{"MEETWATCH_APP_ID": appID, "MEETWATCH_APP_KEY": appKey, "MEETWATCH_USER_ID": "ops"},
			secrets: []string{appKey},
		},
		{
			name:    "account",
			env:     map[string]string{"MEETWATCH_ACCOUNT": account, "MEETWATCH_PASSWORD": password},
			secrets: []string{password},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			api := apisim.NewServer(apisim.Options{
				AppID: appID, AppKey: appKey, Account: account, Password: password,
				TokenTTL: time.Second, Seed: 11,
			})
			t.Cleanup(api.Close)
			ids := api.Sim.AddN(4)
			srv := natstest.Start(t)
			nc := natstest.Connect(t, srv)

			env := runEnv(api.URL, "", srv.ClientURL())
			delete(env, "MEETWATCH_ACCESS_TOKEN")
			env["MEETWATCH_LOG_LEVEL"] = "debug"
			for k, v := range tt.env {
				env[k] = v
			}
			mw := startMeetwatch(t, env, "run")
			waitForMessages(t, nc, "MEETINGS", 4)

			// Across token lifetimes, and one early expiry on the server.
			logins := float64(api.Sim.Logins())
			require.Eventually(t, func() bool { return float64(api.Sim.Logins()) >= logins+2 }, eventWait, tick, "renewals")
			api.Sim.ExpireTokens()
			api.Sim.End(ids[0])
			msgs := waitForMessages(t, nc, "MEETINGS", 5)
			assert.Equal(t, "ended", msgs[4].Event.kind())
			assert.Equal(t, ids[0], msgs[4].Event.Subject)
			// The token's expiry is a metric, a second ahead at most
			// (TokenTTL), and the logins are counted by endpoint.
			families := scrape(t, mw)
			expiry, _ := value(families, "meetwatch_token_expiry_timestamp_seconds")
			assert.InDelta(t, float64(time.Now().Unix()), expiry, 5, "the token's expiry")
			logins, _ = value(families, "meetwatch_api_requests_total", "code", "200", "endpoint", loginPath(tt.name))
			assert.Positive(t, logins, "logins counted")

			mw.stop(t, syscall.SIGTERM)
			out := mw.stderr.String() + mw.stdout.String()
			assert.Contains(t, out, "logged in")
			for _, s := range tt.secrets {
				assert.NotContains(t, out, s)
			}
		})
	}
}

// TestRunKeepsSecretsOutOfEvents checks the published bodies for the
// simulator's secret fields under the default policy, and that the
// explicit opt-out passes them through.
func TestRunKeepsSecretsOutOfEvents(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"", "none"} {
		t.Run("MEETWATCH_REDACT="+policy, func(t *testing.T) {
			t.Parallel()
			api := startAPI(t, "tok", 6)
			srv := natstest.Start(t)
			nc := natstest.Connect(t, srv)
			env := runEnv(api.URL, "tok", srv.ClientURL())
			if policy != "" {
				env["MEETWATCH_REDACT"] = policy
			}
			mw := startMeetwatch(t, env, "run")
			msgs := waitForMessages(t, nc, "MEETINGS", 6)
			mw.stop(t, syscall.SIGTERM)

			var bodies strings.Builder
			for _, m := range msgs {
				bodies.Write(m.Body)
			}
			for _, rec := range api.Sim.Meetings() {
				chair := rec["chairJoinUri"].(string)
				guestPwd := rec["confConfigInfo"].(map[string]any)["guestPwd"].(string)
				if policy == "none" {
					assert.Contains(t, bodies.String(), chair)
				} else {
					assert.NotContains(t, bodies.String(), chair)
					assert.NotContains(t, bodies.String(), `"guestPwd"`, guestPwd)
					assert.NotContains(t, bodies.String(), `"password"`)
					assert.Contains(t, bodies.String(), rec["confUUID"].(string))
				}
			}
		})
	}
}

func TestLoginAndPolicyConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		names []string
	}{
		{name: "two ways to log in", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_APP_ID": "a", "MEETWATCH_APP_KEY": "k"},
			names: []string{"MEETWATCH_ACCESS_TOKEN", "MEETWATCH_APP_ID"}},
		{name: "three ways to log in", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_APP_ID": "a", "MEETWATCH_APP_KEY": "k", "MEETWATCH_ACCOUNT": "u", "MEETWATCH_PASSWORD": "p"},
			names: []string{"MEETWATCH_ACCESS_TOKEN", "MEETWATCH_APP_ID", "MEETWATCH_ACCOUNT"}},
		{name: "no way to log in", env: map[string]string{},
			names: []string{"MEETWATCH_ACCESS_TOKEN", "MEETWATCH_APP_ID", "MEETWATCH_ACCOUNT"}},
		{name: "app id without key", env: map[string]string{"MEETWATCH_APP_ID": "a"}, names: []string{"MEETWATCH_APP_KEY"}},
		{name: "account without password", env: map[string]string{"MEETWATCH_ACCOUNT": "u"}, names: []string{"MEETWATCH_PASSWORD"}},
		{name: "user id without app id", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_USER_ID": "u"}, names: []string{"MEETWATCH_USER_ID"}},
		{name: "negative rate", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_API_RATE": "-1"}, names: []string{"MEETWATCH_API_RATE"}},
		{name: "rate not a number", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_API_RATE": "fast"}, names: []string{"MEETWATCH_API_RATE"}},
		{name: "stream kept shorter than the duplicate window", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_STREAM_MAX_AGE": "30m"}, names: []string{"MEETWATCH_STREAM_MAX_AGE"}},
		{name: "bad redact path", env: map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_REDACT": "confConfigInfo..guestPwd"}, names: []string{"MEETWATCH_REDACT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"MEETWATCH_API_URL":              "http://127.0.0.1:9",
				"MEETWATCH_EMBEDDED_NATS_LISTEN": "127.0.0.1:0",
				"MEETWATCH_DATA_DIR":             t.TempDir(),
			}
			for k, v := range tt.env {
				env[k] = v
			}
			stderr := rejectsConfiguration(t, env, "run").stderr.String()
			for _, n := range tt.names {
				assert.Contains(t, stderr, n)
			}
			for _, v := range tt.env {
				if len(v) > 1 && v != "-1" && v != "fast" && v != "30m" && !strings.Contains(v, "..") {
					assert.NotContains(t, stderr, "="+v, "no value is echoed")
				}
			}
		})
	}
}

// loginPath is the API path of the login a test case named name uses.
func loginPath(name string) string {
	if name == "account" {
		return "/v1/usg/acs/auth/account"
	}
	return "/v2/usg/acs/auth/appauth"
}
