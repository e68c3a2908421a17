package meetingapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	authAppID    = "meetwatch-app"
	authAppKey   = "app-k3y-5ecret-b7f1"
	authAccount  = "watcher@example.com"
	authPassword = "pa55w0rd-9c2e-s3cret"
)

// authRig is a simulated API that issues tokens, reached over in-memory
// pipes, and what a token source needs to log in to it. Built inside a
// synctest bubble, its tokens live and expire in fake time.
type authRig struct {
	api  *simtest.Pipe
	cfg  meetingapi.LoginConfig
	logs *simtest.Buffer
}

func newAuthRig(tb testing.TB, ttl time.Duration) *authRig {
	tb.Helper()
	api := simtest.NewPipe(tb, apisim.Options{
		AppID: authAppID, AppKey: authAppKey,
		Account: authAccount, Password: authPassword,
		TokenTTL: ttl,
	})
	logs := &simtest.Buffer{}
	return &authRig{
		api:  api,
		logs: logs,
		cfg: meetingapi.LoginConfig{
			BaseURL:    api.URL,
			HTTPClient: api.Client(),
			Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
	}
}

func (r *authRig) appLogin(cred meetingapi.AppIDCredentials) meetingapi.TokenSource {
	if cred.AppID == "" {
		cred.AppID = authAppID
	}
	if cred.AppKey.IsZero() {
		cred.AppKey = redact.NewSecret(authAppKey)
	}
	return meetingapi.NewAppIDLogin(r.cfg, cred)
}

func (r *authRig) accountLogin() meetingapi.TokenSource {
	return meetingapi.NewAccountLogin(r.cfg, meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret(authPassword)})
}

// list asks the simulator for the listing with tok, the way the client
// does, and returns the status.
func (r *authRig) list(tb testing.TB, tok redact.Secret) int {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, r.api.URL+meetingapi.OnlinePath, nil)
	require.NoError(tb, err)
	req.Header.Set("X-Access-Token", tok.Reveal())
	resp, err := r.cfg.HTTPClient.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func mustToken(tb testing.TB, src meetingapi.TokenSource) redact.Secret {
	tb.Helper()
	tok, err := src.Token(tb.Context())
	require.NoError(tb, err)
	require.False(tb, tok.IsZero())
	return tok
}

// loginSeen is what the simulator received in a login request.
type loginSeen struct {
	path   string
	header http.Header
	body   map[string]any
}

