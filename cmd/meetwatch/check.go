package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
)

const checkUsage = `Usage: meetwatch check [--json] [--timeout D] [--account NAME]

Checks what meetwatch run needs, with run's configuration (the same
MEETWATCH_* variables), and prints one line per check: "ok" or "FAIL", its
name, and what it found or why it failed, with the fix where one is known.

  login               the configured login, and when its token expires
  listing             one page of the ongoing-meeting list, asked as run asks it
                      (MEETWATCH_QUERY_ALL=true needs an enterprise admin's token)
  meetings            how many meetings are going on
  latency             how long that page took (fails above half of MEETWATCH_REQUEST_TIMEOUT)
  budget              the request budget (MEETWATCH_API_RATE) and the requests check sent
                      (fails when the API's headers announce a lower limit)
  rate_limit_headers  the rate-limit headers the API sent, if any
  clock_skew          this machine's clock against the API's Date header (fails beyond 30s)
  nats                the connection to MEETWATCH_NATS_URL
  jetstream           JetStream in the NATS account
  stream              the events' stream: there, or one run may create
  publish             publishing events to it
  state_bucket        the state bucket: create or update, read, write, watch
  lease_bucket        the lease bucket: create or update, read, write
  view_bucket         the view bucket (MEETWATCH_VIEW_BUCKET): create or update,
                      read, write, watch; not checked when the view is off
  sizing              a full listing at this count and budget, against
                      MEETWATCH_POLL_INTERVAL: whether it fits, and what would

It writes nothing: it logs in once (one of the user's token slots, as a
start of run takes), asks for one page, and probes every NATS permission
run needs with messages and requests that the server checks and JetStream
refuses, so nothing is stored, created or deleted. A plain subscriber to
the event subjects (nats sub) does see the three empty probe messages,
marked with a Meetwatch-Probe header, which meetwatch tail skips. With MEETWATCH_NATS_URL empty, run starts its own server, and only its data
directory is checked.

With MEETWATCH_ACCOUNTS_FILE, check takes one account of the file at a
time, named with --account: its login, listing, budget and sizing, as run
would poll it, and NATS.

Exit status: 0 when every check passes, 1 when any fails, 2 on a bad
configuration.
`

// maxClockSkew is how far this machine's clock may be from the API's before
// clock_skew fails. The clock times every event (time, lastSeen) and signs
// App ID logins, whose signature the API takes for 10 minutes from the
// time it names: a synchronized clock is within a second of the API's,
// which is about what one request can measure, so a skew of more than
// half a minute means a clock nothing keeps right, on its way to events
// out of order between replicas and, past 10 minutes, refused logins.
const maxClockSkew = 30 * time.Second

// checkResult is one line of the report.
type checkResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// checkReport is what `meetwatch check` prints.
type checkReport struct {
	Checks []checkResult `json:"checks"`
	// Sizing is nil when no listing answered.
	Sizing *sizingReport `json:"sizing"`
	OK     bool          `json:"ok"`
}

// add records a check. Its detail goes through redact.Text: an error
// quoting a URL prints no credential of it.
func (r *checkReport) add(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, checkResult{Name: name, OK: ok, Detail: redact.Text(fmt.Sprintf(format, args...))})
}

func (r *checkReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	for _, c := range r.Checks {
		word := "ok"
		if !c.OK {
			word = "FAIL"
		}
		if _, err := fmt.Fprintf(w, "%-4s  %s: %s\n", word, c.Name, c.Detail); err != nil {
			return err
		}
	}
	return nil
}

