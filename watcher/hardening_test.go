package watcher_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed/natstest"
	"github.com/meetwatch/meetwatch/events/schema/validate"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// TestPollsSurviveTokenExpiry runs the watcher across many token lifetimes,
// in fake time, with both logins: tokens are renewed at 80% of their life,
// before they expire; a token the server drops early is replaced on the
// 401; and no poll is lost.
func TestPollsSurviveTokenExpiry(t *testing.T) {
	const (
		appID, appKey       = "app-123", "app-key-secret-value"
		account, password   = "admin@example.com", "account-password-value"
		ttl                 = 10 * time.Minute // renewed after 8 minutes
		polls               = 24
		stepPerPoll         = 3 * time.Minute
		forcedExpiryEachNth = 7
	)
	logins := map[string]func(meetingapi.LoginConfig) meetingapi.TokenSource{
		"app id": func(c meetingapi.LoginConfig) meetingapi.TokenSource {
			return meetingapi.NewAppIDLogin(c, meetingapi.AppIDCredentials{AppID: appID, AppKey: redact.NewSecret(appKey)})
		},
		"account": func(c meetingapi.LoginConfig) meetingapi.TokenSource {
			return meetingapi.NewAccountLogin(c, meetingapi.AccountCredentials{Account: account, Password: redact.NewSecret(password)})
		},
	}
	for name, newSource := range logins {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var loginLogs *simtest.Buffer
				r := newBubbleRig(t, apisim.Options{
					AppID: appID, AppKey: appKey, Account: account, Password: password,
					TokenTTL: ttl, Seed: 3,
				}, func(c *meetingapi.ClientConfig) {
					loginLogs = &simtest.Buffer{}
					c.Tokens = newSource(meetingapi.LoginConfig{
						BaseURL: c.BaseURL, HTTPClient: c.HTTPClient,
						Logger: slog.New(slog.NewTextHandler(loginLogs, nil)),
					})
					t.Cleanup(c.Tokens.Close)
				})
				ids := r.api.Sim.AddN(5)
				w := r.newWatcher(t, nil)
				for i := range polls {
					if i%forcedExpiryEachNth == forcedExpiryEachNth-1 {
						r.api.Sim.ExpireTokens() // the server drops tokens early
					}
					if i == polls/2 {
						r.api.Sim.End(ids[0])
					}
					_, err := w.Poll(t.Context())
					require.NoError(t, err, "poll %d", i)
					time.Sleep(stepPerPoll)
				}
				// Polls come every 3 minutes, from 0 to 69. Logins: the first
				// at 0; a renewal at the first poll 8 minutes or more after the
				// last login (9, 18, 27, 36, 48, 57 and 69); and one at once
				// after the 401 for the tokens the server dropped while they
				// still looked fresh (39 and 60; those dropped before the poll
				// at 18 were due for renewal anyway).
				assert.Equal(t, 1+7+2, r.api.Sim.Logins())
				assert.Equal(t, 10, strings.Count(loginLogs.String(), "logged in"))
				assert.Equal(t, polls+1+2, r.api.Sim.Requests(),
					"a listing per poll, the confirmation of the end, and the two refused requests")
				evs := r.pub.events()
				require.Len(t, evs, 6, "every transition, none lost")
				assert.Equal(t, snapshot.Ended, evs[5].Kind())
				assert.Equal(t, ids[0], evs[5].Subject)
				for _, secret := range []string{appKey, password} {
					assert.NotContains(t, r.logs.String(), secret)
					assert.NotContains(t, loginLogs.String(), secret)
				}
			})
		})
	}
}

