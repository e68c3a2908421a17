package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
)

// envPrefix starts every configuration variable.
const envPrefix = "MEETWATCH_"

// config is every setting, read from MEETWATCH_* environment variables.
// Each field's desc tag says what the variable means, for `meetwatch run
// --help`; help, when set, says in words what unset means, where
// envDefault cannot.
type config struct {
	APIURL             string        `env:"API_URL" envDefault:"https://api.meeting.huaweicloud.com" desc:"the meeting API's base URL (https://api-intl.meeting.huaweicloud.com for ap-southeast-1)"`
	AccessToken        redact.Secret `env:"ACCESS_TOKEN" desc:"a static X-Access-Token, one of the three ways to log in; it expires within 12-24 h, so use it for trials"`
	AppID              string        `env:"APP_ID" desc:"App ID login: the App ID, with MEETWATCH_APP_KEY"`
	AppKey             redact.Secret `env:"APP_KEY" desc:"App ID login: the App key"`
	UserID             string        `env:"USER_ID" desc:"optional, with App ID login: log in as this user"`
	CorpID             string        `env:"CORP_ID" desc:"optional, with App ID login: log in to this tenant"`
	Account            string        `env:"ACCOUNT" desc:"account login: the account, with MEETWATCH_PASSWORD"`
	Password           redact.Secret `env:"PASSWORD" desc:"account login: the account's password"`
	AccountsFile       string        `env:"ACCOUNTS_FILE" desc:"a YAML file of the accounts to watch, each with its own login, API URL, budget and interval (docs/operations.md, Running many accounts); with it, the login variables above stay unset; SIGHUP reads it again"`
	AccountConcurrency int           `env:"ACCOUNT_CONCURRENCY" envDefault:"16" desc:"with MEETWATCH_ACCOUNTS_FILE, how many accounts' listings run at once, 1 to 1024; the others wait for a slot within their own poll deadline"`
	APIRate            int           `env:"API_RATE" envDefault:"100" desc:"client-side request budget, requests per minute, shared by pages, end lookups and logins; 0 for none"`
	PollInterval       time.Duration `env:"POLL_INTERVAL" envDefault:"15s" desc:"time between the starts of two polls, at least 100ms"`
	PollTimeout        time.Duration `env:"POLL_TIMEOUT" help:"90% of MEETWATCH_POLL_INTERVAL" desc:"the least time the API part of a poll gets (listing and end lookups); a listing whose first page shows that it needs longer gets that"`
	PageSize           int           `env:"PAGE_SIZE" envDefault:"500" desc:"records per page, 1 to 500"`
	PageOverlap        int           `env:"PAGE_OVERLAP" envDefault:"20" desc:"records each page re-reads of the one before, so the list may shift that much between pages (at most half a page); 0: pages meet end to end"`
	PageConcurrency    int           `env:"PAGE_CONCURRENCY" envDefault:"4" desc:"pages fetched at once after the first, and end lookups a poll sends at once, 1 to 64"`
	RequestTimeout     time.Duration `env:"REQUEST_TIMEOUT" envDefault:"30s" desc:"deadline of one HTTP request to the API"`
	QueryAll           bool          `env:"QUERY_ALL" envDefault:"true" desc:"list every user's meetings (needs an enterprise admin's token); false for the user's own"`
	SearchKey          string        `env:"SEARCH_KEY" desc:"only the meetings the API's searchKey matches (subject, scheduler or meeting ID); ends then come with the next listing, not a lookup"`
	NATSURL            string        `env:"NATS_URL" help:"empty, meaning an embedded server with its files in MEETWATCH_DATA_DIR" desc:"NATS server URLs, comma-separated"`
	NATSAuth                         // MEETWATCH_NATS_CREDS, _NKEY, _USER, _PASSWORD, _TOKEN, _CA, _CERT, _KEY
	HA                               // MEETWATCH_REPLICAS, _LEASE_TTL, _LEASE_BUCKET, _REPLICA_ID, _HTTP_ADDR
	EmbeddedListen     string        `env:"EMBEDDED_NATS_LISTEN" envDefault:"127.0.0.1:4222" desc:"where the embedded NATS server listens, when MEETWATCH_NATS_URL is empty"`
	DataDir            string        `env:"DATA_DIR" envDefault:"./meetwatch-data" desc:"the embedded NATS server's JetStream files, when MEETWATCH_NATS_URL is empty"`
	SubjectPrefix      string        `env:"SUBJECT_PREFIX" envDefault:"meetings" desc:"the first token(s) of every event's subject, <prefix>.<kind>.<confUUID>"`
	Stream             string        `env:"STREAM" envDefault:"MEETINGS" desc:"the JetStream stream of the events, created or updated at start"`
	StateBucket        string        `env:"STATE_BUCKET" envDefault:"meetwatch-state" desc:"the key-value bucket holding the last committed snapshot"`
	ViewBucket         string        `env:"VIEW_BUCKET" help:"meetings-now; set empty to keep no view" desc:"the key-value bucket of the meetings going on now, one key each, for consumers to watch; meetwatch ls reads it"`
	DuplicateWindow    time.Duration `env:"DUPLICATE_WINDOW" envDefault:"1h" desc:"the stream's deduplication window, at least 10m so that a restart fits in it"`
	StreamMaxAge       time.Duration `env:"STREAM_MAX_AGE" envDefault:"720h" desc:"how long the stream keeps events (720h is 30 days); 0 keeps them until removed by hand, otherwise at least the duplicate window"`
	Redact             string        `env:"REDACT" desc:"field paths, comma-separated, removed from published records; none to publish records whole"`
	SealKey            redact.Secret `env:"SEAL_KEY" desc:"the key, at least 16 bytes, of the digests that stand for secrets in the state bucket; set it, or MEETWATCH_SEAL_KEY_FILE, in production"`
	SealKeyFile        string        `env:"SEAL_KEY_FILE" desc:"a file holding the key of MEETWATCH_SEAL_KEY, instead of the variable"`
	APITimeZone        string        `env:"API_TIME_ZONE" envDefault:"UTC" desc:"the IANA zone (e.g. Asia/Shanghai) the API writes a meeting's startTime in, for the events' data.startedAt; the API echoes UTC"`
	IgnoreFields       string        `env:"IGNORE_FIELDS" desc:"field paths, comma-separated, whose changes alone publish no changed event (e.g. onlineAttendeeAmount)"` // snapshot.ParseFieldSet
	LogLevel           string        `env:"LOG_LEVEL" envDefault:"info" desc:"debug, info, warn or error"`
	LogFormat          string        `env:"LOG_FORMAT" envDefault:"text" desc:"text or json, to standard error"`
}