func runCheck(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", checkUsage+"\nEnvironment: as meetwatch run (meetwatch run --help lists it).", stderr)
	asJSON := fs.Bool("json", false, `print one JSON document: {"checks":[{"name","ok","detail"}...],"sizing":{...},"ok":bool}`)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each answer from NATS")
	accountName := fs.String("account", "", "with MEETWATCH_ACCOUNTS_FILE, the `name` of the account to check")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "meetwatch check: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	case *timeout <= 0:
		fmt.Fprintf(stderr, "meetwatch check: --timeout %s: must be positive\n", *timeout)
		return errUsage
	}
	cfg, err := loadConfig(environ, true)
	if err != nil {
		return err
	}
	if cfg, err = checkedAccount(cfg, *accountName, stderr); err != nil {
		return err
	}
	// The report says what the logs would; below a warning they would
	// only repeat it (MEETWATCH_LOG_LEVEL=debug still shows every retry).
	level := cfg.LogLevel
	if level == "info" {
		level = "warn"
	}
	logger := slog.New(redact.Handler(newLogger(stderr, level, cfg.LogFormat).Handler()))

	rep := &checkReport{}
	api, err := checkAPI(ctx, cfg, logger, rep)
	if err != nil {
		return err
	}
	checkNATS(ctx, cfg, *timeout, logger, rep)
	if api != nil {
		timeoutSet := environ[envPrefix+"POLL_TIMEOUT"] != "" // set empty is unset, as for every variable
		s := sizeListing(sizingInput{
			meetings: api.first.Count, limit: api.limit, overlap: api.overlap, requests: api.requests,
			concurrency: cfg.PageConcurrency, latency: api.latency, budget: api.budget, apiRate: cfg.APIRate,
			interval: cfg.PollInterval, pollTimeout: cfg.PollTimeout, timeoutSet: timeoutSet,
		})
		rep.Sizing = &s
		rep.add("sizing", s.Fits, "%s", s.Verdict)
	}
	var failed []string
	for _, c := range rep.Checks {
		if !c.OK {
			failed = append(failed, c.Name)
		}
	}
	rep.OK = len(failed) == 0
	if err := rep.write(stdout, *asJSON); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d checks failed: %s", len(failed), len(rep.Checks), strings.Join(failed, ", "))
	}
	return nil
}

// checkedAccount returns the configuration check works with: cfg, or,
// with an accounts file, the settings of the account named name. Checking
// every account at once would log in to each, a token slot each, and mix
// their reports; one at a time, each report reads as that of one
// account, and each failure says which.
func checkedAccount(cfg config, name string, stderr io.Writer) (config, error) {
	switch {
	case cfg.AccountsFile == "" && name == "":
		return cfg, nil
	case cfg.AccountsFile == "":
		fmt.Fprintf(stderr, "meetwatch check: --account %s: names an account of %s, which is not set\n", name, varName("AccountsFile"))
		return cfg, errUsage
	}
	accounts, err := loadAccounts(cfg)
	if err != nil {
		return cfg, err
	}
	names := make([]string, len(accounts))
	for i, a := range accounts {
		if a.Name == name {
			return a.settings(cfg), nil
		}
		names[i] = a.Name
	}
	shown := names
	if len(shown) > 5 {
		shown = append(shown[:5:5], "...")
	}
	if name == "" {
		fmt.Fprintf(stderr, "meetwatch check: check takes one account: with %s, name one of its %d with --account NAME (%s)\n",
			varName("AccountsFile"), len(names), strings.Join(shown, ", "))
	} else {
		fmt.Fprintf(stderr, "meetwatch check: --account %s: no such account in %s (%s)\n", name, cfg.AccountsFile, strings.Join(shown, ", "))
	}
	return cfg, errUsage
}

// apiFacts is what the API checks learned that the sizing needs.
type apiFacts struct {
	first          meetingapi.Page
	limit, overlap int
	requests       int // per listing
	latency        time.Duration
	budget         *rate.Limiter
}

