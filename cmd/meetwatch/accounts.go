package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
)

// accountsFile is the file MEETWATCH_ACCOUNTS_FILE names, as written: the
// accounts one deployment watches, each with its own login and request
// budget. Every other setting stays in MEETWATCH_* variables and applies
// to all of them.
type accountsFile struct {
	Accounts []accountEntry `yaml:"accounts"`
}

// accountEntry is one account as the file writes it. A key left out takes
// the MEETWATCH_* variable's value: the pointers tell a key set to false
// or 0 from one left out.
type accountEntry struct {
	Name            string        `yaml:"name"`
	APIURL          string        `yaml:"api_url"`
	AccessToken     redact.Secret `yaml:"access_token"`
	AccessTokenFile string        `yaml:"access_token_file"`
	AppID           string        `yaml:"app_id"`
	AppKey          redact.Secret `yaml:"app_key"`
	AppKeyFile      string        `yaml:"app_key_file"`
	UserID          string        `yaml:"user_id"`
	CorpID          string        `yaml:"corp_id"`
	Account         string        `yaml:"account"`
	Password        redact.Secret `yaml:"password"`
	PasswordFile    string        `yaml:"password_file"`
	QueryAll        *bool         `yaml:"query_all"`
	APIRate         *int          `yaml:"api_rate"`
	BudgetGroup     string        `yaml:"budget_group"`
	PollInterval    string        `yaml:"poll_interval"`
}

// account is one account of the file, resolved: the defaults of the
// MEETWATCH_* variables applied, secrets read from their files, checked.
// The runner polls it with settings(cfg), its state under statePrefix,
// and its events under its Name (publish.Config.Account,
// events.Builder.Account, events.AccountSource).
type account struct {
	// Name is the account's name: unique in the file, a token of its
	// subjects (<prefix>.<name>.<kind>.<confUUID>) and the prefix of its
	// keys in the state bucket (<name>.m.<confUUID>).
	Name   string
	APIURL string
	// Exactly one login is set, as with the MEETWATCH_* logins: the
	// static token, App ID and key (with UserID and CorpID, optional), or
	// account and password.
	AccessToken redact.Secret
	AppID       string
	AppKey      redact.Secret
	UserID      string
	CorpID      string
	Account     string
	Password    redact.Secret
	QueryAll    bool
	// APIRate is the account's request budget, requests per minute; 0
	// for none. The accounts of one BudgetGroup share one budget of this
	// rate, and so agree on it and on APIURL.
	APIRate     int
	BudgetGroup string
	// PollInterval is the time between the starts of two polls, and
	// PollTimeout the least time the API part of a poll gets:
	// MEETWATCH_POLL_TIMEOUT, or 90% of the account's interval when that
	// is unset.
	PollInterval time.Duration
	PollTimeout  time.Duration
}

// accountName is what an account's name, and a budget group's, may be:
// a token of a NATS subject and of a key-value key, short enough to read
// in a log line.
var accountName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// accountsError returns the error of a bad accounts file: one line,
// naming the variable, the file and what is wrong, exit 2.
func accountsError(path, format string, args ...any) *configError {
	return bad("AccountsFile", "%s: %s", path, fmt.Sprintf(format, args...))
}

