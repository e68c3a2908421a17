package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
)

// modelPath is the simulator package's list of the fields of the API's
// ConferenceInfo model; its testdata/README.md says where it comes from.
const modelPath = "../../watcher/meetingapi/apisim/testdata/conference-info-model.txt"

// secretPaths are the model's fields that the default redaction policy
// keeps out of events and seals in the state, in the model's spelling.
var secretPaths = []string{
	"chairJoinUri", "guestJoinUri", "audienceJoinUri", "liveAddress", "auxAddress", "liveUrl",
	"passwordEntry[].password", "confConfigInfo.guestPwd",
}

// modelKinds reads the model: each field's path and JSON kind.
func modelKinds(tb testing.TB) map[string]string {
	tb.Helper()
	f, err := os.Open(modelPath)
	require.NoError(tb, err)
	defer f.Close()
	kinds := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) >= 2 && !strings.HasPrefix(parts[0], "#") {
			kinds[parts[0]] = parts[1]
		}
	}
	require.NoError(tb, sc.Err())
	require.NotEmpty(tb, kinds)
	return kinds
}

// recordKinds adds every field of rec to kinds, by model path (keys joined
// by dots, "[]" for array elements), with each JSON kind it came in.
func recordKinds(rec map[string]any, kinds map[string]map[string]bool) {
	var walk func(path string, v any)
	walk = func(path string, v any) {
		kind := "unknown"
		switch v := v.(type) {
		case string:
			kind = "string"
		case bool:
			kind = "boolean"
		case float64:
			kind = "number"
			if v == math.Trunc(v) {
				kind = "integer"
			}
		case map[string]any:
			kind = "object"
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			kind = "array"
			for _, x := range v {
				walk(path+"[]", x)
			}
		case nil:
			kind = "null"
		}
		if kinds[path] == nil {
			kinds[path] = map[string]bool{}
		}
		kinds[path][kind] = true
	}
	for k, v := range rec {
		walk(k, v)
	}
}

// listSim lists every meeting of a simulator running as its own process,
// with its token, as meetwatch run does.
func listSim(tb testing.TB, url, token string) []map[string]any {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, url+"/v1/mmc/management/conferences/online?limit=500&queryAll=true", nil)
	require.NoError(tb, err)
	req.Header.Set("X-Access-Token", token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	require.Equal(tb, http.StatusOK, resp.StatusCode, "body: %.200s", body)
	var page struct {
		Count int              `json:"count"`
		Data  []map[string]any `json:"data"`
	}
	require.NoError(tb, json.Unmarshal(body, &page))
	require.Len(tb, page.Data, page.Count, "one page holds every meeting")
	return page.Data
}