// checkAPI logs in and asks for one page as run would, and adds the API's
// checks to rep. It returns nil facts when no page was listed, and an
// error only for a configuration the client refuses.
func checkAPI(ctx context.Context, cfg config, logger *slog.Logger, rep *checkReport) (*apiFacts, error) {
	hc := meetingapi.NewHTTPClient(cfg.PageConcurrency, cfg.RequestTimeout)
	rec := &apiRecorder{next: hc.Transport}
	hc.Transport = rec
	var budget *rate.Limiter
	if cfg.APIRate > 0 {
		budget = meetingapi.NewBudget(cfg.APIRate, cfg.PageConcurrency)
	}
	gate := &meetingapi.Gate{}
	tokens := tokenSource(cfg, hc, budget, gate, logger)
	defer tokens.Close()
	client, err := newAPIClient(cfg, tokens, budget, gate, hc, logger)
	if err != nil {
		return nil, bad("APIURL", "%v", err)
	}

	var facts *apiFacts
	if checkLogin(ctx, cfg, tokens, rep) {
		first, err := client.FirstPage(ctx)
		if err != nil {
			rep.add("listing", false, "%s", listingFailure(cfg, err))
		} else {
			facts = &apiFacts{first: first, requests: client.ListingRequests(first), budget: budget}
			facts.limit, facts.overlap = client.PageSizes(first)
			ans := rec.last(meetingapi.OnlinePath)
			facts.latency = ans.latency()
			rep.add("listing", true, "GET %s with %s answered %d of %d records, each read and decoded",
				meetingapi.OnlinePath, listingQuery(cfg), len(first.Records), first.Count)
			rep.add("meetings", true, "%d going on now (%s)", first.Count, listingScope(cfg))
			lat := fmt.Sprintf("one page of %d records in %s", len(first.Records), approx(facts.latency))
			if facts.latency > cfg.RequestTimeout/2 {
				rep.add("latency", false, "%s, more than half of %s (%s): a slower page fails its poll; raise it", lat, varName("RequestTimeout"), cfg.RequestTimeout)
			} else {
				rep.add("latency", true, "%s", lat)
			}
		}
	}
	checkBudget(cfg, budget, rec, rep)
	checkRateHeaders(rec, rep)
	checkClock(rec, rep)
	return facts, nil
}

// checkLogin gets a token as run does, and reports whether there is one.
func checkLogin(ctx context.Context, cfg config, tokens meetingapi.TokenSource, rep *checkReport) bool {
	var who string
	switch {
	case !cfg.AccessToken.IsZero():
		rep.add("login", true, "a static token (%s): its expiry is not known, and the API's tokens last 12 to 24 hours; log in with %s and %s, or %s and %s, to run for longer",
			varName("AccessToken"), varName("AppID"), varName("AppKey"), varName("Account"), varName("Password"))
		return true
	case cfg.AppID != "":
		who = fmt.Sprintf("App ID login as %q", cfg.AppID)
		if cfg.UserID != "" {
			who += fmt.Sprintf(" for user %q", cfg.UserID)
		}
	default:
		who = fmt.Sprintf("account login as %q", cfg.Account)
	}
	if _, err := tokens.Token(ctx); err != nil {
		rep.add("login", false, "%s: %v", who, err)
		return false
	}
	exp := tokens.Expiry()
	rep.add("login", true, "%s; token expires %s (in %s)", who, exp.UTC().Format(time.RFC3339), shortDuration(time.Until(exp).Round(time.Minute)))
	return true
}

func listingQuery(cfg config) string {
	q := "queryAll=" + strconv.FormatBool(cfg.QueryAll)
	if cfg.SearchKey != "" {
		q += " and " + varName("SearchKey")
	}
	return q
}

func listingScope(cfg config) string {
	scope := "every user's: queryAll=true"
	if !cfg.QueryAll {
		scope = "this user's own: queryAll=false"
	}
	if cfg.SearchKey != "" {
		scope += ", matching " + varName("SearchKey")
	}
	return scope
}

// listingFailure explains a listing the API did not answer, with what to
// change where the answer says it.
func listingFailure(cfg config, err error) string {
	var apiErr *meetingapi.APIError
	if !errors.As(err, &apiErr) {
		if errors.Is(err, meetingapi.ErrBadPage) {
			return fmt.Sprintf("%v: is %s the meeting API (%s)?", err, varName("APIURL"), redact.URL(cfg.APIURL))
		}
		return err.Error()
	}
	switch {
	case apiErr.Status == http.StatusForbidden && cfg.QueryAll:
		return fmt.Sprintf("%v: queryAll needs an enterprise administrator's token: log in as one (App ID login with %s empty acts as the administrator), or set %s=false to list this user's own meetings",
			err, varName("UserID"), varName("QueryAll"))
	case apiErr.Status == http.StatusForbidden:
		return fmt.Sprintf("%v: the API does not let this user list meetings", err)
	case apiErr.Unauthorized() && !cfg.AccessToken.IsZero():
		return fmt.Sprintf("%v: the token is wrong or expired: set a new %s, or log in with %s or %s", err, varName("AccessToken"), varName("AppID"), varName("Account"))
	case apiErr.Unauthorized():
		return fmt.Sprintf("%v: the API refused the token it had just issued", err)
	case apiErr.Status == http.StatusBadRequest:
		return fmt.Sprintf("%v: the API refused the request's parameters: check %s and %s", err, varName("PageSize"), varName("SearchKey"))
	case apiErr.Status == http.StatusTooManyRequests:
		return fmt.Sprintf("%v: the API asks for fewer requests: something else may be spending this account's limit", err)
	}
	return err.Error()
}

