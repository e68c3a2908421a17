package main

// The accounts file: what a good one resolves to, and every way a bad one
// is refused at start, in one line naming the file.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// accountsEnv is a valid configuration for run with an accounts file of
// text and no login variable, reaching nothing should it be accepted.
func accountsEnv(t *testing.T, text string) (env map[string]string, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "accounts.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return map[string]string{
		"MEETWATCH_ACCOUNTS_FILE":        path,
		"MEETWATCH_EMBEDDED_NATS_LISTEN": "127.0.0.1:0",
		"MEETWATCH_DATA_DIR":             t.TempDir(),
		"MEETWATCH_HTTP_ADDR":            "",
	}, path
}

// secretFile writes a secret file and returns its path.
func secretFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// A file with every kind of login: secrets inline and from files (their
// trailing newline dropped), and what an account leaves out taken from
// the MEETWATCH_* variables.
func TestAccountsFileResolves(t *testing.T) {
	t.Parallel()
	key, password, token := secretFile(t, "k3y\n"), secretFile(t, "pa55\r\n"), secretFile(t, "t0ken")
	env, _ := accountsEnv(t, `
accounts:
  - name: acme
    access_token: tok-acme
  - name: sp-a
    api_url: https://api-intl.meeting.huaweicloud.com
    app_id: app
    app_key_file: `+key+`
    user_id: user-a
    corp_id: corp-a
    budget_group: sp-1
    api_rate: 50
    query_all: false
    poll_interval: 2s
  - name: sp-b
    api_url: https://api-intl.meeting.huaweicloud.com
    app_id: app
    app_key: k3y
    corp_id: corp-b
    budget_group: sp-1
    api_rate: 50
  - name: ops
    account: ops@example.com
    password_file: `+password+`
    api_rate: 0
  - name: 7-eleven
    access_token_file: `+token+`
  - name: digits
    account: "13800000000"
    password: 12345
`)
	env["MEETWATCH_API_RATE"] = "80"
	cfg, err := loadConfig(env, true)
	require.NoError(t, err)
	assert.Zero(t, cfg.PollTimeout, "unset, each account's is its own")
	accounts, err := loadAccounts(cfg)
	require.NoError(t, err)

	const apiURL, intl = "https://api.meeting.huaweicloud.com", "https://api-intl.meeting.huaweicloud.com"
	want := []account{
		{Name: "acme", APIURL: apiURL, AccessToken: redact.NewSecret("tok-acme"), QueryAll: true, APIRate: 80,
			PollInterval: 15 * time.Second, PollTimeout: 13500 * time.Millisecond},
		{Name: "sp-a", APIURL: intl, AppID: "app", AppKey: redact.NewSecret("k3y"), UserID: "user-a", CorpID: "corp-a", QueryAll: false,
			APIRate: 50, BudgetGroup: "sp-1", PollInterval: 2 * time.Second, PollTimeout: 1800 * time.Millisecond},
		{Name: "sp-b", APIURL: intl, AppID: "app", AppKey: redact.NewSecret("k3y"), CorpID: "corp-b", QueryAll: true,
			APIRate: 50, BudgetGroup: "sp-1", PollInterval: 15 * time.Second, PollTimeout: 13500 * time.Millisecond},
		{Name: "ops", APIURL: apiURL, Account: "ops@example.com", Password: redact.NewSecret("pa55"), QueryAll: true,
			APIRate: 0, PollInterval: 15 * time.Second, PollTimeout: 13500 * time.Millisecond},
		{Name: "7-eleven", APIURL: apiURL, AccessToken: redact.NewSecret("t0ken"), QueryAll: true, APIRate: 80,
			PollInterval: 15 * time.Second, PollTimeout: 13500 * time.Millisecond},
		{Name: "digits", APIURL: apiURL, Account: "13800000000", Password: redact.NewSecret("12345"), QueryAll: true, APIRate: 80,
			PollInterval: 15 * time.Second, PollTimeout: 13500 * time.Millisecond},
	}
	require.Len(t, accounts, len(want))
	for i, w := range want {
		got := accounts[i]
		assert.Equal(t, w, got, "account %s", w.Name)
		// Secrets compare by value: every printed form hides them.
		assert.Equal(t, w.AccessToken.Reveal(), got.AccessToken.Reveal(), "%s: access token", w.Name)
		assert.Equal(t, w.AppKey.Reveal(), got.AppKey.Reveal(), "%s: app key", w.Name)
		assert.Equal(t, w.Password.Reveal(), got.Password.Reveal(), "%s: password", w.Name)
	}

	// An account's settings are a configuration its watcher takes.
	sp := accounts[1].settings(cfg)
	assert.Equal(t, intl, sp.APIURL)
	assert.Equal(t, "app", sp.AppID)
	assert.Equal(t, "k3y", sp.AppKey.Reveal())
	assert.Equal(t, "corp-a", sp.CorpID)
	assert.False(t, sp.QueryAll)
	assert.Equal(t, 50, sp.APIRate)
	assert.Equal(t, 2*time.Second, sp.PollInterval)
	assert.Equal(t, 1800*time.Millisecond, sp.PollTimeout)
	assert.Equal(t, cfg.Stream, sp.Stream)
	assert.Equal(t, "sp-a.", accounts[1].statePrefix())

	// MEETWATCH_POLL_TIMEOUT, when set, is every account's.
	env["MEETWATCH_POLL_TIMEOUT"] = "40s"
	cfg, err = loadConfig(env, true)
	require.NoError(t, err)
	accounts, err = loadAccounts(cfg)
	require.NoError(t, err)
	assert.Equal(t, 40*time.Second, accounts[1].PollTimeout)

	// Without the file, the variables' own defaults stand.
	delete(env, "MEETWATCH_ACCOUNTS_FILE")
	delete(env, "MEETWATCH_POLL_TIMEOUT")
	env["MEETWATCH_ACCESS_TOKEN"] = "t"
	cfg, err = loadConfig(env, true)
	require.NoError(t, err)
	assert.Equal(t, 13500*time.Millisecond, cfg.PollTimeout)

	// Only run and check read the file: the readers of the stream and the state
	// need none of it.
	env["MEETWATCH_ACCOUNTS_FILE"] = filepath.Join(t.TempDir(), "missing.yaml")
	_, err = loadConfig(env, false)
	assert.NoError(t, err)

	help := runInProcess(t, nil, "run", "--help")
	assert.Contains(t, help.stdout.String(), "MEETWATCH_ACCOUNTS_FILE")
}