// recordLogins makes the simulator keep every login request it receives.
func recordLogins(tb testing.TB, sim *apisim.Sim) func() []loginSeen {
	tb.Helper()
	var (
		mu   sync.Mutex
		seen []loginSeen
	)
	sim.SetHook(func(r *http.Request) *apisim.Fault {
		if r.URL.Path == apisim.Path {
			return nil
		}
		b, err := io.ReadAll(r.Body)
		assert.NoError(tb, err)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var body map[string]any
		assert.NoError(tb, json.Unmarshal(b, &body))
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, loginSeen{path: r.URL.Path, header: r.Header.Clone(), body: body})
		return nil
	})
	return func() []loginSeen {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name     string
		source   func(*authRig) meetingapi.TokenSource
		wantPath string
		wantAuth string // prefix of the Authorization header
		wantBody map[string]any
	}{
		{
			name:     "app id as enterprise admin",
			source:   func(r *authRig) meetingapi.TokenSource { return r.appLogin(meetingapi.AppIDCredentials{}) },
			wantPath: apisim.AppAuthPath,
			wantAuth: "HMAC-SHA256 signature=",
			wantBody: map[string]any{"appId": authAppID, "clientType": 72.0},
		},
		{
			name: "app id as a user",
			source: func(r *authRig) meetingapi.TokenSource {
				return r.appLogin(meetingapi.AppIDCredentials{UserID: "alice"})
			},
			wantPath: apisim.AppAuthPath,
			wantAuth: "HMAC-SHA256 signature=",
			wantBody: map[string]any{"appId": authAppID, "clientType": 72.0, "userId": "alice"},
		},
		{
			name: "app id multi-tenant",
			source: func(r *authRig) meetingapi.TokenSource {
				return r.appLogin(meetingapi.AppIDCredentials{UserID: "alice", CorpID: "corp-9"})
			},
			wantPath: apisim.AppAuthPath,
			wantAuth: "HMAC-SHA256 signature=",
			wantBody: map[string]any{"appId": authAppID, "clientType": 72.0, "userId": "alice", "corpId": "corp-9"},
		},
		{
			name: "app id multi-tenant admin",
			source: func(r *authRig) meetingapi.TokenSource {
				return r.appLogin(meetingapi.AppIDCredentials{CorpID: "corp-9"})
			},
			wantPath: apisim.AppAuthPath,
			wantAuth: "HMAC-SHA256 signature=",
			wantBody: map[string]any{"appId": authAppID, "clientType": 72.0, "corpId": "corp-9"},
		},
		{
			name:     "account",
			source:   func(r *authRig) meetingapi.TokenSource { return r.accountLogin() },
			wantPath: apisim.AccountAuthPath,
			wantAuth: "Basic ",
			wantBody: map[string]any{"account": authAccount, "clientType": 72.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newAuthRig(t, 0)
				seen := recordLogins(t, r.api.Sim)
				src := tt.source(r)

				tok := mustToken(t, src)
				assert.Equal(t, http.StatusOK, r.list(t, tok), "the issued token lists")
				assert.Equal(t, 1, r.api.Sim.Logins())

				got := seen()
				require.Len(t, got, 1)
				assert.Equal(t, tt.wantPath, got[0].path)
				assert.True(t, strings.HasPrefix(got[0].header.Get("Authorization"), tt.wantAuth), got[0].header.Get("Authorization"))
				assert.Equal(t, "LongTicket", got[0].header.Get("X-Token-Type"))
				assert.Equal(t, "application/json; charset=UTF-8", got[0].header.Get("Content-Type"))
				body := got[0].body
				if tt.wantPath == apisim.AppAuthPath {
					nonce, _ := body["nonce"].(string)
					assert.GreaterOrEqual(t, len(nonce), 32)
					assert.LessOrEqual(t, len(nonce), 64)
					assert.Equal(t, float64(time.Now().Add(10*time.Minute).Unix()), body["expireTime"], "signature valid for ten minutes")
					delete(body, "nonce")
					delete(body, "expireTime")
				}
				assert.Equal(t, tt.wantBody, body)
				assert.Contains(t, r.logs.String(), "logged in")
				assert.Contains(t, r.logs.String(), "expires_at=")
			})
		})
	}
}

func TestLoginNoncesDiffer(t *testing.T) {
	r := newAuthRig(t, 0)
	seen := recordLogins(t, r.api.Sim)
	src := r.appLogin(meetingapi.AppIDCredentials{})
	first := mustToken(t, src)
	src.Invalidate(first)
	second := mustToken(t, src)

	assert.NotEqual(t, first.Reveal(), second.Reveal())
	got := seen()
	require.Len(t, got, 2)
	assert.NotEqual(t, got[0].body["nonce"], got[1].body["nonce"])
}