// checkBudget describes the request budget and what the check spent of it,
// and fails it when the API announced a lower limit.
func checkBudget(cfg config, budget *rate.Limiter, rec *apiRecorder, rep *checkReport) {
	sent := rec.count()
	spent := fmt.Sprintf("this check sent %d request%s", sent, plural(sent))
	if sent > 0 {
		spent += " (" + rec.kinds() + ")"
	}
	var what string
	if budget == nil {
		what = fmt.Sprintf("none (%s=0): run sends requests as fast as the API answers, %d at a time", varName("APIRate"), cfg.PageConcurrency)
	} else {
		what = fmt.Sprintf("%s=%d a minute: a burst of %d, then one request every %s", varName("APIRate"), cfg.APIRate,
			budget.Burst(), shortDuration(time.Duration(float64(time.Second)/float64(budget.Limit())).Round(time.Millisecond)))
	}
	if limit, from, ok := announcedLimit(rec.rateHeaders()); ok && (budget == nil || cfg.APIRate > limit) {
		rep.add("budget", false, "%s, but the API allows %d a minute (%s): set %s=%d or less; %s", what, limit, from, varName("APIRate"), limit, spent)
		return
	}
	rep.add("budget", true, "%s; %s", what, spent)
}

// checkRateHeaders lists the rate-limit headers the API sent.
func checkRateHeaders(rec *apiRecorder, rep *checkReport) {
	if rec.answered() == 0 {
		return
	}
	hs := rec.rateHeaders()
	if len(hs) == 0 {
		rep.add("rate_limit_headers", true, "none in the API's answers")
		return
	}
	rep.add("rate_limit_headers", true, "%s", strings.Join(hs, "; "))
}

// checkClock compares this machine's clock with the API's Date header.
// The server wrote the Date, in whole seconds, between the request's start
// and its answer: the skew is known to within half a second plus half the
// request's time.
func checkClock(rec *apiRecorder, rep *checkReport) {
	ans, ok := rec.dated()
	if !ok {
		if rec.answered() > 0 {
			rep.add("clock_skew", true, "not measured: the API's answers have no Date header")
		}
		return
	}
	mid := ans.sent.Add(ans.answered.Sub(ans.sent) / 2)
	skew := ans.date.Add(time.Second / 2).Sub(mid) // > 0: the API's clock is ahead
	margin := time.Second/2 + ans.answered.Sub(ans.sent)/2
	side := "behind"
	if skew < 0 {
		side = "ahead of"
	}
	detail := fmt.Sprintf("this clock is %s %s the API's Date (±%s)", approx(skew.Abs()), side, approx(margin))
	if skew.Abs() <= margin {
		detail = fmt.Sprintf("this clock agrees with the API's Date, to within %s", approx(margin))
	}
	if skew.Abs()-margin > maxClockSkew {
		rep.add("clock_skew", false, "%s, more than %s: event times and App ID login signatures come from this clock; synchronize it (NTP)", detail, shortDuration(maxClockSkew))
		return
	}
	rep.add("clock_skew", true, "%s", detail)
}

// apiAnswer is what the recorder keeps of one request.
type apiAnswer struct {
	path     string
	status   int
	header   http.Header
	sent     time.Time // the request started
	answered time.Time // the headers came
	done     time.Time // the body was closed
	date     time.Time // the Date header, when it parses
}

// latency is how long the request took, body included.
func (a apiAnswer) latency() time.Duration {
	if a.done.IsZero() {
		return a.answered.Sub(a.sent)
	}
	return a.done.Sub(a.sent)
}

// apiRecorder is the transport of check's API requests: it counts them and
// keeps what each answer said besides its body, and when it ended.
type apiRecorder struct {
	next http.RoundTripper

	mu      sync.Mutex
	answers []*apiAnswer
}

