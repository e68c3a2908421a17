package apisim_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

const (
	appID    = "app-7d1f"
	appKey   = "k3y-0f-the-app-5ecret"
	account  = "admin@example.com"
	password = "pa55-w0rd-9c2e"
	nonce40  = "0123456789abcdef0123456789abcdef01234567"
)

// appLogin is an App ID login request, signed as the API reference says.
// It is built here rather than with the simulator's code, so that the two
// check each other.
type appLogin struct {
	key        string // signs; defaults to appKey
	access     string // appId in the header; defaults to appID
	body       map[string]any
	authz      string // replaces the whole header when set
	method     string
	tamperBody func(map[string]any) // changes the body after signing
}

func (l appLogin) request(tb testing.TB, srv *apisim.Server) *http.Request {
	tb.Helper()
	return l.requestTo(tb, srv.URL)
}

// requestTo is request for the simulator at baseURL.
func (l appLogin) requestTo(tb testing.TB, baseURL string) *http.Request {
	tb.Helper()
	body := map[string]any{"appId": appID, "clientType": 72, "expireTime": fixedNow().Add(10 * time.Minute).Unix(), "nonce": nonce40}
	for k, v := range l.body {
		if v == nil {
			delete(body, k)
		} else {
			body[k] = v
		}
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	msg := []string{str("appId")}
	if str("corpId") != "" {
		msg = append(msg, str("corpId"))
	}
	msg = append(msg, str("userId"), fmt.Sprint(body["expireTime"]), str("nonce"))
	mac := hmac.New(sha256.New, []byte(cmpOr(l.key, appKey)))
	mac.Write([]byte(strings.Join(msg, ":")))
	authz := "HMAC-SHA256 signature=" + hex.EncodeToString(mac.Sum(nil)) + ",access=" + base64.StdEncoding.EncodeToString([]byte(cmpOr(l.access, appID)))
	if l.authz != "" {
		authz = l.authz
	}
	if l.tamperBody != nil {
		l.tamperBody(body)
	}
	return loginRequest(tb, baseURL, cmpOr(l.method, http.MethodPost), apisim.AppAuthPath, authz, body)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func loginRequest(tb testing.TB, baseURL, method, path, authz string, body any) *http.Request {
	tb.Helper()
	b, err := json.Marshal(body)
	require.NoError(tb, err)
	req, err := http.NewRequestWithContext(tb.Context(), method, baseURL+path, bytes.NewReader(b))
	require.NoError(tb, err)
	req.Header.Set("Authorization", authz)
	req.Header.Set("X-Token-Type", "LongTicket")
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	return req
}

func send(tb testing.TB, req *http.Request) reply {
	tb.Helper()
	return sendVia(tb, newClient(), req)
}

// sendVia is send with hc, such as the client of a simtest.Pipe.
func sendVia(tb testing.TB, hc *http.Client, req *http.Request) reply {
	tb.Helper()
	resp, err := hc.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}
}

type tokenBody struct {
	AccessToken        string         `json:"accessToken"`
	ValidPeriod        int64          `json:"validPeriod"`
	ExpireTime         int64          `json:"expireTime"`
	RefreshToken       string         `json:"refreshToken"`
	RefreshValidPeriod int64          `json:"refreshValidPeriod"`
	RefreshExpireTime  int64          `json:"refreshExpireTime"`
	User               map[string]any `json:"user"`
}

func requireToken(tb testing.TB, r reply) tokenBody {
	tb.Helper()
	require.Equal(tb, http.StatusOK, r.status, "body: %s", r.body)
	var tok tokenBody
	require.NoError(tb, json.Unmarshal(r.body, &tok))
	require.NotEmpty(tb, tok.AccessToken)
	return tok
}

func accountLogin(tb testing.TB, srv *apisim.Server, user, pass string, body any) reply {
	tb.Helper()
	authz := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	return send(tb, loginRequest(tb, srv.URL, http.MethodPost, apisim.AccountAuthPath, authz, body))
}

func listWith(tb testing.TB, srv *apisim.Server, tok string) reply {
	tb.Helper()
	return do(tb, srv, http.MethodGet, apisim.Path, "", tok)
}

// listVia is listWith for the simulator behind p.
func listVia(tb testing.TB, p *simtest.Pipe, tok string) reply {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, p.URL+apisim.Path, nil)
	require.NoError(tb, err)
	req.Header.Set("X-Access-Token", tok)
	return sendVia(tb, p.Client(), req)
}

