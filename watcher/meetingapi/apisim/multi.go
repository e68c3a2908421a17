package apisim

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// Account is one account a Multi serves: a name to address it by, and the
// Options of its own Sim, whose Token and logins say which requests are
// its.
type Account struct {
	// Name names the account, as an accounts file does.
	Name string
	Options
}

// NumberedAccounts returns n accounts derived from base, named acct-01,
// acct-02, ... (with more digits past 99, so that the names sort in
// order). Each gets its own seed, drawn from base.Seed and its number, so
// that accounts list different meetings and a base seed replays them all;
// and, for each credential base sets, its own: the token, App ID, App key,
// account and password of base followed by "-" and the account's name
// (sim-token-acct-01). With n == 1 the one account keeps base's seed and
// credentials, so that it is served as a lone Sim with base would be.
// Other options are shared.
func NumberedAccounts(n int, base Options) []Account {
	width := max(2, len(strconv.Itoa(n)))
	accts := make([]Account, n)
	for i := range accts {
		a := Account{Name: fmt.Sprintf("acct-%0*d", width, i+1), Options: base}
		if n > 1 {
			a.Seed = accountSeed(base.Seed, i+1)
			suffix := func(s string) string {
				if s == "" {
					return ""
				}
				return s + "-" + a.Name
			}
			a.Token, a.AppID, a.AppKey = suffix(base.Token), suffix(base.AppID), suffix(base.AppKey)
			a.Account, a.Password = suffix(base.Account), suffix(base.Password)
		}
		accts[i] = a
	}
	return accts
}

// accountSeed is the seed of account number i drawn from seed: a PCG
// stream keyed by both, so that neighbouring numbers share no records.
func accountSeed(seed int64, i int) int64 {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i))).Int64()
}

// Multi serves several accounts from one listener, as the real API serves
// every enterprise from one host: each account is its own Sim, with its
// own meetings, hook, faults and tokens, and each request goes to the
// account its credentials belong to. A listing goes by its X-Access-Token
// (an account's Options.Token, or a token one of its logins issued), an
// App ID login by the App ID in its Authorization header, an account login
// by the account in its Basic credentials. A request that is no account's
// gets what a lone Sim gives a stranger: 401 USG.000000004 for a listing or
// a login, 404 for an unknown path. It is safe for concurrent use.
type Multi struct {
	accounts []Account
	sims     []*Sim
	byName   map[string]*Sim
	// byToken, byAppID and byAccount route by the credentials each
	// account was given; tokens issued by logins are asked of each Sim.
	byToken, byAppID, byAccount map[string]*Sim
	// nobody answers the requests of no account.
	nobody *Sim
}

// NewMulti returns a Multi serving accounts, each with no meetings. Every
// account needs a name, and a Token or a login (AppID or Account), since a
// Sim with neither accepts any token and could not be told apart; names
// and credentials must be unique.
func NewMulti(accounts []Account) (*Multi, error) {
	if len(accounts) == 0 {
		return nil, errors.New("no accounts")
	}
	m := &Multi{
		accounts:  append([]Account(nil), accounts...),
		byName:    make(map[string]*Sim),
		byToken:   make(map[string]*Sim),
		byAppID:   make(map[string]*Sim),
		byAccount: make(map[string]*Sim),
		nobody:    New(Options{}),
	}
	m.nobody.refuseAll = true
	for _, a := range accounts {
		if a.Name == "" {
			return nil, errors.New("an account without a name")
		}
		if a.Token == "" && a.AppID == "" && a.Account == "" {
			return nil, fmt.Errorf("account %s: no token and no login", a.Name)
		}
		sim := New(a.Options)
		for _, k := range []struct {
			what, key string
			to        map[string]*Sim
		}{
			{"name", a.Name, m.byName},
			{"token", a.Token, m.byToken},
			{"App ID", a.AppID, m.byAppID},
			{"account", a.Account, m.byAccount},
		} {
			if k.key == "" {
				continue
			}
			if _, dup := k.to[k.key]; dup {
				return nil, fmt.Errorf("account %s: its %s is another account's too", a.Name, k.what)
			}
			k.to[k.key] = sim
		}
		m.sims = append(m.sims, sim)
	}
	return m, nil
}

// Accounts returns the accounts served, in the order given to NewMulti.
func (m *Multi) Accounts() []Account { return append([]Account(nil), m.accounts...) }

// Sim returns the simulator of the account named name, for adding
// meetings and injecting faults in that account alone; nil if there is
// none.
func (m *Multi) Sim(name string) *Sim { return m.byName[name] }

// ServeHTTP answers r as the Sim of the account r's credentials belong to.
func (m *Multi) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.route(r).ServeHTTP(w, r)
}

// route returns the Sim whose request r is.
func (m *Multi) route(r *http.Request) *Sim {
	var sim *Sim
	switch r.URL.Path {
	case Path:
		tok := r.Header.Get("X-Access-Token")
		if sim = m.byToken[tok]; sim == nil && tok != "" {
			for _, s := range m.sims {
				if s.issued(tok) {
					sim = s
					break
				}
			}
		}
	case AppAuthPath:
		if _, access, ok := parseHMACAuth(r.Header.Get("Authorization")); ok {
			if id, err := base64.StdEncoding.DecodeString(access); err == nil {
				sim = m.byAppID[string(id)]
			}
		}
	case AccountAuthPath:
		if account, _, ok := r.BasicAuth(); ok {
			sim = m.byAccount[account]
		}
	}
	if sim == nil {
		return m.nobody
	}
	return sim
}

// issued reports whether a login of s issued tok, expired or not.
func (s *Sim) issued(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tokens[tok]
	return ok
}

// MultiServer is a Multi listening on a loopback port, as Server is a Sim.
type MultiServer struct {
	// URL is http://127.0.0.1:port, without a trailing slash: every
	// account's base URL.
	URL string
	// Multi is the simulator of the accounts behind the server.
	Multi *Multi

	srv    *http.Server
	served chan struct{}
}

// NewMultiServer starts a MultiServer on 127.0.0.1 for accounts, which
// NewMulti checks. The caller must Close it. It panics if no loopback port
// is free, as NewServer does.
func NewMultiServer(accounts []Account) (*MultiServer, error) {
	m, err := NewMulti(accounts)
	if err != nil {
		return nil, err
	}
	s := &MultiServer{Multi: m}
	s.URL, s.srv, s.served = serve(m)
	return s, nil
}

// Close stops the server, cutting open connections, and waits for it.
func (s *MultiServer) Close() {
	_ = s.srv.Close() // as Server.Close
	<-s.served
}