func TestLoginRefused(t *testing.T) {
	tests := []struct {
		name     string
		source   func(*authRig) meetingapi.TokenSource
		hook     func(*http.Request) *apisim.Fault
		wantText []string
	}{
		{
			name: "wrong app key",
			source: func(r *authRig) meetingapi.TokenSource {
				return r.appLogin(meetingapi.AppIDCredentials{AppKey: redact.NewSecret("wrong-" + authAppKey)})
			},
			wantText: []string{"app id login", "401", "USG.000000004", "signature does not match", "request_id "},
		},
		{
			name: "wrong password",
			source: func(r *authRig) meetingapi.TokenSource {
				return meetingapi.NewAccountLogin(r.cfg, meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret("wrong-" + authPassword)})
			},
			wantText: []string{"account login", "401", "USG.000000004", "request_id "},
		},
		{
			name:   "server echoes the credentials",
			source: func(r *authRig) meetingapi.TokenSource { return r.appLogin(meetingapi.AppIDCredentials{}) },
			hook: func(r *http.Request) *apisim.Fault {
				authz := r.Header.Get("Authorization")
				sig := strings.TrimSuffix(strings.TrimPrefix(authz, "HMAC-SHA256 signature="), ",access=")
				return &apisim.Fault{Status: http.StatusUnauthorized, Code: "USG.000000004", Msg: "got " + authz + " sig " + sig[:64] + " key " + authAppKey}
			},
			wantText: []string{"401", "got [redacted] sig [redacted] key [redacted]"},
		},
		{
			name:   "server echoes the password",
			source: func(r *authRig) meetingapi.TokenSource { return r.accountLogin() },
			hook: func(r *http.Request) *apisim.Fault {
				return &apisim.Fault{Status: http.StatusForbidden, Code: "USG.000000009", Msg: "got " + r.Header.Get("Authorization") + " password " + authPassword}
			},
			wantText: []string{"403", "USG.000000009", "got Basic [redacted] password [redacted]"},
		},
		{
			name:   "gateway html",
			source: func(r *authRig) meetingapi.TokenSource { return r.accountLogin() },
			hook: func(*http.Request) *apisim.Fault {
				return &apisim.Fault{Status: http.StatusBadGateway, Body: "<html>bad gateway</html>"}
			},
			wantText: []string{"502 Bad Gateway", "request_id "},
		},
		{
			name:     "200 without a token",
			source:   func(r *authRig) meetingapi.TokenSource { return r.accountLogin() },
			hook:     func(*http.Request) *apisim.Fault { return &apisim.Fault{Body: `{"validPeriod":43200}`} },
			wantText: []string{"no accessToken", "request_id "},
		},
		{
			name:     "200 with a token of the wrong type",
			source:   func(r *authRig) meetingapi.TokenSource { return r.accountLogin() },
			hook:     func(*http.Request) *apisim.Fault { return &apisim.Fault{Body: `{"accessToken":31415926535}`} },
			wantText: []string{"not a token"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newAuthRig(t, 0)
			if tt.hook != nil {
				r.api.Sim.SetHook(tt.hook)
			}
			src := tt.source(r)

			tok, err := src.Token(t.Context())
			require.ErrorIs(t, err, meetingapi.ErrLoginFailed)
			assert.NotErrorIs(t, err, meetingapi.ErrUnauthorized, "a refused login is not a refused token")
			assert.True(t, tok.IsZero())
			for _, want := range tt.wantText {
				assert.Contains(t, err.Error(), want)
			}
			for _, secret := range []string{authAppKey, authPassword, "31415926535", "signature="} {
				assert.NotContains(t, err.Error(), secret)
				assert.NotContains(t, fmt.Sprintf("%+v %#v", err, err), secret)
				assert.NotContains(t, r.logs.String(), secret)
			}
			assert.Zero(t, r.api.Sim.Logins())
		})
	}
}

func TestLoginConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  meetingapi.LoginConfig
		want string
	}{
		{name: "no http client", cfg: meetingapi.LoginConfig{BaseURL: "https://api.example.com"}, want: "no http client"},
		{name: "bad url", cfg: meetingapi.LoginConfig{BaseURL: "api.example.com", HTTPClient: &http.Client{}}, want: "want http(s)://host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := meetingapi.NewAccountLogin(tt.cfg, meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret(authPassword)})
			_, err := src.Token(t.Context())
			require.ErrorIs(t, err, meetingapi.ErrLoginFailed)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestLoginWaitsForBudget(t *testing.T) {
	r := newAuthRig(t, 0)
	var waits int
	errBudget := errors.New("budget spent")
	r.cfg.Wait = func(ctx context.Context) error {
		waits++
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("login has no deadline")
		}
		if waits == 1 {
			return errBudget
		}
		return nil
	}
	src := r.accountLogin()

	_, err := src.Token(t.Context())
	require.ErrorIs(t, err, errBudget)
	require.ErrorIs(t, err, meetingapi.ErrLoginFailed)
	assert.Zero(t, r.api.Sim.Logins(), "no request without budget")

	mustToken(t, src)
	assert.Equal(t, 2, waits)
	assert.Equal(t, 1, r.api.Sim.Logins())
}

func TestTokenCached(t *testing.T) {
	r := newAuthRig(t, 0)
	src := r.appLogin(meetingapi.AppIDCredentials{})
	first := mustToken(t, src)
	for range 20 {
		assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal())
	}
	assert.Equal(t, 1, r.api.Sim.Logins())
}