// minDuplicateWindow is the shortest deduplication window accepted: a
// restart must fit inside it, or a re-published event would count twice.
const minDuplicateWindow = 10 * time.Minute

// configError names the variable at fault; main prints it as one line and
// exits 2.
type configError struct {
	Var string
	Msg string
}

func (e *configError) Error() string { return e.Var + ": " + e.Msg }

func bad(field, format string, args ...any) *configError {
	return &configError{Var: varName(field), Msg: fmt.Sprintf(format, args...)}
}

// varName returns the environment variable behind a config field.
func varName(field string) string {
	f, ok := reflect.TypeFor[config]().FieldByName(field)
	if !ok {
		return field
	}
	return envPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
}

var (
	streamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	subjectTok = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// loadConfig reads the configuration from environ and checks it. forRun adds
// the checks only the watcher needs, so that `tail` runs without a token,
// and reads the accounts file, if any. With the file, PollTimeout stays 0
// when unset: each account's default is 90% of its own interval (see
// loadAccounts).
func loadConfig(environ map[string]string, forRun bool) (config, error) {
	var c config
	err := env.ParseWithOptions(&c, env.Options{Prefix: envPrefix, Environment: environ})
	if err != nil {
		var pe env.ParseError
		if errors.As(err, &pe) {
			return c, &configError{Var: varName(pe.Name), Msg: fmt.Sprintf("invalid value %q: %s", environ[varName(pe.Name)], want(pe))}
		}
		return c, &configError{Var: envPrefix + "*", Msg: err.Error()}
	}
	if _, set := environ[envPrefix+"HTTP_ADDR"]; !set {
		c.HTTPAddr = defaultHTTPAddr
	}
	if _, set := environ[envPrefix+"VIEW_BUCKET"]; !set {
		c.ViewBucket = events.DefaultViewBucket // set empty, it turns the view off
	}
	if err := c.validate(forRun); err != nil {
		return c, err
	}
	if forRun && c.AccountsFile != "" {
		// A bad file is exit 2 before anything starts. The runner reads
		// the accounts itself, with loadAccounts, at start and on every
		// reload.
		if _, err := loadAccounts(c); err != nil {
			return c, err
		}
	}
	if c.PollTimeout == 0 && c.AccountsFile == "" {
		c.PollTimeout = c.PollInterval * 9 / 10 // what the help says
	}
	return c, nil
}

// apiZone returns the zone of MEETWATCH_API_TIME_ZONE.
func (c config) apiZone() (*time.Location, error) {
	z, err := time.LoadLocation(c.APITimeZone)
	if err != nil || c.APITimeZone == "" || c.APITimeZone == "Local" {
		// "" and "Local" would be the machine's zone: one replica's
		// startedAt would then differ from another's.
		return nil, fmt.Errorf("%q: want an IANA zone such as UTC or Asia/Shanghai", c.APITimeZone)
	}
	return z, nil
}

// loopGrace is how long past the deadline the poll loop last reported
// /healthz still calls it alive: a whole backoff at its longest, and a
// request or a listing slower than its own deadline.
func (c config) loopGrace() time.Duration {
	return 3*c.PollInterval + 2*max(c.PollTimeout, c.RequestTimeout)
}

// want says what a variable of the field's type accepts.
func want(pe env.ParseError) string {
	switch {
	case pe.Type == reflect.TypeFor[time.Duration]():
		return "want a Go duration such as 15s or 1m30s"
	case pe.Type.Kind() == reflect.Bool:
		return "want true or false"
	case pe.Type.Kind() == reflect.Int:
		return "want a whole number"
	default:
		return pe.Err.Error()
	}
}

// natsURLError says what is wrong with one server URL of MEETWATCH_NATS_URL,
// if anything: the client takes host:port alone for nats://host:port, and
// otherwise a nats, tls, ws or wss URL with a host.
func natsURLError(u string) error {
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("invalid URL %q", redact.URL(u))
	case p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss":
		return fmt.Errorf("%q: want a nats://, tls://, ws:// or wss:// URL", redact.URL(u))
	case p.Hostname() == "":
		return fmt.Errorf("%q: no host", redact.URL(u))
	}
	return nil
}