// TestBadAccountsFileExits2: whatever is wrong with the accounts file,
// run exits 2 at start with one line naming the variable, the file and
// the problem.
func TestBadAccountsFileExits2(t *testing.T) {
	t.Parallel()
	account := func(lines ...string) string {
		return "accounts:\n  - name: acme\n    access_token: t\n  - " + strings.Join(lines, "\n    ") + "\n"
	}
	tests := []struct {
		name string
		file string
		want string
	}{
		{name: "not YAML", file: "accounts: [\n", want: "not YAML"},
		{name: "tabs", file: "accounts:\n\t- name: acme\n", want: "not YAML"},
		{name: "empty", file: "", want: "no accounts"},
		{name: "no list", file: "accounts:\n", want: "no accounts"},
		{name: "an empty list", file: "accounts: []\n", want: "no accounts"},
		{name: "a list of something else", file: "accounts: {acme: 1}\n", want: "accounts (line 1): want a list"},
		{name: "an account that is not a mapping", file: "accounts:\n  - acme\n", want: "account 1 (line 2): want a mapping"},
		{name: "unknown key at the top", file: "account:\n  - name: acme\n", want: `unknown key "account" (line 1)`},
		{name: "duplicate name", file: account("name: acme", "access_token: u"), want: `account "acme": the name is taken by account 1`},
		{name: "no name", file: account("access_token: u"), want: "account 2 (line 4): no name"},
		{name: "name in capitals", file: account("name: Acme", "access_token: u"), want: `name "Acme": use up to 32 lowercase letters`},
		{name: "name with an underscore", file: account("name: a_b", "access_token: u"), want: `name "a_b"`},
		{name: "name too long", file: account("name: "+strings.Repeat("a", 33), "access_token: u"), want: "use up to 32"},
		{name: "name starting with -", file: account("name: -a", "access_token: u"), want: `name "-a"`},
		{name: "name of a kind", file: account("name: ended", "access_token: u"), want: `name "ended": an event kind`},
		{name: "name of the state's keys", file: account("name: m", "access_token: u"), want: `name "m": reserved`},
		{name: "no login", file: account("name: beta", "query_all: true"), want: `account "beta": no login`},
		{name: "two logins", file: account("name: beta", "access_token: u", "app_id: a", "app_key: k"), want: "two logins (access_token and app_id)"},
		{name: "three logins", file: account("name: beta", "access_token: u", "app_id: a", "app_key: k", "account: x", "password: p"), want: "two logins (access_token and app_id and account)"},
		{name: "app_id without app_key", file: account("name: beta", "app_id: a"), want: "app_id without app_key"},
		{name: "app_key without app_id", file: account("name: beta", "app_key: k"), want: "app_key without app_id"},
		{name: "account without password", file: account("name: beta", "account: x"), want: "account without password"},
		{name: "password without account", file: account("name: beta", "password: p"), want: "password without account"},
		{name: "corp_id without app_id", file: account("name: beta", "access_token: u", "corp_id: c"), want: "user_id and corp_id go with app_id"},
		{name: "a secret inline and from a file", file: account("name: beta", "access_token: u", "access_token_file: /etc/hostname"), want: "access_token and access_token_file: give one"},
		{name: "unknown key", file: account("name: beta", "access_token: u", "api-url: http://x"), want: `account "beta": unknown key "api-url" (line 6)`},
		{name: "unknown key before the name", file: account("tokn: u", "name: beta"), want: `account "beta": unknown key "tokn"`},
		{name: "a key twice", file: account("name: beta", "access_token: u", "access_token: v"), want: `account "beta": line 6: mapping key "access_token" already defined at line 5`},
		{name: "bad api_url", file: account("name: beta", "access_token: u", "api_url: ftp://x"), want: `api_url: want an http(s)://host URL, got "ftp://x"`},
		{name: "poll_interval not a duration", file: account("name: beta", "access_token: u", "poll_interval: soon"), want: `poll_interval "soon": want a Go duration`},
		{name: "poll_interval too short", file: account("name: beta", "access_token: u", "poll_interval: 10ms"), want: "poll_interval: must be at least 100ms"},
		{name: "negative api_rate", file: account("name: beta", "access_token: u", "api_rate: -1"), want: "api_rate: must be a number of requests per minute"},
		{name: "api_rate not a number", file: account("name: beta", "access_token: u", "api_rate: many"), want: "cannot unmarshal !!str `many` into int"},
		{name: "query_all not a bool", file: account("name: beta", "access_token: u", "query_all: maybe"), want: "into bool"},
		{name: "bad budget_group", file: account("name: beta", "access_token: u", "budget_group: SP 1"), want: `budget_group "SP 1"`},
		{name: "secret file missing", file: account("name: beta", "access_token_file: /nonexistent/token"), want: "access_token_file: open /nonexistent/token: no such file or directory"},
		{
			name: "budget group on two APIs",
			file: account("name: beta", "access_token: u", "budget_group: sp-1") + "  - name: gamma\n    access_token: v\n    budget_group: sp-1\n    api_url: https://api-intl.meeting.huaweicloud.com\n",
			want: `budget_group "sp-1": accounts "beta" and "gamma" differ in api_url`,
		},
		{
			name: "budget group of two rates",
			file: account("name: beta", "access_token: u", "budget_group: sp-1", "api_rate: 60") + "  - name: gamma\n    access_token: v\n    budget_group: sp-1\n",
			want: `budget_group "sp-1": accounts "beta" and "gamma" differ in api_rate (60, 100)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, path := accountsEnv(t, tt.file)
			mw := rejectsConfiguration(t, env, "run")
			stderr := mw.stderr.String()
			assert.Contains(t, stderr, "meetwatch: configuration: MEETWATCH_ACCOUNTS_FILE: "+path+": ")
			assert.Contains(t, stderr, tt.want)
			assert.Empty(t, mw.stdout.String())
		})
	}

	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		env, path := accountsEnv(t, "")
		path += ".missing"
		env["MEETWATCH_ACCOUNTS_FILE"] = path
		mw := rejectsConfiguration(t, env, "run")
		assert.Contains(t, mw.stderr.String(), "MEETWATCH_ACCOUNTS_FILE: open "+path+": no such file or directory")
	})
}

// With an accounts file, the single account's login variables must be
// unset: both at once is exit 2, naming the file's variable and every
// login variable set, and no secret.
func TestAccountsFileAndLoginVariables(t *testing.T) {
	t.Parallel()
	env, _ := accountsEnv(t, "accounts:\n  - name: acme\n    access_token: t\n")
	env["MEETWATCH_ACCESS_TOKEN"] = "single-token"
	env["MEETWATCH_CORP_ID"] = "corp"
	env["MEETWATCH_PASSWORD"] = "single-password"
	mw := rejectsConfiguration(t, env, "run")
	stderr := mw.stderr.String()
	assert.Contains(t, stderr, "MEETWATCH_ACCOUNTS_FILE and MEETWATCH_ACCESS_TOKEN, MEETWATCH_CORP_ID, MEETWATCH_PASSWORD: both set")
	assert.NotContains(t, stderr, "single-token")
	assert.NotContains(t, stderr, "single-password")
}