// TestTokenRenewal: a token is renewed once RenewAt of its life has
// passed, to the nanosecond of fake time, and not before.
func TestTokenRenewal(t *testing.T) {
	tests := []struct {
		name       string
		renewAt    float64
		advance    time.Duration
		wantLogins int
	}{
		{name: "just before 80% of the life", advance: 80*time.Second - time.Nanosecond, wantLogins: 1},
		{name: "at 80% of the life", advance: 80 * time.Second, wantLogins: 2},
		{name: "after the life", advance: 101 * time.Second, wantLogins: 2},
		{name: "RenewAt 0.5, just before", renewAt: 0.5, advance: 50*time.Second - time.Nanosecond, wantLogins: 1},
		{name: "RenewAt 0.5, at", renewAt: 0.5, advance: 50 * time.Second, wantLogins: 2},
		{name: "RenewAt out of range means 0.8, just before", renewAt: 1.5, advance: 80*time.Second - time.Nanosecond, wantLogins: 1},
		{name: "RenewAt out of range means 0.8, at", renewAt: 1.5, advance: 80 * time.Second, wantLogins: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newAuthRig(t, 100*time.Second)
				r.cfg.RenewAt = tt.renewAt
				src := r.appLogin(meetingapi.AppIDCredentials{})
				first := mustToken(t, src)

				time.Sleep(tt.advance)
				got := mustToken(t, src)
				assert.Equal(t, tt.wantLogins, r.api.Sim.Logins())
				assert.Equal(t, tt.wantLogins == 1, got.Reveal() == first.Reveal())
				assert.Equal(t, http.StatusOK, r.list(t, got))
			})
		})
	}
}

func TestTokenRenewalFailureKeepsWorkingToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newAuthRig(t, 100*time.Second)
		src := r.accountLogin()
		first := mustToken(t, src)
		var tries atomic.Int32
		r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
			if req.URL.Path == apisim.AccountAuthPath {
				tries.Add(1)
				return &apisim.Fault{Status: http.StatusServiceUnavailable}
			}
			return nil
		})

		time.Sleep(90 * time.Second)
		got := mustToken(t, src)
		assert.Equal(t, first.Reveal(), got.Reveal(), "the old token still works for 10s")
		assert.Contains(t, r.logs.String(), "failed renewal")
		assert.Contains(t, r.logs.String(), "503")
		// The next try waits for a backoff: not one login per request.
		for range 20 {
			assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal())
		}
		assert.Equal(t, int32(1), tries.Load(), "one try, then a wait")
		time.Sleep(time.Second)
		mustToken(t, src)
		assert.Equal(t, int32(2), tries.Load(), "the next try after the backoff")
		time.Sleep(900 * time.Millisecond)
		mustToken(t, src)
		assert.Equal(t, int32(2), tries.Load(), "the wait doubles")

		time.Sleep(10*time.Second - 1900*time.Millisecond - time.Nanosecond)
		assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal(), "up to the last nanosecond of its life")
		time.Sleep(time.Nanosecond)
		_, err := src.Token(t.Context())
		require.ErrorIs(t, err, meetingapi.ErrLoginFailed, "an expired token is not handed out")

		r.api.Sim.SetHook(nil)
		got = mustToken(t, src)
		assert.NotEqual(t, first.Reveal(), got.Reveal())
		assert.Equal(t, 2, r.api.Sim.Logins())
	})
}

