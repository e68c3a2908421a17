package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim/simtest"
)

// simAccountLine matches the line `meetwatch sim --accounts N` prints for
// each account.
var simAccountLine = regexp.MustCompile(`(?m)^account (acct-\d+) on (http://127\.0\.0\.1:\d+) \(token "([^"]*)"\)$`)

// simAccountsFile is the accounts file `meetwatch sim --accounts-file` writes,
// read as strictly as MEETWATCH_ACCOUNTS_FILE is: no key beyond these.
type simAccountsFile struct {
	Accounts []struct {
		Name        string `yaml:"name"`
		APIURL      string `yaml:"api_url"`
		AccessToken string `yaml:"access_token"`
	} `yaml:"accounts"`
}

func readAccountsFile(tb testing.TB, path string) simAccountsFile {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f simAccountsFile
	require.NoError(tb, dec.Decode(&f), "the accounts file:\n%s", b)
	cfg, err := loadConfig(map[string]string{envPrefix + "ACCOUNTS_FILE": path}, true)
	require.NoError(tb, err, "meetwatch run takes the file")
	accounts, err := loadAccounts(cfg)
	require.NoError(tb, err, "meetwatch run takes the file")
	require.Len(tb, accounts, len(f.Accounts))
	return f
}

// controlCall sends a request to a simulator's control endpoint and
// returns its status and body.
func controlCall(tb testing.TB, method, url string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, url, nil)
	require.NoError(tb, err)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp.StatusCode, body
}

func uuidsOf(recs []map[string]any) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i], _ = r["confUUID"].(string)
	}
	return ids
}

// TestSimServesSeveralAccounts runs `meetwatch sim --accounts 3` as its
// own process: it prints each account's name, URL and token, writes them
// as an accounts file, lists each account's own meetings to its token
// alone, and its control endpoint churns and reports one account when
// named, every account when not.
func TestSimServesSeveralAccounts(t *testing.T) {
	t.Parallel()
	const meetings = 4
	file := filepath.Join(t.TempDir(), "accounts.yaml")
	sim := startMeetwatch(t, nil, "sim", "--addr", "127.0.0.1:0", "--token", "multi", "--accounts", "3", "--accounts-file", file,
		"--meetings", "4", "--churn", "0", "--seed", "21", "--control", "127.0.0.1:0")
	control := regexp.MustCompile(`control on (http://127\.0\.0\.1:\d+)`)
	require.Eventually(t, func() bool { return control.MatchString(sim.stdout.String()) },
		eventWait, tick, "waiting for the simulator's addresses")
	out := sim.stdout.String()
	ctl := control.FindStringSubmatch(out)[1]
	assert.Contains(t, out, "accounts file "+file+"\n")

	lines := simAccountLine.FindAllStringSubmatch(out, -1)
	require.Len(t, lines, 3, "one line per account:\n%s", out)
	names := []string{"acct-01", "acct-02", "acct-03"}
	url := lines[0][2]
	tokens := map[string]string{}
	for i, l := range lines {
		assert.Equal(t, names[i], l[1])
		assert.Equal(t, url, l[2], "one URL for all")
		assert.Equal(t, "multi-"+names[i], l[3])
		tokens[l[1]] = l[3]
	}

	f := readAccountsFile(t, file)
	require.Len(t, f.Accounts, 3)
	for i, a := range f.Accounts {
		assert.Equal(t, [3]string{names[i], url, tokens[names[i]]}, [3]string{a.Name, a.APIURL, a.AccessToken})
	}
	info, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "credentials for its owner only")

	// Each token lists its own meetings only.
	listed := map[string][]string{}
	seen := map[string]string{}
	for _, name := range names {
		listed[name] = uuidsOf(listSim(t, url, tokens[name]))
		assert.Len(t, listed[name], meetings, name)
		for _, id := range listed[name] {
			assert.Empty(t, seen[id], "%s listed by %s and %s", id, seen[id], name)
			seen[id] = name
		}
	}
	for _, tok := range []string{"multi", "stranger"} {
		status, body := listStatus(t, url, tok)
		assert.Equal(t, http.StatusUnauthorized, status, "token %q: %s", tok, body)
		assert.Contains(t, string(body), apisim.CodeInvalidToken)
	}

	// Listings: one account's, then the rest.
	var got []simListing
	status, body := controlCall(t, http.MethodGet, ctl+"/listings?account=acct-02")
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.NoError(t, json.Unmarshal(body, &got))
	require.Len(t, got, 1, "acct-02's listing: %s", body)
	assert.Equal(t, "acct-02", got[0].Account)
	status, body = controlCall(t, http.MethodGet, ctl+"/listings")
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.NoError(t, json.Unmarshal(body, &got))
	require.Len(t, got, 2, "the others' listings: %s", body)
	assert.Equal(t, []string{"acct-01", "acct-03"}, []string{got[0].Account, got[1].Account})

	// Churn in acct-03 alone.
	status, body = controlCall(t, http.MethodPost, ctl+"/churn?account=acct-03&starts=2&changes=0&ends=1")
	require.Equal(t, http.StatusOK, status, "%s", body)
	assert.JSONEq(t, `{"started":2,"changed":0,"ended":1,"meetings":5}`, string(body))
	for _, name := range names[:2] {
		assert.Equal(t, listed[name], uuidsOf(listSim(t, url, tokens[name])), "%s untouched", name)
	}
	after := uuidsOf(listSim(t, url, tokens["acct-03"]))
	assert.Len(t, after, meetings+1)
	kept := slices.DeleteFunc(slices.Clone(after), func(id string) bool { return !slices.Contains(listed["acct-03"], id) })
	assert.Len(t, kept, meetings-1, "one of acct-03's meetings ended, the others go on")

	// Without an account, every account.
	status, body = controlCall(t, http.MethodPost, ctl+"/churn?starts=1&changes=0&ends=0")
	require.Equal(t, http.StatusOK, status, "%s", body)
	assert.JSONEq(t, `{"started":3,"changed":0,"ended":0,"meetings":16}`, string(body))
	for _, name := range names[:2] {
		assert.Len(t, listSim(t, url, tokens[name]), meetings+1, name)
	}

	status, body = controlCall(t, http.MethodPost, ctl+"/churn?account=acct-09&starts=1&changes=0&ends=0")
	assert.Equal(t, http.StatusNotFound, status, "an account not served: %s", body)

	sim.stop(t, syscall.SIGTERM)
}

