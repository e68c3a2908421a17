package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStreamMaxAgeIgnoreFieldsHTTPAddrAndPollTimeoutConfiguration(t *testing.T) {
	t.Parallel()
	base := func(extra map[string]string) map[string]string {
		env := map[string]string{"MEETWATCH_ACCESS_TOKEN": "t", "MEETWATCH_DATA_DIR": t.TempDir()}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}

	cfg, err := loadConfig(base(nil), true)
	require.NoError(t, err)
	assert.Equal(t, 720*time.Hour, cfg.StreamMaxAge, "events are kept 30 days by default")
	assert.Empty(t, cfg.IgnoreFields, "nothing is ignored by default")

	assert.Equal(t, ":9464", cfg.HTTPAddr, "the probes' port by default")
	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_HTTP_ADDR": ""}), true)
	require.NoError(t, err)
	assert.Empty(t, cfg.HTTPAddr, "set empty: no probes")
	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_HTTP_ADDR": "127.0.0.1:9999"}), true)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9999", cfg.HTTPAddr)

	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_POLL_INTERVAL": "60s"}), true)
	require.NoError(t, err)
	assert.Equal(t, 54*time.Second, cfg.PollTimeout, "90% of the interval by default")
	assert.Equal(t, 288*time.Second, cfg.loopGrace(), "/healthz: 3 intervals and twice the longer of the poll's and a request's timeouts")
	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_POLL_INTERVAL": "60s", "MEETWATCH_POLL_TIMEOUT": "10s"}), true)
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, cfg.PollTimeout)
	assert.Equal(t, 240*time.Second, cfg.loopGrace(), "a request's timeout when it is the longer")

	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_STREAM_MAX_AGE": "0"}), true)
	require.NoError(t, err)
	assert.Zero(t, cfg.StreamMaxAge, "0 keeps everything")

	cfg, err = loadConfig(base(map[string]string{"MEETWATCH_IGNORE_FIELDS": `onlineAttendeeAmount, confConfigInfo.isAutoMute, a\.b`}), true)
	require.NoError(t, err)
	assert.Equal(t, `onlineAttendeeAmount, confConfigInfo.isAutoMute, a\.b`, cfg.IgnoreFields)

	tests := []struct {
		name     string
		env      map[string]string
		variable string
		says     string
	}{
		{name: "ignore: empty key", env: map[string]string{"MEETWATCH_IGNORE_FIELDS": "confConfigInfo..isAutoMute"}, variable: "MEETWATCH_IGNORE_FIELDS", says: "empty key"},
		{name: "ignore: empty path", env: map[string]string{"MEETWATCH_IGNORE_FIELDS": "size,,subject"}, variable: "MEETWATCH_IGNORE_FIELDS", says: "empty"},
		{name: "ignore: array elements", env: map[string]string{"MEETWATCH_IGNORE_FIELDS": "partAttendeeInfo[].name"}, variable: "MEETWATCH_IGNORE_FIELDS", says: "arrays are compared whole"},
		{name: "max age under the duplicate window", env: map[string]string{"MEETWATCH_STREAM_MAX_AGE": "30m"}, variable: "MEETWATCH_STREAM_MAX_AGE", says: "at least 1h0m0s"},
		{name: "default max age under a long duplicate window", env: map[string]string{"MEETWATCH_DUPLICATE_WINDOW": "1000h"}, variable: "MEETWATCH_STREAM_MAX_AGE", says: "the default is 720h"},
		{name: "negative max age", env: map[string]string{"MEETWATCH_STREAM_MAX_AGE": "-1h"}, variable: "MEETWATCH_STREAM_MAX_AGE", says: "must be 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := base(tt.env)
			env["MEETWATCH_API_URL"] = "http://127.0.0.1:9"
			env["MEETWATCH_EMBEDDED_NATS_LISTEN"] = "127.0.0.1:0"
			stderr := rejectsConfiguration(t, env, "run").stderr.String()
			assert.Contains(t, stderr, tt.variable)
			assert.Contains(t, stderr, tt.says)
		})
	}
}

func TestHelpListsNewDefaults(t *testing.T) {
	help := envHelp()
	assert.Regexp(t, `MEETWATCH_STREAM_MAX_AGE\s+.*\(default: 720h\)\n`, help)
	assert.Regexp(t, `MEETWATCH_IGNORE_FIELDS\s+.*\(default: empty\)\n`, help)
}