func TestAppAuth(t *testing.T) {
	tests := []struct {
		name     string
		login    appLogin
		wantUser string
		wantCorp string
		wantMsg  string // a refusal's error_msg contains it
	}{
		{name: "enterprise admin, no userId"},
		{name: "user", login: appLogin{body: map[string]any{"userId": "alice"}}, wantUser: "alice"},
		{name: "multi-tenant", login: appLogin{body: map[string]any{"userId": "alice", "corpId": "corp-9"}}, wantUser: "alice", wantCorp: "corp-9"},
		{name: "multi-tenant admin", login: appLogin{body: map[string]any{"corpId": "corp-9"}}, wantCorp: "corp-9"},
		{name: "signature that never expires", login: appLogin{body: map[string]any{"expireTime": 0}}},
		{name: "nonce of 32", login: appLogin{body: map[string]any{"nonce": nonce40[:32]}}},
		{name: "nonce of 64", login: appLogin{body: map[string]any{"nonce": strings.Repeat("n", 64)}}},
		{name: "parameters swapped and spaced", login: appLogin{authz: "HMAC-SHA256 access=" + base64.StdEncoding.EncodeToString([]byte(appID)) + ", signature=" + hex.EncodeToString(sign(appKey, appID+"::"+fmt.Sprint(fixedNow().Add(10*time.Minute).Unix())+":"+nonce40))}},

		{name: "wrong key", login: appLogin{key: "not-the-key"}, wantMsg: "signature does not match"},
		{name: "unknown app", login: appLogin{access: "other-app", body: map[string]any{"appId": "other-app"}}, wantMsg: "app ID is unknown"},
		{name: "body appId differs from access", login: appLogin{body: map[string]any{"appId": "other-app"}}, wantMsg: "appId in the body"},
		{name: "userId not signed", login: appLogin{tamperBody: func(b map[string]any) { b["userId"] = "alice" }}, wantMsg: "signature does not match"},
		{name: "corpId not signed", login: appLogin{body: map[string]any{"userId": "alice"}, tamperBody: func(b map[string]any) { b["corpId"] = "corp-9" }}, wantMsg: "signature does not match"},
		{name: "clientType not 72", login: appLogin{body: map[string]any{"clientType": 71}}, wantMsg: "clientType must be 72"},
		{name: "clientType missing", login: appLogin{body: map[string]any{"clientType": nil}}, wantMsg: "clientType must be 72"},
		{name: "nonce of 31", login: appLogin{body: map[string]any{"nonce": nonce40[:31]}}, wantMsg: "nonce must have 32 to 64"},
		{name: "nonce of 65", login: appLogin{body: map[string]any{"nonce": strings.Repeat("n", 65)}}, wantMsg: "nonce must have 32 to 64"},
		{name: "signature expired", login: appLogin{body: map[string]any{"expireTime": fixedNow().Unix() - 1}}, wantMsg: "signature has expired"},
		{name: "signature expires now", login: appLogin{body: map[string]any{"expireTime": fixedNow().Unix()}}, wantMsg: "signature has expired"},
		{name: "not HMAC", login: appLogin{authz: "Bearer abc"}, wantMsg: "must be HMAC-SHA256"},
		{name: "no access", login: appLogin{authz: "HMAC-SHA256 signature=00"}, wantMsg: "must be HMAC-SHA256"},
		{name: "access not base64", login: appLogin{authz: "HMAC-SHA256 signature=00,access=!!"}, wantMsg: "not base64"},
		{name: "signature not hex", login: appLogin{authz: "HMAC-SHA256 signature=xyz,access=" + base64.StdEncoding.EncodeToString([]byte(appID))}, wantMsg: "not hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, apisim.Options{AppID: appID, AppKey: appKey, TokenTTL: 100 * time.Second})
			r := send(t, tt.login.request(t, srv))
			if tt.wantMsg != "" {
				requireAPIError(t, r, http.StatusUnauthorized, apisim.CodeInvalidToken)
				assert.Contains(t, string(r.body), tt.wantMsg)
				assert.NotContains(t, string(r.body), appKey)
				assert.Zero(t, srv.Sim.Logins())
				return
			}
			got := requireToken(t, r)
			assert.Equal(t, int64(100), got.ValidPeriod)
			assert.Equal(t, fixedNow().Add(100*time.Second).Unix(), got.ExpireTime)
			assert.NotEmpty(t, got.RefreshToken)
			assert.Positive(t, got.RefreshValidPeriod)
			assert.Greater(t, got.RefreshExpireTime, got.ExpireTime)
			assert.Equal(t, tt.wantUser, got.User["userId"])
			assert.Equal(t, tt.wantCorp, got.User["corpId"])
			assert.Regexp(t, hex32, r.header.Get("X-Request-Id"))
			assert.Equal(t, 1, srv.Sim.Logins())
			assert.Equal(t, http.StatusOK, listWith(t, srv, got.AccessToken).status)
		})
	}
}