// loadAccounts reads and checks the accounts file cfg names, applying the
// defaults of cfg's variables to what an account leaves out: what the
// runner calls at start and on every reload, with the configuration
// loadConfig returned (whose PollTimeout is 0 when the variable is
// unset). Every error is a *configError, whose one line names the file
// and what is wrong.
func loadAccounts(cfg config) ([]account, error) {
	path := cfg.AccountsFile
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, bad("AccountsFile", "%v", err) // the error names the file
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, accountsError(path, "not YAML: %s", oneLineYAMLError(err))
	}
	list, err := accountNodes(&doc)
	if err != nil {
		return nil, accountsError(path, "%v", err)
	}
	known := yamlKeys(reflect.TypeFor[accountEntry]())
	accounts := make([]account, 0, len(list))
	for i, n := range list {
		if n.Kind != yaml.MappingNode {
			return nil, accountsError(path, "account %d (line %d): want a mapping of keys such as name: and access_token:", i+1, n.Line)
		}
		who := describeAccount(n, i)
		for j := 0; j+1 < len(n.Content); j += 2 {
			if k := n.Content[j].Value; !slices.Contains(known, k) {
				return nil, accountsError(path, "%s: unknown key %q (line %d)", who, k, n.Content[j].Line)
			}
		}
		var e accountEntry
		if err := n.Decode(&e); err != nil {
			return nil, accountsError(path, "%s: %s", who, oneLineYAMLError(err))
		}
		a, err := resolveAccount(e, cfg)
		if err != nil {
			return nil, accountsError(path, "%s: %v", who, err)
		}
		if j := slices.IndexFunc(accounts, func(o account) bool { return o.Name == a.Name }); j >= 0 {
			return nil, accountsError(path, "%s: the name is taken by account %d: names must be unique", who, j+1)
		}
		accounts = append(accounts, a)
	}
	if err := sameBudgets(accounts); err != nil {
		return nil, accountsError(path, "%v", err)
	}
	if err := distinctUnits(accounts); err != nil {
		return nil, accountsError(path, "%v", err)
	}
	return accounts, nil
}

// accountNodes returns the items of the file's accounts list.
func accountNodes(doc *yaml.Node) ([]*yaml.Node, error) {
	if len(doc.Content) == 0 {
		return nil, errors.New("no accounts: the file is empty; list them under accounts:")
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping with the list accounts:")
	}
	var list *yaml.Node
	for j := 0; j+1 < len(top.Content); j += 2 {
		switch k := top.Content[j].Value; k {
		case "accounts":
			list = top.Content[j+1]
		default:
			return nil, fmt.Errorf("unknown key %q (line %d): the file holds the list accounts: and nothing else", k, top.Content[j].Line)
		}
	}
	switch {
	case list == nil || list.Tag == "!!null":
		return nil, errors.New("no accounts: list them under accounts:")
	case list.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("accounts (line %d): want a list", list.Line)
	case len(list.Content) == 0:
		return nil, errors.New("no accounts: the list accounts: is empty")
	}
	return list.Content, nil
}

// describeAccount names an account in errors: by its name when it has
// one, or by its place in the list and its line.
func describeAccount(n *yaml.Node, i int) string {
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == "name" && n.Content[j+1].Kind == yaml.ScalarNode && n.Content[j+1].Value != "" {
			return fmt.Sprintf("account %q", n.Content[j+1].Value)
		}
	}
	return fmt.Sprintf("account %d (line %d)", i+1, n.Line)
}

// yamlKeys returns the keys of a struct's yaml tags.
func yamlKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
	}
	return keys
}

// oneLineYAMLError joins the lines of a YAML error ("yaml: unmarshal
// errors:\n  line 3: ...") into one, for a message of one line.
func oneLineYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, "; ")
}