// TestOddFieldsAreKept: a record with its confUUID but odd values elsewhere
// is kept as sent, without failing the poll.
func TestOddFieldsAreKept(t *testing.T) {
	r := newRig(t)
	odd := r.api.Sim.NewRecord()
	odd["startTime"] = "25/11/2026 at nine"
	odd["conferenceState"] = "Exploding"
	odd["size"] = "three"
	odd["subject"] = map[string]any{"zh-CN": "周会", "en-US": "weekly"}
	id := r.api.Sim.Add(odd)[0]
	_, err := r.newWatcher(t, nil).Poll(t.Context())
	require.NoError(t, err)
	msgs := natstest.UncheckedMessages(t, r.nc, testStream)
	require.Len(t, msgs, 1)
	// The record strays from the API's model, and so its event from the
	// schema, which gives the model's types: a consumer that validates
	// learns where.
	err = validate.Event(msgs[0].Data)
	assert.ErrorContains(t, err, "at /data/conference/size: got string, want null or integer")
	assert.ErrorContains(t, err, "at /data/conference/subject: got object, want null or string")
	e, err := events.Decode(msgs[0].Data)
	require.NoError(t, err)
	assert.Equal(t, id, e.Subject)
	var got map[string]any
	require.NoError(t, json.Unmarshal(e.Data.Conference, &got))
	assert.Equal(t, "25/11/2026 at nine", got["startTime"])
	assert.Equal(t, "Exploding", got["conferenceState"])
	assert.Equal(t, "three", got["size"])
	assert.Equal(t, map[string]any{"zh-CN": "周会", "en-US": "weekly"}, got["subject"])
}

// secretsOf collects the secret values of the simulator's records.
func secretsOf(tb testing.TB, recs []apisim.Record) []string {
	tb.Helper()
	var out []string
	for _, rec := range recs {
		for _, k := range []string{"chairJoinUri", "guestJoinUri", "audienceJoinUri", "liveAddress", "auxAddress", "liveUrl"} {
			if v, ok := rec[k].(string); ok {
				out = append(out, v)
			}
		}
		if cfg, ok := rec["confConfigInfo"].(map[string]any); ok {
			if v, ok := cfg["guestPwd"].(string); ok {
				out = append(out, v)
			}
		}
		if entries, ok := rec["passwordEntry"].([]any); ok {
			for _, e := range entries {
				out = append(out, fmt.Sprint(e.(map[string]any)["password"]))
			}
		}
	}
	require.NotEmpty(tb, out)
	return out
}

// TestNoSecretLeavesUnderTheDefaultPolicy checks every published message and
// every stored key for every secret value the API handed out.
func TestNoSecretLeavesUnderTheDefaultPolicy(t *testing.T) {
	red, err := redact.Parse("")
	require.NoError(t, err)
	r := newRig(t)
	ids := r.api.Sim.AddN(20)
	store := r.store(t)
	w := r.newWatcherRedacting(t, store, red)
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	secrets := secretsOf(t, r.api.Sim.Meetings())

	r.api.Sim.Update(ids[1], func(rec apisim.Record) {
		rec["confConfigInfo"].(map[string]any)["guestPwd"] = "918273"
		rec["chairJoinUri"] = "https://c.meeting.huaweicloud.com/#/j/1/newchairsecret"
	})
	r.api.Sim.Update(ids[2], func(rec apisim.Record) { rec["subject"] = "Renamed" })
	r.api.Sim.End(ids[3])
	_, err = w.Poll(t.Context())
	require.NoError(t, err)
	secrets = append(secrets, "918273", "newchairsecret")

	var bodies strings.Builder
	for _, m := range natstestMessages(t, r) {
		bodies.Write(m)
		bodies.WriteByte('\n')
	}
	st, err := store.Load(t.Context())
	require.NoError(t, err)
	var stored strings.Builder
	for _, m := range st.Snapshot {
		stored.Write(m.Raw())
	}
	for _, s := range secrets {
		if len(s) < 6 {
			continue
		}
		assert.NotContains(t, bodies.String(), s, "published")
		assert.NotContains(t, stored.String(), s, "stored")
	}
	for _, key := range []string{`"chairJoinUri"`, `"guestJoinUri"`, `"audienceJoinUri"`, `"liveAddress"`, `"auxAddress"`, `"liveUrl"`, `"guestPwd"`, `"password"`} {
		assert.NotContains(t, bodies.String(), key+":")
	}

	evs := r.published(t)
	changed := kinds(evs)[snapshot.Changed]
	assert.ElementsMatch(t, []string{ids[1], ids[2]}, changed)
	for _, e := range evs {
		if e.Kind() == snapshot.Changed && e.Subject == ids[1] {
			assert.Equal(t, []snapshot.FieldChange{
				{Field: "chairJoinUri", Redacted: true},
				{Field: "confConfigInfo.guestPwd", Redacted: true},
			}, e.Data.Changes, "a secret change is announced without its value")
		}
	}
}

func natstestMessages(tb testing.TB, r *rig) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, e := range r.published(tb) {
		b, err := json.Marshal(e)
		require.NoError(tb, err)
		out = append(out, b)
	}
	return out
}