func (c config) validate(forRun bool) error {
	if err := validPrefix(c.SubjectPrefix); err != nil {
		return bad("SubjectPrefix", "%v", err)
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if err := natsURLError(strings.TrimSpace(u)); err != nil {
				return bad("NATSURL", "%v", err)
			}
		}
		if err := c.NATSAuth.Validate(); err != nil { // the embedded server takes none
			return err
		}
	}
	if !streamName.MatchString(c.Stream) {
		return bad("Stream", "%q: use letters, digits, - and _", c.Stream)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return bad("LogLevel", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("LogFormat", "want text or json, got %q", c.LogFormat)
	}
	if _, err := c.apiZone(); err != nil {
		return bad("APITimeZone", "%v", err)
	}
	if c.ViewBucket != "" && !streamName.MatchString(c.ViewBucket) {
		return bad("ViewBucket", "%q: use letters, digits, - and _, or set it empty for no view", c.ViewBucket)
	}
	if !forRun {
		return nil
	}
	_, err := meetingapi.ParseBaseURL(c.APIURL)
	switch {
	case err != nil:
		return bad("APIURL", "want an http(s)://host URL, got %q", redact.URL(c.APIURL))
	case c.PollInterval < 100*time.Millisecond:
		return bad("PollInterval", "must be at least 100ms, got %s", c.PollInterval)
	case c.PollTimeout < 0:
		return bad("PollTimeout", "must not be negative")
	case c.PageOverlap < 0:
		return bad("PageOverlap", "must be 0 (pages meet end to end) or more, got %d", c.PageOverlap)
	case c.PageSize < 1 || c.PageSize > meetingapi.MaxPageSize:
		return bad("PageSize", "must be 1 to %d, got %d", meetingapi.MaxPageSize, c.PageSize)
	case c.PageConcurrency < 1 || c.PageConcurrency > 64:
		return bad("PageConcurrency", "must be 1 to 64, got %d", c.PageConcurrency)
	case c.RequestTimeout <= 0:
		return bad("RequestTimeout", "must be positive")
	case len([]rune(c.SearchKey)) > 128:
		return bad("SearchKey", "at most 128 characters")
	case !streamName.MatchString(c.StateBucket):
		return bad("StateBucket", "%q: use letters, digits, - and _", c.StateBucket)
	case c.ViewBucket == c.StateBucket || c.ViewBucket == c.LeaseBucket:
		return bad("ViewBucket", "%q: the view needs a bucket of its own, not the state's or the lease's", c.ViewBucket)
	case c.DuplicateWindow < minDuplicateWindow:
		return bad("DuplicateWindow", "must be at least %s so a restart fits in it, got %s", minDuplicateWindow, c.DuplicateWindow)
	case c.StreamMaxAge < 0 || (c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow):
		return bad("StreamMaxAge", "must be 0 (keep events until removed by hand) or at least %s (the duplicate window, %s), got %s (the default is 720h)",
			c.DuplicateWindow, varName("DuplicateWindow"), c.StreamMaxAge)
	case c.DataDir == "" && c.NATSURL == "":
		return bad("DataDir", "required for the embedded NATS server")
	}
	if err := c.HA.validate(); err != nil {
		return err
	}
	if c.AccountsFile != "" {
		// Each account of the file has its login there.
		if set := c.loginVariables(); len(set) > 0 {
			return &configError{
				Var: varName("AccountsFile") + " and " + strings.Join(set, ", "),
				Msg: "both set: with an accounts file, each account's login is in the file; unset the login variables",
			}
		}
	} else if err := c.validateLogin(); err != nil {
		return err
	}
	if c.AccountConcurrency < 1 || c.AccountConcurrency > 1024 {
		return bad("AccountConcurrency", "must be 1 to 1024, got %d", c.AccountConcurrency)
	}
	if c.APIRate < 0 {
		return bad("APIRate", "must be a number of requests per minute, or 0 for no budget; got %d", c.APIRate)
	}
	if _, err := redact.Parse(c.Redact); err != nil {
		return bad("Redact", "%v", err)
	}
	if _, err := c.sealKey(); err != nil {
		return err
	}
	if _, err := snapshot.ParseFieldSet(c.IgnoreFields); err != nil {
		return bad("IgnoreFields", "%v", err)
	}
	if c.NATSURL == "" {
		if _, err := natsembed.ParseListen(c.EmbeddedListen); err != nil {
			return bad("EmbeddedListen", "%v", err)
		}
	}
	return nil
}