func sign(key, msg string) []byte {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

func TestAppAuthMethod(t *testing.T) {
	srv := newServer(t, apisim.Options{AppID: appID, AppKey: appKey})
	r := send(t, appLogin{method: http.MethodGet}.request(t, srv))
	requireAPIError(t, r, http.StatusMethodNotAllowed, apisim.CodeNoSuchAPI)
}

func TestAppAuthNotConfigured(t *testing.T) {
	srv := newServer(t, apisim.Options{})
	requireAPIError(t, send(t, appLogin{}.request(t, srv)), http.StatusUnauthorized, apisim.CodeInvalidToken)
	requireAPIError(t, accountLogin(t, srv, "", "", map[string]any{"account": "", "clientType": 72}), http.StatusUnauthorized, apisim.CodeInvalidToken)
}

func TestAccountAuth(t *testing.T) {
	good := map[string]any{"account": account, "clientType": 72}
	tests := []struct {
		name    string
		user    string
		pass    string
		body    any
		raw     string // replaces the Authorization header when set
		wantMsg string // a refusal's error_msg contains it
	}{
		{name: "good", user: account, pass: password, body: good},
		{name: "wrong password", user: account, pass: "guess", body: good, wantMsg: "account or password is incorrect"},
		{name: "unknown account", user: "eve@example.com", pass: password, body: map[string]any{"account": "eve@example.com", "clientType": 72}, wantMsg: "account or password is incorrect"},
		{name: "body names another account", user: account, pass: password, body: map[string]any{"account": "eve@example.com", "clientType": 72}, wantMsg: "account in the body"},
		{name: "clientType not 72", user: account, pass: password, body: map[string]any{"account": account, "clientType": 1}, wantMsg: "clientType must be 72"},
		{name: "body not json", user: account, pass: password, body: "account", wantMsg: "not a JSON login request"},
		{name: "not basic", raw: "Bearer x", body: good, wantMsg: "must be Basic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, apisim.Options{Account: account, Password: password})
			var r reply
			if tt.raw != "" {
				r = send(t, loginRequest(t, srv.URL, http.MethodPost, apisim.AccountAuthPath, tt.raw, tt.body))
			} else {
				r = accountLogin(t, srv, tt.user, tt.pass, tt.body)
			}
			if tt.wantMsg != "" {
				requireAPIError(t, r, http.StatusUnauthorized, apisim.CodeInvalidToken)
				assert.Contains(t, string(r.body), tt.wantMsg)
				assert.NotContains(t, string(r.body), password)
				assert.Zero(t, srv.Sim.Logins())
				return
			}
			got := requireToken(t, r)
			assert.Equal(t, int64(apisim.DefaultTokenTTL/time.Second), got.ValidPeriod, "TokenTTL 0 means 12h")
			assert.Equal(t, account, got.User["account"])
			assert.Equal(t, 1, srv.Sim.Logins())
			assert.Equal(t, http.StatusOK, listWith(t, srv, got.AccessToken).status)
		})
	}
}