// TestTokenLifetimeFromAnswer checks which field of the answer times the
// renewal, with answers the simulator would not give.
func TestTokenLifetimeFromAnswer(t *testing.T) {
	tests := []struct {
		name   string
		answer func(now time.Time) string
	}{
		{name: "validPeriod wins over expireTime", answer: func(now time.Time) string {
			return fmt.Sprintf(`{"accessToken":"t","validPeriod":100,"expireTime":%d}`, now.Add(time.Hour).Unix())
		}},
		{name: "validPeriod as a string", answer: func(time.Time) string { return `{"accessToken":"t","validPeriod":"100"}` }},
		{name: "expireTime in seconds", answer: func(now time.Time) string {
			return fmt.Sprintf(`{"accessToken":"t","expireTime":%d}`, now.Add(100*time.Second).Unix())
		}},
		{name: "expireTime in milliseconds", answer: func(now time.Time) string {
			return fmt.Sprintf(`{"accessToken":"t","expireTime":%d}`, now.Add(100*time.Second).UnixMilli())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newAuthRig(t, 0)
				var mu sync.Mutex
				logins := 0
				r.api.Sim.SetHook(func(*http.Request) *apisim.Fault {
					mu.Lock()
					defer mu.Unlock()
					logins++
					return &apisim.Fault{Body: tt.answer(time.Now())}
				})
				count := func() int {
					mu.Lock()
					defer mu.Unlock()
					return logins
				}
				src := r.accountLogin()
				assert.Equal(t, "t", mustToken(t, src).Reveal())
				time.Sleep(80*time.Second - time.Nanosecond)
				mustToken(t, src)
				assert.Equal(t, 1, count(), "a life of 100s: renewed at 80s")
				time.Sleep(time.Nanosecond)
				mustToken(t, src)
				assert.Equal(t, 2, count())
			})
		})
	}

	t.Run("no lifetime assumes 12h", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newAuthRig(t, 0)
			r.api.Sim.SetHook(func(*http.Request) *apisim.Fault { return &apisim.Fault{Body: `{"accessToken":"t"}`} })
			src := r.accountLogin()
			mustToken(t, src)
			time.Sleep(12*time.Hour*8/10 - time.Nanosecond)
			mustToken(t, src)
			assert.Contains(t, r.logs.String(), "no lifetime")
			assert.Equal(t, 1, strings.Count(r.logs.String(), "logged in"))
			time.Sleep(time.Nanosecond)
			mustToken(t, src)
			assert.Equal(t, 2, strings.Count(r.logs.String(), "logged in"))
		})
	})
}

func TestTokenInvalidate(t *testing.T) {
	r := newAuthRig(t, 0)
	r.api.Sim.AddN(2)
	src := r.appLogin(meetingapi.AppIDCredentials{})
	first := mustToken(t, src)

	src.Invalidate(redact.NewSecret("some-stale-token"))
	src.Invalidate(redact.Secret{})
	assert.Equal(t, first.Reveal(), mustToken(t, src).Reveal(), "a token that is not the cached one changes nothing")
	assert.Equal(t, 1, r.api.Sim.Logins())

	r.api.Sim.ExpireTokens()
	require.Equal(t, http.StatusUnauthorized, r.list(t, first))
	src.Invalidate(first)
	second := mustToken(t, src)
	assert.NotEqual(t, first.Reveal(), second.Reveal())
	assert.Equal(t, http.StatusOK, r.list(t, second))
	assert.Equal(t, 2, r.api.Sim.Logins())

	src.Invalidate(first)
	assert.Equal(t, second.Reveal(), mustToken(t, src).Reveal(), "the refused token was already replaced")
	assert.Equal(t, 2, r.api.Sim.Logins())

	t.Run("ten refusals at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				src.Invalidate(second)
				_, err := src.Token(t.Context())
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Equal(t, 3, r.api.Sim.Logins(), "one login, not ten")
	})
}

func TestTokenSingleFlight(t *testing.T) {
	r := newAuthRig(t, 0)
	src := r.appLogin(meetingapi.AppIDCredentials{})

	const callers = 50
	start := make(chan struct{})
	toks := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			tok, err := src.Token(t.Context())
			assert.NoError(t, err)
			toks[i] = tok.Reveal()
		})
	}
	close(start)
	wg.Wait()

	assert.Equal(t, 1, r.api.Sim.Logins())
	for _, tok := range toks {
		assert.Equal(t, toks[0], tok)
	}
}

func TestTokenFirstCallerCancelled(t *testing.T) {
	r := newAuthRig(t, 0)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.api.Sim.SetHook(func(req *http.Request) *apisim.Fault {
		if req.URL.Path != apisim.Path {
			once.Do(func() { close(entered) })
			<-release
		}
		return nil
	})
	src := r.appLogin(meetingapi.AppIDCredentials{})

	ctx, cancel := context.WithCancel(t.Context())
	firstErr := make(chan error)
	go func() {
		_, err := src.Token(ctx)
		firstErr <- err
	}()
	<-entered // the first caller's login is at the server

	const waiters = 5
	toks := make([]string, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			tok, err := src.Token(t.Context())
			assert.NoError(t, err, "a waiter does not fail with the first caller")
			toks[i] = tok.Reveal()
		})
	}

	cancel()
	err := <-firstErr
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, meetingapi.ErrLoginFailed, "the login did not fail; the caller stopped waiting")

	close(release)
	wg.Wait()
	after := mustToken(t, src)
	assert.Equal(t, 1, r.api.Sim.Logins(), "the login finished for the others and was cached")
	for _, tok := range toks {
		assert.Equal(t, after.Reveal(), tok)
	}
}

