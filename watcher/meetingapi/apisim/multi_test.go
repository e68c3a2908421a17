package apisim_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

func newMultiServer(tb testing.TB, accounts []apisim.Account) *apisim.MultiServer {
	tb.Helper()
	srv, err := apisim.NewMultiServer(accounts)
	require.NoError(tb, err)
	tb.Cleanup(srv.Close)
	return srv
}

// fetch sends a request for path (with query) to baseURL with the token.
func fetch(tb testing.TB, baseURL, path, query, tok string) reply {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, baseURL+path+"?"+query, nil)
	require.NoError(tb, err)
	if tok != "" {
		req.Header.Set("X-Access-Token", tok)
	}
	return send(tb, req)
}

// listAll returns the confUUIDs of one page of up to 500 meetings.
func listAll(tb testing.TB, baseURL, tok string) []string {
	tb.Helper()
	r := fetch(tb, baseURL, apisim.Path, "limit=500&queryAll=true", tok)
	require.Equal(tb, http.StatusOK, r.status, "body: %s", r.body)
	var p pageBody
	require.NoError(tb, json.Unmarshal(r.body, &p))
	require.Len(tb, p.Data, p.Count, "one page holds every meeting")
	return p.uuids()
}

func TestMultiRoutesByToken(t *testing.T) {
	accts := apisim.NumberedAccounts(3, apisim.Options{Token: token, Seed: 5, Now: fixedNow})
	srv := newMultiServer(t, accts)
	want := map[string][]string{}
	for i, a := range accts {
		require.Len(t, srv.Multi.Sim(a.Name).AddN(2+i), 2+i)
		want[a.Name] = srv.Multi.Sim(a.Name).UUIDs()
	}

	for _, a := range accts {
		assert.Equal(t, want[a.Name], listAll(t, srv.URL, a.Token), "%s lists its own meetings", a.Name)
	}
	for _, tok := range []string{"", token, "stranger"} {
		requireAPIError(t, fetch(t, srv.URL, apisim.Path, "", tok), http.StatusUnauthorized, apisim.CodeInvalidToken)
	}
	requireAPIError(t, fetch(t, srv.URL, "/v1/elsewhere", "", accts[0].Token), http.StatusNotFound, apisim.CodeNoSuchAPI)
	for _, a := range accts {
		assert.Equal(t, 1, srv.Multi.Sim(a.Name).Requests(), "%s counts its own listing only", a.Name)
	}
}

func TestMultiAccountsAreIsolated(t *testing.T) {
	accts := apisim.NumberedAccounts(3, apisim.Options{Token: token, Seed: 6, Now: fixedNow})
	srv := newMultiServer(t, accts)
	for _, a := range accts {
		srv.Multi.Sim(a.Name).AddN(4)
	}
	before := map[string][]string{}
	for _, a := range accts {
		before[a.Name] = listAll(t, srv.URL, a.Token)
	}

	// Changes, an end and a fault in acct-02 alone.
	busy := srv.Multi.Sim("acct-02")
	require.True(t, busy.End(before["acct-02"][0]))
	for range 20 {
		busy.Step(nil)
	}
	busy.SetHook(func(*http.Request) *apisim.Fault { return &apisim.Fault{Status: http.StatusServiceUnavailable} })

	requireAPIError(t, fetch(t, srv.URL, apisim.Path, "", accts[1].Token), http.StatusServiceUnavailable, apisim.CodeServerError)
	for _, a := range []apisim.Account{accts[0], accts[2]} {
		assert.Equal(t, before[a.Name], listAll(t, srv.URL, a.Token), "%s unchanged", a.Name)
	}
	assert.NotEqual(t, before["acct-02"], busy.UUIDs())
}

func TestMultiLogins(t *testing.T) {
	accts := apisim.NumberedAccounts(2, apisim.Options{AppID: appID, AppKey: appKey, Account: account, Password: password, Seed: 7, Now: fixedNow})
	srv := newMultiServer(t, accts)
	want := map[string][]string{}
	for i, a := range accts {
		require.Len(t, srv.Multi.Sim(a.Name).AddN(1+i), 1+i)
		want[a.Name] = srv.Multi.Sim(a.Name).UUIDs()
	}
	accountLoginTo := func(user, pass string) reply {
		authz := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		return send(t, loginRequest(t, srv.URL, http.MethodPost, apisim.AccountAuthPath, authz, map[string]any{"account": user, "clientType": 72}))
	}

	for _, a := range accts {
		app := requireToken(t, send(t, appLogin{key: a.AppKey, access: a.AppID, body: map[string]any{"appId": a.AppID}}.requestTo(t, srv.URL)))
		assert.Equal(t, want[a.Name], listAll(t, srv.URL, app.AccessToken), "an App ID token of %s lists its meetings", a.Name)
		acc := requireToken(t, accountLoginTo(a.Account, a.Password))
		assert.Equal(t, want[a.Name], listAll(t, srv.URL, acc.AccessToken), "an account token of %s lists its meetings", a.Name)
		assert.Equal(t, 2, srv.Multi.Sim(a.Name).Logins())
	}

	// Another account's key, an unknown App ID, the base credentials.
	requireAPIError(t, send(t, appLogin{key: accts[1].AppKey, access: accts[0].AppID, body: map[string]any{"appId": accts[0].AppID}}.requestTo(t, srv.URL)),
		http.StatusUnauthorized, apisim.CodeInvalidToken)
	requireAPIError(t, send(t, appLogin{}.requestTo(t, srv.URL)), http.StatusUnauthorized, apisim.CodeInvalidToken)
	requireAPIError(t, accountLoginTo(accts[0].Account, accts[1].Password), http.StatusUnauthorized, apisim.CodeInvalidToken)
	requireAPIError(t, accountLoginTo(account, password), http.StatusUnauthorized, apisim.CodeInvalidToken)
	requireAPIError(t, fetch(t, srv.URL, apisim.Path, "", "anything"), http.StatusUnauthorized, apisim.CodeInvalidToken)
}