// longSecrets collects the values of the secret links and addresses: long
// and random, so that finding one anywhere is a leak. The six-digit
// passwords are checked by where they are instead, since six digits turn
// up by chance in the hex of other fields.
func longSecrets(recs []map[string]any) []string {
	var out []string
	for _, rec := range recs {
		for _, k := range []string{"chairJoinUri", "guestJoinUri", "audienceJoinUri", "liveAddress", "auxAddress", "liveUrl"} {
			if v, ok := rec[k].(string); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// TestSimServesTheWholeModel runs `meetwatch sim` as its own process and
// lists it over HTTP with its token: the meetings it serves carry every
// field of the API's ConferenceInfo model, each of the model's kind, with
// recurring meetings, webinars and cloud-room meetings among them. Then
// `meetwatch run` watches it: every field but the secrets reaches the
// events, the secrets reach neither the events nor the state, and changes
// to the new fields, secrets included, are announced as such.
func TestSimServesTheWholeModel(t *testing.T) {
	t.Parallel()
	const (
		token    = "model-token"
		meetings = 150
		changes  = 60
	)
	model := modelKinds(t)
	sim := startMeetwatch(t, nil, "sim", "--addr", "127.0.0.1:0", "--token", token, "--meetings", strconv.Itoa(meetings),
		"--churn", "0", "--seed", "10", "--control", "127.0.0.1:0")
	control := regexp.MustCompile(`control on (http://127\.0\.0\.1:\d+)`)
	require.Eventually(t, func() bool { return control.MatchString(sim.stdout.String()) },
		eventWait, tick, "waiting for the simulator's addresses")
	url := simURL.FindStringSubmatch(sim.stdout.String())[1]
	controlURL := control.FindStringSubmatch(sim.stdout.String())[1]

	recs := listSim(t, url, token)
	require.Len(t, recs, meetings)
	served := map[string]map[string]bool{}
	var recurring, webinars, cloudRooms int
	for _, rec := range recs {
		recordKinds(rec, served)
		if rec["confType"] == "CYCLE" && rec["cycleParams"] != nil && rec["subConfs"] != nil && rec["cycleSubConfID"] != nil {
			recurring++
		}
		if rec["webinar"] == true && rec["audienceJoinUri"] != nil {
			webinars++
		}
		if rec["vmrFlag"] == 1.0 && rec["vmrID"] != nil && rec["vmrConferenceID"] != nil {
			cloudRooms++
		}
	}
	for path, kind := range model {
		assert.Equal(t, map[string]bool{kind: true}, served[path], "%s served", path)
	}
	for path := range served {
		assert.Contains(t, model, path, "a field the model lacks")
	}
	assert.Positive(t, recurring, "recurring meetings")
	assert.Positive(t, webinars, "webinars")
	assert.Positive(t, cloudRooms, "cloud-room meetings")

	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	run := startMeetwatch(t, runEnv(url, token, srv.ClientURL()), "run")
	msgs := waitForMessages(t, nc, "MEETINGS", meetings)
	published := map[string]map[string]bool{}
	for _, m := range msgs {
		recordKinds(m.Event.Data.Conference, published)
	}
	for path, kind := range model {
		if slices.Contains(secretPaths, path) {
			assert.NotContains(t, published, path, "a secret published")
			continue
		}
		assert.Equal(t, map[string]bool{kind: true}, published[path], "%s published", path)
	}

	// Change meetings between two polls, as live meetings do.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		controlURL+"/churn?starts=0&ends=0&changes="+strconv.Itoa(changes), nil)
	require.NoError(t, err)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	after := listSim(t, url, token)
	msgs = waitForMessages(t, nc, "MEETINGS", meetings+changes)
	changedFields := map[string]bool{}
	var bodies strings.Builder
	for _, m := range msgs {
		bodies.Write(m.Body)
		if m.Event.kind() != "changed" {
			continue
		}
		var data struct {
			Changes []struct {
				Field    string `json:"field"`
				Redacted bool   `json:"redacted"`
			} `json:"changes"`
		}
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		require.NoError(t, json.Unmarshal(m.Body, &env))
		require.NoError(t, json.Unmarshal(env.Data, &data))
		for _, c := range data.Changes {
			changedFields[c.Field] = true
			if slices.Contains(secretPaths, c.Field) {
				assert.True(t, c.Redacted, "a change of %s shows no value", c.Field)
			}
		}
		recordKinds(m.Event.Data.Conference, published)
		recordKinds(m.Event.Data.Previous, published)
	}
	for _, f := range []string{"endTime", "confConfigInfo.guestPwd", "passwordEntry[].password"} {
		assert.True(t, changedFields[f], "no change of %s among %v", f, changedFields)
	}
	for _, s := range longSecrets(append(recs, after...)) {
		assert.NotContains(t, bodies.String(), s, "a secret published")
	}
	for _, path := range secretPaths {
		assert.NotContains(t, published, path, "a secret published")
	}

	stored := storedRecords(t, nc)
	require.Len(t, stored, meetings)
	digest := regexp.MustCompile(`^redacted:sha256:[0-9a-f]{24}$`)
	var state strings.Builder
	for _, raw := range stored {
		state.Write(raw)
		var rec map[string]any
		require.NoError(t, json.Unmarshal(raw, &rec))
		for k, v := range rec {
			if slices.Contains(secretPaths, k) {
				assert.Regexp(t, digest, v, "%s sealed in the state", k)
			}
		}
		assert.Regexp(t, digest, rec["confConfigInfo"].(map[string]any)["guestPwd"], "guestPwd sealed in the state")
		for _, e := range rec["passwordEntry"].([]any) {
			assert.Regexp(t, digest, e.(map[string]any)["password"], "a password sealed in the state")
		}
	}
	for _, s := range longSecrets(append(recs, after...)) {
		assert.NotContains(t, state.String(), s, "a secret stored")
	}

	run.stop(t, syscall.SIGTERM)
	sim.stop(t, syscall.SIGTERM)
}

// storedRecords returns the record of every meeting in the state bucket.
func storedRecords(tb testing.TB, nc *nats.Conn) [][]byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	kv, err := js.KeyValue(ctx, "meetwatch-state")
	require.NoError(tb, err)
	keys, err := kv.ListKeysFiltered(ctx, "m.>")
	require.NoError(tb, err)
	var out [][]byte
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(tb, err)
		out = append(out, e.Value())
	}
	return out
}
