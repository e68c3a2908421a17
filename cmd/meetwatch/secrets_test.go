package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoCredentialInAnyLine: the credentials a URL carries (a NATS
// password or token, an API URL's user information, a webhook's key) reach
// no line meetwatch prints, in configuration errors, errors, logs or the
// probes' bodies, whether the URL parses or not.
func TestNoCredentialInAnyLine(t *testing.T) {
	t.Parallel()
	const (
		natsPassword = "hunter2-nats-pw"
		apiPassword  = "api-pw-0b7e"
		webhookKey   = "hook-key-93c1f"
	)
	leaks := []string{natsPassword, apiPassword, webhookKey}
	assertClean := func(t *testing.T, what string, texts ...string) {
		t.Helper()
		for _, text := range texts {
			for _, secret := range leaks {
				assert.NotContains(t, text, secret, "%s", what)
			}
		}
	}

	t.Run("a NATS URL that does not parse", func(t *testing.T) {
		t.Parallel()
		bad := "nats://meetwatch:" + natsPassword + "%zz@127.0.0.1:4222"
		for _, cmd := range [][]string{{"run"}, {"check"}, {"tail"}, {"ls"}, {"audit", "--out", "-"}} {
			var stdout, stderr bytes.Buffer
			env := map[string]string{"MEETWATCH_NATS_URL": bad, "MEETWATCH_ACCESS_TOKEN": "t"}
			code := run(t.Context(), cmd, env, &stdout, &stderr)
			assert.Equal(t, exitUsage, code, "meetwatch %s: %s", cmd[0], stderr.String())
			assert.Contains(t, stderr.String(), "MEETWATCH_NATS_URL", "meetwatch %s names the variable", cmd[0])
			assertClean(t, "meetwatch "+cmd[0], stderr.String(), stdout.String())
		}
	})

	t.Run("a NATS URL with a password, NATS away", func(t *testing.T) {
		t.Parallel()
		url := fmt.Sprintf("nats://meetwatch:%s@127.0.0.1:%d", natsPassword, awayPort(t))
		api := startAPI(t, "secret-token", 2)
		env := runEnv("http://apiuser:"+apiPassword+"@"+strings.TrimPrefix(api.URL, "http://"), "secret-token", url)
		mw := startMeetwatch(t, env, "run")
		hc := &http.Client{Timeout: 2 * time.Second}
		var ready probeBody
		require.Eventually(t, func() bool {
			var err error
			ready, err = getProbe(hc, mw, "/readyz")
			return err == nil && ready.LastError != ""
		}, eventWait, tick, "/readyz says why")
		require.Eventually(t, func() bool { return strings.Contains(mw.stderr.String(), "nats not ready") },
			eventWait, tick, "the failed set-up is logged")
		healthy, err := getProbe(hc, mw, "/healthz")
		require.NoError(t, err)
		mw.stop(t, syscall.SIGTERM)
		assert.Contains(t, mw.stderr.String(), "nats://[redacted]@127.0.0.1", "the URL is named, without its credentials")
		assertClean(t, "run", mw.stderr.String(), mw.stdout.String(), ready.raw, healthy.raw)

		tail := startMeetwatch(t, map[string]string{"MEETWATCH_NATS_URL": url}, "tail")
		assert.Equal(t, exitFailed, tail.wait(t, exitWait))
		assert.Contains(t, tail.stderr.String(), "connection refused", "an unreachable NATS names the dial error")
		assertClean(t, "tail", tail.stderr.String())
	})

	t.Run("URLs with credentials that work", func(t *testing.T) {
		t.Parallel()
		srv := startNATS(t, func(o *server.Options) {
			o.Users = []*server.User{{Username: "meetwatch", Password: natsPassword}}
		})
		nc := connectNATS(t, srv.ClientURL(), nats.UserInfo("meetwatch", natsPassword))
		api := startAPI(t, "secret-token", 2)
		env := runEnv("http://apiuser:"+apiPassword+"@"+strings.TrimPrefix(api.URL, "http://"), "secret-token", natsURLWith(srv, "meetwatch", natsPassword))
		env["MEETWATCH_LOG_LEVEL"] = "debug"
		mw := startMeetwatch(t, env, "run")
		waitForMessages(t, nc, "MEETINGS", 2)
		mw.stop(t, syscall.SIGTERM)
		assertClean(t, "run", mw.stderr.String(), mw.stdout.String())

		js, err := jetstream.New(nc)
		require.NoError(t, err)
		hook := startHook(t, func(int, *http.Request, []byte) *reply {
			return &reply{status: http.StatusInternalServerError, body: "try later"}
		})
		notify := startNotify(t, map[string]string{"MEETWATCH_NATS_URL": natsURLWith(srv, "meetwatch", natsPassword)},
			"--format", "wecom", "--webhook", hook.URL+"/cgi-bin/webhook/send?key="+webhookKey)
		publishEvent(t, js, "started", meeting{uuid: "0123456789abcdef0123456789abcdef", subject: "Standup", conferenceID: "123"}, false)
		require.Eventually(t, func() bool { return len(hook.requests()) >= 2 }, eventWait, tick, "the webhook is tried again")
		notify.stop(t, syscall.SIGTERM)
		assert.Contains(t, hook.requests()[0].query, webhookKey, "the key went to the webhook")
		assertClean(t, "notify", notify.stderr.String(), notify.stdout.String())
	})
}

// natsURLWith is srv's URL with a user and password in it.
func natsURLWith(srv *server.Server, user, password string) string {
	return fmt.Sprintf("nats://%s:%s@%s", user, password, strings.TrimPrefix(srv.ClientURL(), "nats://"))
}