func TestNumberedAccounts(t *testing.T) {
	base := apisim.Options{Token: "t", AppID: "a", AppKey: "k", Account: "u", Password: "p", TokenTTL: 7, AdminUserUUID: "admin", Seed: 3}

	one := apisim.NumberedAccounts(1, base)
	assert.Equal(t, []apisim.Account{{Name: "acct-01", Options: base}}, one, "one account is base itself")

	three := apisim.NumberedAccounts(3, base)
	assert.Equal(t, three, apisim.NumberedAccounts(3, base), "the same every time")
	seeds := map[int64]bool{base.Seed: true}
	for i, a := range three {
		name := []string{"acct-01", "acct-02", "acct-03"}[i]
		assert.Equal(t, name, a.Name)
		assert.Equal(t, [5]string{"t-" + name, "a-" + name, "k-" + name, "u-" + name, "p-" + name},
			[5]string{a.Token, a.AppID, a.AppKey, a.Account, a.Password})
		assert.Equal(t, base.TokenTTL, a.TokenTTL)
		assert.Equal(t, base.AdminUserUUID, a.AdminUserUUID)
		assert.False(t, seeds[a.Seed], "%s has a seed of its own", name)
		seeds[a.Seed] = true
	}
	other := apisim.NumberedAccounts(3, apisim.Options{Token: "t", Seed: 4})
	assert.NotEqual(t, three[0].Seed, other[0].Seed, "another base seed, other seeds")

	noLogin := apisim.NumberedAccounts(2, apisim.Options{Token: "t"})
	assert.Empty(t, noLogin[0].AppID+noLogin[0].AppKey+noLogin[0].Account+noLogin[0].Password, "no credential base lacks")

	hundred := apisim.NumberedAccounts(100, base)
	assert.Equal(t, "acct-001", hundred[0].Name)
	assert.Equal(t, "acct-100", hundred[99].Name)
}

func TestMultiSeedsReplay(t *testing.T) {
	build := func(seed int64) map[string][]apisim.Record {
		m, err := apisim.NewMulti(apisim.NumberedAccounts(3, apisim.Options{Token: token, Seed: seed, Now: fixedNow}))
		require.NoError(t, err)
		out := map[string][]apisim.Record{}
		for _, a := range m.Accounts() {
			m.Sim(a.Name).AddN(5)
			out[a.Name] = m.Sim(a.Name).Meetings()
		}
		return out
	}
	first, again, other := build(11), build(11), build(12)
	assert.Equal(t, first, again, "the same base seed, the same meetings in every account")
	assert.NotEqual(t, first["acct-01"], first["acct-02"], "accounts list different meetings")
	assert.NotEqual(t, first["acct-01"], other["acct-01"], "another base seed, other meetings")
}

func TestNewMultiRefuses(t *testing.T) {
	tok := func(name, token string) apisim.Account {
		return apisim.Account{Name: name, Options: apisim.Options{Token: token}}
	}
	tests := []struct {
		name     string
		accounts []apisim.Account
		want     string
	}{
		{name: "none", want: "no accounts"},
		{name: "no name", accounts: []apisim.Account{tok("", "t")}, want: "an account without a name"},
		{name: "no credentials", accounts: []apisim.Account{tok("a", "")}, want: "account a: no token and no login"},
		{name: "duplicate name", accounts: []apisim.Account{tok("a", "t1"), tok("a", "t2")}, want: "account a: its name is another account's too"},
		{name: "duplicate token", accounts: []apisim.Account{tok("a", "t"), tok("b", "t")}, want: "account b: its token is another account's too"},
		{name: "duplicate App ID", accounts: []apisim.Account{
			{Name: "a", Options: apisim.Options{AppID: "x"}}, {Name: "b", Options: apisim.Options{AppID: "x"}},
		}, want: "account b: its App ID is another account's too"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := apisim.NewMulti(tt.accounts)
			assert.Nil(t, m)
			assert.EqualError(t, err, tt.want)
		})
	}
}

func ExampleNewMultiServer() {
	srv, err := apisim.NewMultiServer(apisim.NumberedAccounts(2, apisim.Options{Token: "secret"}))
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	srv.Multi.Sim("acct-02").AddN(3)

	for _, a := range srv.Multi.Accounts() {
		req, err := http.NewRequest(http.MethodGet, srv.URL+apisim.Path, nil)
		if err != nil {
			panic(err)
		}
		req.Header.Set("X-Access-Token", a.Token)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			panic(err)
		}
		var page struct {
			Count int `json:"count"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			panic(err)
		}
		fmt.Println(a.Name, a.Token, page.Count)
	}
	// Output:
	// acct-01 secret-acct-01 0
	// acct-02 secret-acct-02 3
}