// sealKey returns the key the digests of secrets are sealed with, read from
// MEETWATCH_SEAL_KEY or the file MEETWATCH_SEAL_KEY_FILE names (its
// trailing newline dropped), or nil when neither is set.
func (c config) sealKey() ([]byte, error) {
	key := []byte(c.SealKey.Reveal())
	switch {
	case len(key) > 0 && c.SealKeyFile != "":
		return nil, bad("SealKeyFile", "set %s or %s, not both", varName("SealKey"), varName("SealKeyFile"))
	case c.SealKeyFile != "":
		b, err := os.ReadFile(c.SealKeyFile)
		if err != nil {
			return nil, bad("SealKeyFile", "%v", err)
		}
		key = bytes.TrimRight(b, "\r\n")
		if len(key) < redact.MinKeyBytes {
			return nil, bad("SealKeyFile", "the key in %s must be at least %d bytes", c.SealKeyFile, redact.MinKeyBytes)
		}
	case len(key) > 0 && len(key) < redact.MinKeyBytes:
		return nil, bad("SealKey", "must be at least %d bytes", redact.MinKeyBytes)
	}
	if len(key) == 0 {
		return nil, nil
	}
	return key, nil
}

// validateLogin checks that exactly one way of getting a token is set.
func (c config) validateLogin() error {
	var set []string
	if !c.AccessToken.IsZero() {
		set = append(set, varName("AccessToken"))
	}
	if c.AppID != "" || !c.AppKey.IsZero() {
		set = append(set, varName("AppID"))
	}
	if c.Account != "" || !c.Password.IsZero() {
		set = append(set, varName("Account"))
	}
	switch {
	case len(set) == 0:
		return &configError{
			Var: strings.Join([]string{varName("AccessToken"), varName("AppID"), varName("Account")}, ", "),
			Msg: "none set: set one way to log in (a static token, App ID login, or account login)",
		}
	case len(set) > 1:
		return &configError{Var: strings.Join(set, ", "), Msg: "more than one way to log in is set: keep exactly one"}
	case c.AppID != "" && c.AppKey.IsZero():
		return bad("AppKey", "required with %s", varName("AppID"))
	case c.AppID == "" && !c.AppKey.IsZero():
		return bad("AppID", "required with %s", varName("AppKey"))
	case c.Account != "" && c.Password.IsZero():
		return bad("Password", "required with %s", varName("Account"))
	case c.Account == "" && !c.Password.IsZero():
		return bad("Account", "required with %s", varName("Password"))
	case (c.UserID != "" || c.CorpID != "") && c.AppID == "":
		return bad("UserID", "%s and %s go with App ID login (%s)", varName("UserID"), varName("CorpID"), varName("AppID"))
	}
	return nil
}

func validPrefix(p string) error {
	if p == "" {
		return errors.New("must not be empty")
	}
	for _, tok := range strings.Split(p, ".") {
		if !subjectTok.MatchString(tok) {
			return fmt.Errorf("%q is not a plain subject: use tokens of letters, digits, - and _ joined by dots", p)
		}
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
	}
	return l, nil
}
