package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

func runSim(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sim", `Usage: meetwatch sim [flags]

Serves a simulated Huawei Cloud Meeting API (the ongoing-meeting list) on
addr, with meetings that start, change and end at random. Point
MEETWATCH_API_URL at the URL it prints to try meetwatch without an account.

The meetings carry every field of the API's ConferenceInfo model, secrets
included; some are recurring (cycleParams, subConfs), webinars, held in a
cloud room (vmrID, vmrConferenceID) or streamed live. --seed chooses which.

With --accounts N it serves N accounts on addr, acct-01 to acct-N, each with
its own meetings, seed and credentials (the token, and any login, followed
by -acct-01 and so on), and prints one line for each; --accounts-file writes
them as a file for MEETWATCH_ACCOUNTS_FILE, so that meetwatch run watches
them all. --meetings, --churn and --page-delay apply to each account.`, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	token := fs.String("token", "", "access token to accept (default $MEETWATCH_ACCESS_TOKEN, else sim-token)")
	meetings := fs.Int("meetings", 10, "meetings ongoing at start, in each account")
	churn := fs.Duration("churn", 2*time.Second, "time between random changes, in each account; 0 for none")
	seed := fs.Int64("seed", 0, "the random `seed` of the meetings and their changes; 0 picks one, printed at start so that a run can be repeated")
	appID := fs.String("app-id", "", "App ID whose login (HMAC-signed) the simulator accepts")
	appKey := fs.String("app-key", "", "App key for --app-id")
	account := fs.String("account", "", "account whose login (Basic) the simulator accepts")
	password := fs.String("password", "", "password for --account")
	tokenTTL := fs.Duration("token-ttl", 0, "lifetime of tokens issued by a login (default 12h)")
	pageDelay := fs.Duration("page-delay", 0, "wait this long before answering each request for the meeting list, as a distant API does")
	accounts := fs.Int("accounts", 1, "the `number` of accounts to serve, each with its own meetings and credentials")
	accountsFile := fs.String("accounts-file", "", "write an accounts file naming every account served, with its URL and login, to `path`")
	control := fs.String("control", "", "listen address of a control endpoint for tests (POST /churn, GET /listings, each for one ?account= or all); empty for none")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := checkCounts(fs, *meetings); err != nil {
		return err
	}
	if *accounts < 1 {
		return usagef("--accounts %d: must be at least 1", *accounts)
	}
	if *seed == 0 {
		*seed = rand.Int64N(math.MaxInt64) + 1
	}
	fmt.Fprintf(stdout, "random seed %d (--seed %d repeats this run)\n", *seed, *seed)
	if *token == "" {
		*token = environ[envPrefix+"ACCESS_TOKEN"]
	}
	if *token == "" {
		*token = "sim-token"
	}
	fleet, err := newSimFleet(*accounts, *meetings, apisim.Options{
		Token: *token, Seed: *seed, TokenTTL: *tokenTTL,
		AppID: *appID, AppKey: *appKey, Account: *account, Password: *password,
	})
	if err != nil {
		return err
	}
	var ctl *simControl
	if *control != "" {
		ctl = newSimControl(fleet)
	}
	if *pageDelay > 0 || ctl != nil {
		delay := *pageDelay
		for _, a := range fleet.accounts {
			a.sim.SetHook(func(r *http.Request) *apisim.Fault {
				if r.URL.Path != apisim.Path {
					return nil
				}
				if ctl != nil {
					ctl.record(a.name, r)
				}
				if delay > 0 {
					return &apisim.Fault{Delay: delay}
				}
				return nil
			})
		}
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	url := "http://" + l.Addr().String()
	if *accountsFile != "" {
		if err := writeAccountsFile(*accountsFile, fleet.entries(url)); err != nil {
			l.Close()
			return err
		}
	}
	if len(fleet.accounts) == 1 {
		fmt.Fprintf(stdout, "simulated meeting API on %s (token %q)\n", url, *token)
	} else {
		fmt.Fprintf(stdout, "simulated meeting API on %s for %d accounts\n", url, len(fleet.accounts))
		for _, a := range fleet.accounts {
			fmt.Fprintf(stdout, "account %s on %s (token %q)%s\n", a.name, url, a.Token, a.logins())
		}
	}
	if *accountsFile != "" {
		fmt.Fprintf(stdout, "accounts file %s\n", *accountsFile)
	}
	if ctl == nil {
		return fleet.serve(ctx, l, *churn)
	}
	cl, err := net.Listen("tcp", *control)
	if err != nil {
		l.Close()
		return fmt.Errorf("listening for control: %w", err)
	}
	fmt.Fprintf(stdout, "control on http://%s\n", cl.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return fleet.serve(gctx, l, *churn) })
	g.Go(func() error {
		return serveHTTP(gctx, &http.Server{Handler: ctl.handler(), ReadHeaderTimeout: 10 * time.Second}, cl)
	})
	return g.Wait()
}

// simFleet is the simulator of one account or several behind one
// listener: what `meetwatch sim` serves, and what a trial of many accounts
// can serve in-process beside the watcher.
type simFleet struct {
	handler  http.Handler // the lone Sim, or the Multi that routes by credentials
	accounts []simAccount
}

// simAccount is one account of a simFleet.
type simAccount struct {
	apisim.Options
	name string
	sim  *apisim.Sim
}

// newSimFleet returns n accounts numbered from base (apisim.NumberedAccounts),
// each with meetings ongoing. One account is a lone Sim with base's
// options, exactly what `meetwatch sim` served before it served several.
func newSimFleet(n, meetings int, base apisim.Options) (*simFleet, error) {
	accts := apisim.NumberedAccounts(n, base)
	f := &simFleet{}
	if n == 1 {
		sim := apisim.New(base)
		f.handler = sim
		f.accounts = []simAccount{{Options: base, name: accts[0].Name, sim: sim}}
	} else {
		m, err := apisim.NewMulti(accts)
		if err != nil {
			return nil, fmt.Errorf("simulating %d accounts: %w", n, err)
		}
		f.handler = m
		for _, a := range accts {
			f.accounts = append(f.accounts, simAccount{Options: a.Options, name: a.Name, sim: m.Sim(a.Name)})
		}
	}
	for _, a := range f.accounts {
		a.sim.AddN(meetings)
	}
	return f, nil
}

// startSimAccounts serves n accounts numbered from base (see newSimFleet)
// on a loopback port, in g until ctx ends, each with meetings ongoing and
// one random change every churn; it returns what an accounts file says of
// each (writeAccountsFile writes one): its name, URL and token or login.
func startSimAccounts(ctx context.Context, g *errgroup.Group, n, meetings int, churn time.Duration, base apisim.Options) ([]simAccountEntry, error) {
	fleet, err := newSimFleet(n, meetings, base)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the simulated API: %w", err)
	}
	g.Go(func() error { return fleet.serve(ctx, l, churn) })
	return fleet.entries("http://" + l.Addr().String()), nil
}

// serveSim serves sim on l and, every churn, makes one random change drawn
// from seed, until ctx ends.
func serveSim(ctx context.Context, sim *apisim.Sim, l net.Listener, churn time.Duration, seed int64) error {
	f := &simFleet{handler: sim, accounts: []simAccount{{Options: apisim.Options{Seed: seed}, sim: sim}}}
	return f.serve(ctx, l, churn)
}

// serve serves the fleet on l and, every churn, makes one random change in
// each account, each drawn from the account's own seed, until ctx ends.
func (f *simFleet) serve(ctx context.Context, l net.Listener, churn time.Duration) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return serveHTTP(ctx, &http.Server{Handler: f.handler, ReadHeaderTimeout: 10 * time.Second}, l)
	})
	if churn > 0 {
		g.Go(func() error {
			rngs := make([]*rand.Rand, len(f.accounts))
			for i, a := range f.accounts {
				rngs[i] = rand.New(rand.NewPCG(uint64(a.Seed), 1))
			}
			t := time.NewTicker(churn)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					for i, a := range f.accounts {
						a.sim.Step(rngs[i])
					}
				}
			}
		})
	}
	return g.Wait()
}

// logins describes the logins an account accepts beside its token, for
// the line that prints it.
func (a simAccount) logins() string {
	var s string
	if a.AppID != "" {
		s += fmt.Sprintf(" (app id %q, app key %q)", a.AppID, a.AppKey)
	}
	if a.Account != "" {
		s += fmt.Sprintf(" (account %q, password %q)", a.Account, a.Password)
	}
	return s
}

// simAccountEntry is one account of an accounts file (MEETWATCH_ACCOUNTS_FILE)
// naming a simulated account: its name, base URL and one login.
type simAccountEntry struct {
	Name        string `yaml:"name"`
	APIURL      string `yaml:"api_url"`
	AccessToken string `yaml:"access_token,omitempty"`
	AppID       string `yaml:"app_id,omitempty"`
	AppKey      string `yaml:"app_key,omitempty"`
	Account     string `yaml:"account,omitempty"`
	Password    string `yaml:"password,omitempty"`
}

// entries returns the fleet's accounts served at url, each with one login:
// the App ID login when the simulator accepts one, else the account login,
// else the static token, so that a watcher of the file rehearses the login
// the simulator was asked for.
func (f *simFleet) entries(url string) []simAccountEntry {
	out := make([]simAccountEntry, len(f.accounts))
	for i, a := range f.accounts {
		e := simAccountEntry{Name: a.name, APIURL: url}
		switch {
		case a.AppID != "":
			e.AppID, e.AppKey = a.AppID, a.AppKey
		case a.Account != "":
			e.Account, e.Password = a.Account, a.Password
		default:
			e.AccessToken = a.Token
		}
		out[i] = e
	}
	return out
}

// writeAccountsFile writes entries to path as an accounts file, readable
// only by its owner since it holds credentials. It writes a file beside
// path and renames it, so that a reader never sees half of one.
func writeAccountsFile(path string, entries []simAccountEntry) error {
	var body bytes.Buffer
	body.WriteString("# simulated accounts of meetwatch sim, for MEETWATCH_ACCOUNTS_FILE\n")
	enc := yaml.NewEncoder(&body)
	enc.SetIndent(2)
	if err := enc.Encode(struct {
		Accounts []simAccountEntry `yaml:"accounts"`
	}{entries}); err != nil {
		return fmt.Errorf("encoding the accounts file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding the accounts file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, body.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing the accounts file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the accounts file: %w", err)
	}
	return nil
}

// serveHTTP serves srv on l until ctx ends, then shuts it down within 2 s.
// What is still open then is closed: a client's connection it opened and
// never sent a request on counts as busy for seconds, and a simulator
// that stops has nothing left to answer.
func serveHTTP(ctx context.Context, srv *http.Server, l net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return srv.Close()
		}
		return err
	})
	return g.Wait()
}

// simControl lets a test drive a simulator that runs as its own process:
// POST /churn starts, changes and ends given numbers of meetings at once,
// between two polls, and GET /listings returns the list requests received
// since the last call, so that the test can fetch the very same pages.
// Each acts on the account named by the query parameter account, or on
// every account without one.
type simControl struct {
	accounts []controlAccount
	// named says whether listings name their account: only when there
	// are several, so that one account's listings read as they always did.
	named bool

	mu       sync.Mutex
	listings []simListing
}

// controlAccount is one account under control, with the random source of
// its changes; rng is guarded by simControl.mu.
type controlAccount struct {
	name string
	sim  *apisim.Sim
	rng  *rand.Rand
}

func newSimControl(f *simFleet) *simControl {
	c := &simControl{named: len(f.accounts) > 1}
	for _, a := range f.accounts {
		c.accounts = append(c.accounts, controlAccount{name: a.name, sim: a.sim, rng: rand.New(rand.NewPCG(uint64(a.Seed), 2))})
	}
	return c
}

// simListing is one request for the meeting list.
type simListing struct {
	Account   string `json:"account,omitempty"`
	Offset    string `json:"offset"`
	Limit     string `json:"limit"`
	SearchKey string `json:"searchKey,omitempty"`

	account string // always set, for ?account= with one account too
}

func (c *simControl) record(account string, r *http.Request) {
	q := r.URL.Query()
	l := simListing{Offset: q.Get("offset"), Limit: q.Get("limit"), SearchKey: q.Get("searchKey"), account: account}
	if c.named {
		l.Account = account
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listings = append(c.listings, l)
}

// pick returns the accounts r names in its query parameter account: that
// one, or all without the parameter; false if it names none served.
func (c *simControl) pick(r *http.Request) ([]controlAccount, bool) {
	if !r.URL.Query().Has("account") {
		return c.accounts, true
	}
	name := r.URL.Query().Get("account")
	for _, a := range c.accounts {
		if a.name == name {
			return []controlAccount{a}, true
		}
	}
	return nil, false
}

func (c *simControl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /churn", func(w http.ResponseWriter, r *http.Request) {
		accts, ok := c.pick(r)
		if !ok {
			http.Error(w, "account: no such account", http.StatusNotFound)
			return
		}
		var n [3]int
		for i, name := range []string{"starts", "changes", "ends"} {
			v, err := strconv.Atoi(r.URL.Query().Get(name))
			if err != nil || v < 0 {
				http.Error(w, name+": want a whole number", http.StatusBadRequest)
				return
			}
			n[i] = v
		}
		writeJSON(w, c.churn(accts, n[0], n[1], n[2]))
	})
	mux.HandleFunc("GET /listings", func(w http.ResponseWriter, r *http.Request) {
		accts, ok := c.pick(r)
		if !ok {
			http.Error(w, "account: no such account", http.StatusNotFound)
			return
		}
		c.mu.Lock()
		var got, kept []simListing
		for _, l := range c.listings {
			if slices.ContainsFunc(accts, func(a controlAccount) bool { return a.name == l.account }) {
				got = append(got, l)
			} else {
				kept = append(kept, l)
			}
		}
		c.listings = kept
		c.mu.Unlock()
		writeJSON(w, got)
	})
	return mux
}

// churn ends `ends` random meetings in each of accts, changes `changes`
// others (one field each, as the simulator's own churn does) and starts
// `starts` new ones, and sums what it did.
func (c *simControl) churn(accts []controlAccount, starts, changes, ends int) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum := map[string]int{"started": 0, "changed": 0, "ended": 0, "meetings": 0}
	for _, a := range accts {
		ids := a.sim.UUIDs()
		pick := min(ends+changes, len(ids))
		for i := range pick { // a partial Fisher-Yates shuffle: pick distinct meetings
			j := i + a.rng.IntN(len(ids)-i)
			ids[i], ids[j] = ids[j], ids[i]
		}
		for _, id := range ids[:min(ends, pick)] {
			if a.sim.End(id) {
				sum["ended"]++
			}
		}
		for _, id := range ids[min(ends, pick):pick] {
			if a.sim.Change(a.rng, id) {
				sum["changed"]++
			}
		}
		sum["started"] += len(a.sim.AddN(starts))
		sum["meetings"] += a.sim.Len()
	}
	return sum
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a client that hung up is no error of the simulator's
}
