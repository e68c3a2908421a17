package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

func runSim(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sim", `Usage: meetwatch sim [flags]

Serves a simulated Huawei Cloud Meeting API (the ongoing-meeting list) on
addr, with meetings that start, change and end at random. Point
MEETWATCH_API_URL at the URL it prints to try meetwatch without an account.`, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	token := fs.String("token", "", "access token to accept (default $MEETWATCH_ACCESS_TOKEN, else sim-token)")
	meetings := fs.Int("meetings", 10, "meetings ongoing at start")
	churn := fs.Duration("churn", 2*time.Second, "time between random changes; 0 for none")
	seed := fs.Int64("seed", time.Now().UnixNano(), "random seed")
	appID := fs.String("app-id", "", "App ID whose login (HMAC-signed) the simulator accepts")
	appKey := fs.String("app-key", "", "App key for --app-id")
	account := fs.String("account", "", "account whose login (Basic) the simulator accepts")
	password := fs.String("password", "", "password for --account")
	tokenTTL := fs.Duration("token-ttl", 0, "lifetime of tokens issued by a login (default 12h)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
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

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	fmt.Fprintf(stdout, "simulated meeting API on http://%s (token %q)\n", l.Addr(), *token)
	return serveSim(ctx, sim, l, *churn, *seed)
}

// serveSim serves sim on l and, every churn, makes one random change, until
// ctx ends.
func serveSim(ctx context.Context, sim *apisim.Sim, l net.Listener, churn time.Duration, seed int64) error {
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
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
