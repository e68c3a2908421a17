package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

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
cloud room (vmrID, vmrConferenceID) or streamed live. --seed chooses which.`, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	token := fs.String("token", "", "access token to accept (default $MEETWATCH_ACCESS_TOKEN, else sim-token)")
	meetings := fs.Int("meetings", 10, "meetings ongoing at start")
	churn := fs.Duration("churn", 2*time.Second, "time between random changes; 0 for none")
	seed := fs.Int64("seed", 0, "the random `seed` of the meetings and their changes; 0 picks one, printed at start so that a run can be repeated")
	appID := fs.String("app-id", "", "App ID whose login (HMAC-signed) the simulator accepts")
	appKey := fs.String("app-key", "", "App key for --app-id")
	account := fs.String("account", "", "account whose login (Basic) the simulator accepts")
	password := fs.String("password", "", "password for --account")
	tokenTTL := fs.Duration("token-ttl", 0, "lifetime of tokens issued by a login (default 12h)")
	pageDelay := fs.Duration("page-delay", 0, "wait this long before answering each request for the meeting list, as a distant API does")
	control := fs.String("control", "", "listen address of a control endpoint for tests (POST /churn, GET /listings); empty for none")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := checkCounts(fs, *meetings); err != nil {
		return err
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
	sim := apisim.New(apisim.Options{
		Token: *token, Seed: *seed, TokenTTL: *tokenTTL,
		AppID: *appID, AppKey: *appKey, Account: *account, Password: *password,
	})
	sim.AddN(*meetings)
	var ctl *simControl
	if *control != "" {
		ctl = &simControl{sim: sim, rng: rand.New(rand.NewPCG(uint64(*seed), 2))}
	}
	if *pageDelay > 0 || ctl != nil {
		delay := *pageDelay
		sim.SetHook(func(r *http.Request) *apisim.Fault {
			if r.URL.Path != apisim.Path {
				return nil
			}
			if ctl != nil {
				ctl.record(r)
			}
			if delay > 0 {
				return &apisim.Fault{Delay: delay}
			}
			return nil
		})
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	fmt.Fprintf(stdout, "simulated meeting API on http://%s (token %q)\n", l.Addr(), *token)
	if ctl == nil {
		return serveSim(ctx, sim, l, *churn, *seed)
	}
	cl, err := net.Listen("tcp", *control)
	if err != nil {
		l.Close()
		return fmt.Errorf("listening for control: %w", err)
	}
	fmt.Fprintf(stdout, "control on http://%s\n", cl.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveSim(gctx, sim, l, *churn, *seed) })
	g.Go(func() error {
		return serveHTTP(gctx, &http.Server{Handler: ctl.handler(), ReadHeaderTimeout: 10 * time.Second}, cl)
	})
	return g.Wait()
}

// serveSim serves sim on l and, every churn, makes one random change, until
// ctx ends.
func serveSim(ctx context.Context, sim *apisim.Sim, l net.Listener, churn time.Duration, seed int64) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return serveHTTP(ctx, &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}, l)
	})
	if churn > 0 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(seed), 1))
			t := time.NewTicker(churn)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					sim.Step(rng)
				}
			}
		})
	}
	return g.Wait()
}

// serveHTTP serves srv on l until ctx ends, then shuts it down within 2 s.
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
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// simControl lets a test drive a simulator that runs as its own process:
// POST /churn starts, changes and ends given numbers of meetings at once,
// between two polls, and GET /listings returns the list requests received
// since the last call, so that the test can fetch the very same pages.
type simControl struct {
	sim *apisim.Sim

	mu       sync.Mutex
	rng      *rand.Rand
	listings []simListing
}

// simListing is one request for the meeting list.
type simListing struct {
	Offset    string `json:"offset"`
	Limit     string `json:"limit"`
	SearchKey string `json:"searchKey,omitempty"`
}

func (c *simControl) record(r *http.Request) {
	q := r.URL.Query()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listings = append(c.listings, simListing{Offset: q.Get("offset"), Limit: q.Get("limit"), SearchKey: q.Get("searchKey")})
}

func (c *simControl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /churn", func(w http.ResponseWriter, r *http.Request) {
		var n [3]int
		for i, name := range []string{"starts", "changes", "ends"} {
			v, err := strconv.Atoi(r.URL.Query().Get(name))
			if err != nil || v < 0 {
				http.Error(w, name+": want a whole number", http.StatusBadRequest)
				return
			}
			n[i] = v
		}
		writeJSON(w, c.churn(n[0], n[1], n[2]))
	})
	mux.HandleFunc("GET /listings", func(w http.ResponseWriter, _ *http.Request) {
		c.mu.Lock()
		got := c.listings
		c.listings = nil
		c.mu.Unlock()
		writeJSON(w, got)
	})
	return mux
}

// churn ends `ends` random meetings, changes `changes` others (one field
// each, as the simulator's own churn does) and starts `starts` new ones.
func (c *simControl) churn(starts, changes, ends int) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.sim.UUIDs()
	pick := min(ends+changes, len(ids))
	for i := range pick { // a partial Fisher-Yates shuffle: pick distinct meetings
		j := i + c.rng.IntN(len(ids)-i)
		ids[i], ids[j] = ids[j], ids[i]
	}
	ended, changed := 0, 0
	for _, id := range ids[:min(ends, pick)] {
		if c.sim.End(id) {
			ended++
		}
	}
	for _, id := range ids[min(ends, pick):pick] {
		if c.sim.Change(c.rng, id) {
			changed++
		}
	}
	started := len(c.sim.AddN(starts))
	return map[string]int{"started": started, "changed": changed, "ended": ended, "meetings": c.sim.Len()}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a client that hung up is no error of the simulator's
}