// TestIssuedTokenExpires runs in a synctest bubble, where the simulator's
// clock (Options.Now left nil) is the bubble's fake one.
func TestIssuedTokenExpires(t *testing.T) {
	tests := []struct {
		name   string
		expire func(*apisim.Sim)
	}{
		{name: "ExpireTokens", expire: (*apisim.Sim).ExpireTokens},
		{name: "the TTL passes", expire: func(*apisim.Sim) { time.Sleep(time.Nanosecond) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := simtest.NewPipe(t, apisim.Options{Token: token, AppID: appID, AppKey: appKey, TokenTTL: 100 * time.Second})
				p.Sim.AddN(3)
				hc := p.Client()
				tok := requireToken(t, sendVia(t, hc, appLogin{body: map[string]any{"expireTime": time.Now().Add(10 * time.Minute).Unix()}}.requestTo(t, p.URL))).AccessToken

				time.Sleep(100*time.Second - time.Nanosecond)
				assert.Equal(t, http.StatusOK, listVia(t, p, tok).status, "valid until its TTL")

				tt.expire(p.Sim)
				requireAPIError(t, listVia(t, p, tok), http.StatusUnauthorized, apisim.CodeInvalidToken)
				assert.Equal(t, http.StatusOK, listVia(t, p, token).status, "Options.Token never expires")

				again := requireToken(t, sendVia(t, hc, appLogin{body: map[string]any{"expireTime": 0}}.requestTo(t, p.URL))).AccessToken
				assert.NotEqual(t, tok, again)
				assert.Equal(t, http.StatusOK, listVia(t, p, again).status, "a new login gets a working token")
				assert.Equal(t, 2, p.Sim.Logins())
			})
		})
	}
}

func TestListingTokens(t *testing.T) {
	tests := []struct {
		name string
		opts apisim.Options
		tok  string
		want int
	}{
		{name: "no login configured: any token", tok: "anything", want: http.StatusOK},
		{name: "login configured: unknown token", opts: apisim.Options{AppID: appID, AppKey: appKey}, tok: "anything", want: http.StatusUnauthorized},
		{name: "account configured: unknown token", opts: apisim.Options{Account: account, Password: password}, tok: "anything", want: http.StatusUnauthorized},
		{name: "login configured: Options.Token", opts: apisim.Options{Token: token, AppID: appID, AppKey: appKey}, tok: token, want: http.StatusOK},
		{name: "static token: other token", opts: apisim.Options{Token: token}, tok: "anything", want: http.StatusUnauthorized},
		{name: "no token", tok: "", want: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.opts)
			assert.Equal(t, tt.want, listWith(t, srv, tt.tok).status)
		})
	}
}

func TestTokenSlotsEvictOldest(t *testing.T) {
	srv := newServer(t, apisim.Options{Account: account, Password: password})
	body := map[string]any{"account": account, "clientType": 72}
	toks := make([]string, apisim.MaxTokensPerUser+1)
	for i := range toks {
		toks[i] = requireToken(t, accountLogin(t, srv, account, password, body)).AccessToken
	}
	requireAPIError(t, listWith(t, srv, toks[0]), http.StatusUnauthorized, apisim.CodeInvalidToken)
	assert.Equal(t, http.StatusOK, listWith(t, srv, toks[1]).status)
	assert.Equal(t, http.StatusOK, listWith(t, srv, toks[len(toks)-1]).status)
	assert.Equal(t, apisim.MaxTokensPerUser+1, srv.Sim.Logins())
}

func TestFaultsOnLogins(t *testing.T) {
	srv := newServer(t, apisim.Options{AppID: appID, AppKey: appKey})
	srv.Sim.FailOnce(0, apisim.Fault{Status: http.StatusInternalServerError})
	var paths []string
	var mu sync.Mutex
	srv.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == apisim.AppAuthPath {
			return &apisim.Fault{Status: http.StatusServiceUnavailable}
		}
		return nil
	})

	requireAPIError(t, send(t, appLogin{}.request(t, srv)), http.StatusServiceUnavailable, apisim.CodeServerError)
	srv.Sim.SetHook(nil)
	tok := requireToken(t, send(t, appLogin{}.request(t, srv))).AccessToken
	requireAPIError(t, listWith(t, srv, tok), http.StatusInternalServerError, apisim.CodeServerError)
	assert.Equal(t, []string{apisim.AppAuthPath}, paths)
	assert.Equal(t, 1, srv.Sim.Requests(), "Requests counts listings only")
	assert.Equal(t, 1, srv.Sim.Logins())
}

func TestHookMayReadLoginBody(t *testing.T) {
	srv := newServer(t, apisim.Options{AppID: appID, AppKey: appKey})
	var got map[string]any
	srv.Sim.SetHook(func(r *http.Request) *apisim.Fault {
		b, err := io.ReadAll(r.Body)
		assert.NoError(t, err)
		assert.NoError(t, json.Unmarshal(b, &got))
		r.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	})
	requireToken(t, send(t, appLogin{body: map[string]any{"userId": "bob"}}.request(t, srv)))
	assert.Equal(t, "bob", got["userId"])
}