// resolveAccount checks one account and applies cfg's defaults to it.
func resolveAccount(e accountEntry, cfg config) (account, error) {
	if err := validAccountName(e.Name); err != nil {
		return account{}, err
	}
	a := account{
		Name:        e.Name,
		APIURL:      cmp.Or(e.APIURL, cfg.APIURL),
		AppID:       e.AppID,
		UserID:      e.UserID,
		CorpID:      e.CorpID,
		Account:     e.Account,
		QueryAll:    cfg.QueryAll,
		APIRate:     cfg.APIRate,
		BudgetGroup: e.BudgetGroup,
	}
	if _, err := meetingapi.ParseBaseURL(a.APIURL); err != nil {
		return account{}, fmt.Errorf("api_url: want an http(s)://host URL, got %q", redact.URL(a.APIURL))
	}
	var err error
	if a.AccessToken, err = secret("access_token", e.AccessToken, e.AccessTokenFile); err != nil {
		return account{}, err
	}
	if a.AppKey, err = secret("app_key", e.AppKey, e.AppKeyFile); err != nil {
		return account{}, err
	}
	if a.Password, err = secret("password", e.Password, e.PasswordFile); err != nil {
		return account{}, err
	}
	if err := a.validateLogin(e); err != nil {
		return account{}, err
	}
	if e.QueryAll != nil {
		a.QueryAll = *e.QueryAll
	}
	if e.APIRate != nil {
		a.APIRate = *e.APIRate
	}
	if a.APIRate < 0 {
		return account{}, fmt.Errorf("api_rate: must be a number of requests per minute, or 0 for no budget; got %d", a.APIRate)
	}
	if e.BudgetGroup != "" && !accountName.MatchString(e.BudgetGroup) {
		return account{}, fmt.Errorf("budget_group %q: use up to 32 lowercase letters, digits and -, starting with a letter or digit", e.BudgetGroup)
	}
	a.PollInterval = cfg.PollInterval
	if e.PollInterval != "" {
		if a.PollInterval, err = time.ParseDuration(e.PollInterval); err != nil {
			return account{}, fmt.Errorf("poll_interval %q: want a Go duration such as 15s or 1m30s", e.PollInterval)
		}
	}
	if a.PollInterval < 100*time.Millisecond {
		return account{}, fmt.Errorf("poll_interval: must be at least 100ms, got %s", a.PollInterval)
	}
	a.PollTimeout = cmp.Or(cfg.PollTimeout, a.PollInterval*9/10) // as MEETWATCH_POLL_TIMEOUT's default
	return a, nil
}

// validAccountName says what is wrong with an account's name, if
// anything. The names of the event kinds are refused, so that
// <prefix>.ended.> never selects an account's events, and so are m and e,
// whose keys in the state bucket would read as a meeting's.
func validAccountName(name string) error {
	switch {
	case name == "":
		return errors.New("no name: give each account a name:")
	case !accountName.MatchString(name):
		return fmt.Errorf("name %q: use up to 32 lowercase letters, digits and -, starting with a letter or digit", name)
	case slices.Contains([]events.Kind{events.Started, events.Changed, events.Ended}, events.Kind(name)):
		return fmt.Errorf("name %q: an event kind, which would read as one in subjects; choose another", name)
	}
	if err := kvstore.ValidPrefix(name + "."); err != nil {
		return fmt.Errorf("name %q: reserved: %w", name, err)
	}
	return nil
}