func TestTokenSecretsNotPrinted(t *testing.T) {
	r := newAuthRig(t, 0)
	appCred := meetingapi.AppIDCredentials{AppID: authAppID, AppKey: redact.NewSecret(authAppKey), UserID: "alice"}
	accCred := meetingapi.AccountCredentials{Account: authAccount, Password: redact.NewSecret(authPassword)}
	app := meetingapi.NewAppIDLogin(r.cfg, appCred)
	acc := meetingapi.NewAccountLogin(r.cfg, accCred)
	static := meetingapi.StaticToken(redact.NewSecret("static-t0ken-value"))
	secrets := []string{authAppKey, authPassword, "static-t0ken-value", mustToken(t, app).Reveal(), mustToken(t, acc).Reveal()}

	var printed strings.Builder
	for _, v := range []any{appCred, accCred, &appCred, app, acc, static} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			fmt.Fprintf(&printed, verb+"\n", v)
		}
		b, err := json.Marshal(v)
		require.NoError(t, err)
		printed.Write(b)
		var logs bytes.Buffer
		slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "v", v)
		slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "v", v)
		printed.Write(logs.Bytes())
	}
	printed.WriteString(r.logs.String())

	require.Contains(t, printed.String(), authAppID, "what is not secret still prints")
	for _, s := range secrets {
		assert.NotContains(t, printed.String(), s)
	}
}

func TestStaticToken(t *testing.T) {
	src := meetingapi.StaticToken(redact.NewSecret("static-t0ken-value"))
	tok := mustToken(t, src)
	assert.Equal(t, "static-t0ken-value", tok.Reveal())
	src.Invalidate(tok)
	assert.Equal(t, "static-t0ken-value", mustToken(t, src).Reveal(), "nothing to renew with")

	_, err := meetingapi.StaticToken(redact.Secret{}).Token(t.Context())
	require.Error(t, err)
}

func TestTokenCancelledBeforeLogin(t *testing.T) {
	r := newAuthRig(t, 0)
	src := r.accountLogin()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := src.Token(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, r.api.Sim.Logins(), "no login that nobody waits for")

	mustToken(t, src)
	_, err = src.Token(ctx)
	require.NoError(t, err, "a cached token needs no waiting")
}

// TestClientKeepsItsTokenValid: the client lists with a token renewed
// before it expires, so that no request is refused for an old token; and
// when the API refuses a token anyway, it logs in again and repeats the
// request at once, without a backoff.
func TestClientKeepsItsTokenValid(t *testing.T) {
	tests := []struct {
		name         string
		between      func(*apisim.Sim) // between the two listings
		wantLogins   int
		wantRequests int
	}{
		{name: "a fresh token is kept", between: func(*apisim.Sim) { time.Sleep(80*time.Second - time.Nanosecond) }, wantLogins: 1, wantRequests: 2},
		{name: "renewed at 80% of its life, before a refusal", between: func(*apisim.Sim) { time.Sleep(80 * time.Second) }, wantLogins: 2, wantRequests: 2},
		{name: "dropped by the server: refused once, then replaced", between: (*apisim.Sim).ExpireTokens, wantLogins: 2, wantRequests: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newAuthRig(t, 100*time.Second)
				r.api.Sim.AddN(2)
				src := r.accountLogin()
				t.Cleanup(src.Close)
				c, err := meetingapi.NewClient(meetingapi.ClientConfig{BaseURL: r.api.URL, HTTPClient: r.cfg.HTTPClient, Tokens: src})
				require.NoError(t, err)
				_, err = c.List(t.Context(), nil, nil)
				require.NoError(t, err)

				tt.between(r.api.Sim)
				start := time.Now()
				snap, err := c.List(t.Context(), nil, nil)
				require.NoError(t, err)
				assert.Len(t, snap, 2)
				assert.Zero(t, time.Since(start), "no waiting")
				assert.Equal(t, tt.wantLogins, r.api.Sim.Logins())
				assert.Equal(t, tt.wantRequests, r.api.Sim.Requests())
			})
		})
	}
}