func (r *apiRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	a := &apiAnswer{path: req.URL.Path, sent: time.Now()}
	r.mu.Lock()
	r.answers = append(r.answers, a)
	r.mu.Unlock()
	resp, err := r.next.RoundTrip(req)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a.answered = now
	if err != nil {
		return nil, err
	}
	a.status, a.header = resp.StatusCode, resp.Header.Clone()
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		a.date = d
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, done: func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if a.done.IsZero() {
			a.done = time.Now()
		}
	}}
	return resp, nil
}

type timedBody struct {
	io.ReadCloser
	done func()
}

func (b *timedBody) Close() error {
	b.done()
	return b.ReadCloser.Close()
}

// count returns how many requests were sent.
func (r *apiRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.answers)
}

// answered returns how many requests the API answered, whatever it said.
func (r *apiRecorder) answered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.answers {
		if a.status != 0 {
			n++
		}
	}
	return n
}

// last returns the last answer to path.
func (r *apiRecorder) last(path string) apiAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range slices.Backward(r.answers) {
		if a.path == path {
			return *a
		}
	}
	return apiAnswer{}
}

// dated returns the last answer with a Date header.
func (r *apiRecorder) dated() (apiAnswer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range slices.Backward(r.answers) {
		if !a.date.IsZero() {
			return *a, true
		}
	}
	return apiAnswer{}, false
}

// kinds says what the requests were: "a login and 1 page".
func (r *apiRecorder) kinds() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	logins, pages := 0, 0
	for _, a := range r.answers {
		if a.path == meetingapi.OnlinePath {
			pages++
		} else {
			logins++
		}
	}
	var parts []string
	if logins > 0 {
		parts = append(parts, fmt.Sprintf("%d login%s", logins, plural(logins)))
	}
	if pages > 0 {
		parts = append(parts, fmt.Sprintf("%d page%s", pages, plural(pages)))
	}
	return strings.Join(parts, " and ")
}

// rateHeaders returns the rate-limit headers of every answer, "Name:
// value", each once: X-RateLimit-*, RateLimit-*, the API gateway's
// X-Apig-Ratelimit-* and Retry-After.
func (r *apiRecorder) rateHeaders() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.answers {
		keys := make([]string, 0, len(a.header))
		for k := range a.header {
			if lk := strings.ToLower(k); strings.Contains(lk, "ratelimit") || lk == "retry-after" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range a.header[k] {
				if h := k + ": " + v; !slices.Contains(out, h) {
					out = append(out, h)
				}
			}
		}
	}
	return out
}

// announcedLimit reads the lowest limit a minute that the API gateway's
// headers announce, in its format "remain:99,limit:100,time:1 minute"
// (seen in the API's own examples, X-Apig-Ratelimit-Api), and the header
// that said it.
func announcedLimit(headers []string) (perMinute int, from string, ok bool) {
	units := map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}
	for _, h := range headers {
		if !strings.HasPrefix(strings.ToLower(h), "x-apig-ratelimit") {
			continue
		}
		_, v, _ := strings.Cut(h, ": ")
		var limit int
		var per time.Duration
		for _, field := range strings.Split(v, ",") {
			key, val, _ := strings.Cut(strings.TrimSpace(field), ":")
			switch strings.ToLower(key) {
			case "limit":
				limit, _ = strconv.Atoi(strings.TrimSpace(val))
			case "time":
				n, unit, _ := strings.Cut(strings.TrimSpace(val), " ")
				count, err := strconv.Atoi(n)
				if d, known := units[strings.TrimSuffix(strings.ToLower(unit), "s")]; err == nil && known && count > 0 {
					per = time.Duration(count) * d
				}
			}
		}
		if limit <= 0 || per <= 0 {
			continue
		}
		m := int(math.Floor(float64(limit) * float64(time.Minute) / float64(per)))
		if !ok || m < perMinute {
			perMinute, from, ok = m, h, true
		}
	}
	return perMinute, from, ok
}

// shortDuration prints d as time.Duration does, without the zero units at
// its end: 11h59m rather than 11h59m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// approx prints d to a millisecond below a second, and to a tenth of a
// second above: as precise as what the checks measure.
func approx(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return shortDuration(d.Round(100 * time.Millisecond))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