// secret returns a secret given inline under key, or read from the file
// under key_file, its trailing newline dropped; zero when neither is
// given.
func secret(key string, inline redact.Secret, file string) (redact.Secret, error) {
	switch {
	case file == "":
		return inline, nil
	case !inline.IsZero():
		return redact.Secret{}, fmt.Errorf("%s and %s_file: give one", key, key)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return redact.Secret{}, fmt.Errorf("%s_file: %w", key, err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return redact.Secret{}, fmt.Errorf("%s_file: %s is empty", key, file)
	}
	return redact.NewSecret(string(b)), nil
}

// validateLogin checks that exactly one login is given, and whole.
func (a account) validateLogin(e accountEntry) error {
	var set []string
	if !a.AccessToken.IsZero() {
		set = append(set, "access_token")
	}
	if a.AppID != "" || !a.AppKey.IsZero() {
		set = append(set, "app_id")
	}
	if a.Account != "" || !a.Password.IsZero() {
		set = append(set, "account")
	}
	switch {
	case len(set) == 0:
		return errors.New("no login: give access_token, app_id and app_key, or account and password (a secret may come from a file: access_token_file, app_key_file, password_file)")
	case len(set) > 1:
		return fmt.Errorf("two logins (%s): keep exactly one", strings.Join(set, " and "))
	case a.AppID != "" && a.AppKey.IsZero():
		return errors.New("app_id without app_key (or app_key_file)")
	case a.AppID == "" && !a.AppKey.IsZero():
		return errors.New("app_key without app_id")
	case a.Account != "" && a.Password.IsZero():
		return errors.New("account without password (or password_file)")
	case a.Account == "" && !a.Password.IsZero():
		return errors.New("password without account")
	case (e.UserID != "" || e.CorpID != "") && a.AppID == "":
		return errors.New("user_id and corp_id go with app_id")
	}
	return nil
}

// sameBudgets checks that the accounts of each budget group agree on
// what their one budget is: the API it is spent on, and its rate.
func sameBudgets(accounts []account) error {
	first := map[string]account{}
	for _, a := range accounts {
		if a.BudgetGroup == "" {
			continue
		}
		f, ok := first[a.BudgetGroup]
		switch {
		case !ok:
			first[a.BudgetGroup] = a
		case f.APIURL != a.APIURL:
			return fmt.Errorf("budget_group %q: accounts %q and %q differ in api_url (%s, %s): the accounts of a budget group share one budget, on one API",
				a.BudgetGroup, f.Name, a.Name, redact.URL(f.APIURL), redact.URL(a.APIURL))
		case f.APIRate != a.APIRate:
			return fmt.Errorf("budget_group %q: accounts %q and %q differ in api_rate (%d, %d): the accounts of a budget group share one budget, of one rate",
				a.BudgetGroup, f.Name, a.Name, f.APIRate, a.APIRate)
		}
	}
	return nil
}

// distinctUnits checks that no budget group is named as an account
// outside it: a group and an account without one are each a unit of
// placement under their name (see account.unit), and one name for both
// would join them, and their budgets, into one.
func distinctUnits(accounts []account) error {
	for _, a := range accounts {
		if a.BudgetGroup == "" || a.BudgetGroup == a.Name {
			continue
		}
		for _, o := range accounts {
			if o.Name == a.BudgetGroup && o.BudgetGroup != a.BudgetGroup {
				return fmt.Errorf("budget_group %q of account %q: the name of account %q, which is not in the group: a group and an account move among the replicas under their names, so give them names of their own",
					a.BudgetGroup, a.Name, o.Name)
			}
		}
	}
	return nil
}

// unit is the unit of placement the account moves among the replicas
// with: its budget group, whose accounts share one budget and so move as
// one, or the account alone.
func (a account) unit() string { return cmp.Or(a.BudgetGroup, a.Name) }

// settings returns base, a valid configuration, with the account's API
// settings in place of the MEETWATCH_* ones: its URL, login, listing,
// budget and interval. What takes a config (tokenSource, newAPIClient,
// the budget) serves the account with it.
func (a account) settings(base config) config {
	c := base
	c.APIURL = a.APIURL
	c.AccessToken, c.AppID, c.AppKey, c.UserID, c.CorpID = a.AccessToken, a.AppID, a.AppKey, a.UserID, a.CorpID
	c.Account, c.Password = a.Account, a.Password
	c.QueryAll = a.QueryAll
	c.APIRate = a.APIRate
	c.PollInterval, c.PollTimeout = a.PollInterval, a.PollTimeout
	return c
}

// statePrefix is the prefix of the account's keys in the state bucket
// (kvstore.Config.Prefix).
func (a account) statePrefix() string { return a.Name + "." }

// loginVariables returns the single-account login variables that are
// set, which an accounts file replaces.
func (c config) loginVariables() []string {
	var set []string
	for _, f := range []struct {
		field string
		isSet bool
	}{
		{"AccessToken", !c.AccessToken.IsZero()},
		{"AppID", c.AppID != ""},
		{"AppKey", !c.AppKey.IsZero()},
		{"UserID", c.UserID != ""},
		{"CorpID", c.CorpID != ""},
		{"Account", c.Account != ""},
		{"Password", !c.Password.IsZero()},
	} {
		if f.isSet {
			set = append(set, varName(f.field))
		}
	}
	return set
}

// subjectFilterError says what is wrong with a NATS subject filter given
// on the command line, if anything: tokens that are not empty and hold no
// white space, * and > only as whole tokens, and > only last. Which
// subjects it may select is the server's to say.
func subjectFilterError(filter string) error {
	toks := strings.Split(filter, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return errors.New("an empty token: write tokens joined by single dots, such as meetings.acme.>")
		case strings.ContainsAny(tok, " \t\r\n"):
			return errors.New("white space in a subject")
		case tok == ">" && i < len(toks)-1:
			return errors.New("> stands only last")
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return errors.New("* and > stand only as whole tokens")
		}
	}
	return nil
}