// listStatus lists a simulator with tok and returns the answer's status
// and body, for a token it refuses.
func listStatus(tb testing.TB, url, tok string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, url+apisim.Path, nil)
	require.NoError(tb, err)
	req.Header.Set("X-Access-Token", tok)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp.StatusCode, body
}

// TestSimOneAccountFile: `meetwatch sim` of one account serves its token
// as given, and --accounts-file names it acct-01 with that token.
func TestSimOneAccountFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "accounts.yaml")
	ctx, cancel := context.WithCancel(t.Context())
	stdout := &simtest.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"sim", "--addr", "127.0.0.1:0", "--churn", "0", "--meetings", "2", "--token", "one-token", "--accounts-file", file},
			nil, stdout, &simtest.Buffer{})
	}()
	defer func() {
		cancel()
		assert.Equal(t, exitOK, <-done)
	}()
	require.Eventually(t, func() bool { return simURL.MatchString(stdout.String()) }, eventWait, tick, "waiting for the simulator")
	m := simURL.FindStringSubmatch(stdout.String())
	assert.Equal(t, "one-token", m[2])
	assert.NotRegexp(t, simAccountLine, stdout.String(), "one account prints as it always did")
	assert.Len(t, listSim(t, m[1], "one-token"), 2)

	f := readAccountsFile(t, file)
	require.Len(t, f.Accounts, 1)
	assert.Equal(t, [3]string{"acct-01", m[1], "one-token"}, [3]string{f.Accounts[0].Name, f.Accounts[0].APIURL, f.Accounts[0].AccessToken})
}

// TestStartSimAccounts: the simulator of several accounts that a trial
// runs in-process beside the watcher gives each account's URL and token,
// each of which lists that account's meetings, and stops with its context.
func TestStartSimAccounts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	g, gctx := errgroup.WithContext(ctx)
	accts, err := startSimAccounts(gctx, g, 3, 2, 0, apisim.Options{Token: "trial", Seed: 9})
	require.NoError(t, err)
	require.Len(t, accts, 3)
	seen := map[string]bool{}
	for i, a := range accts {
		assert.Equal(t, []string{"acct-01", "acct-02", "acct-03"}[i], a.Name)
		assert.Equal(t, "trial-"+a.Name, a.AccessToken)
		for _, id := range uuidsOf(listSim(t, a.APIURL, a.AccessToken)) {
			assert.False(t, seen[id], "%s listed twice", id)
			seen[id] = true
		}
	}
	assert.Len(t, seen, 6)

	file := filepath.Join(t.TempDir(), "accounts.yaml")
	require.NoError(t, writeAccountsFile(file, accts))
	f := readAccountsFile(t, file)
	require.Len(t, f.Accounts, 3)
	assert.Equal(t, accts[2].AccessToken, f.Accounts[2].AccessToken)

	cancel()
	assert.NoError(t, g.Wait())
}

// TestSimAccountsFileLogin: the accounts file gives each account the login
// the simulator was asked to accept, so that a watcher of it rehearses
// that login; the token only when there is none.
func TestSimAccountsFileLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		base apisim.Options
		want simAccountEntry
	}{
		{name: "token", base: apisim.Options{Token: "t"},
			want: simAccountEntry{Name: "acct-02", APIURL: "http://sim", AccessToken: "t-acct-02"}},
		{name: "App ID", base: apisim.Options{Token: "t", AppID: "a", AppKey: "k", Account: "u", Password: "p"},
			want: simAccountEntry{Name: "acct-02", APIURL: "http://sim", AppID: "a-acct-02", AppKey: "k-acct-02"}},
		{name: "account", base: apisim.Options{Token: "t", Account: "u", Password: "p"},
			want: simAccountEntry{Name: "acct-02", APIURL: "http://sim", Account: "u-acct-02", Password: "p-acct-02"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fleet, err := newSimFleet(2, 0, tt.base)
			require.NoError(t, err)
			got := fleet.entries("http://sim")
			require.Len(t, got, 2)
			assert.Equal(t, tt.want, got[1])
		})
	}
}
