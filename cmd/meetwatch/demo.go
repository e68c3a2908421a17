package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/watcher/meetingapi/apisim"
)

const demoToken = "demo-token"

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", `Usage: meetwatch demo [flags]

A first look at meetwatch, with nothing to set up: it starts an embedded
NATS server, a simulated meeting API whose meetings start, change and end at
random, and the watcher against it, then prints each event as one line
until Ctrl-C. Its state lives in a temporary directory, removed on exit.

With --accounts N it simulates N accounts, acct-01 to acct-N, each with its
own meetings and token, and watches them all through an accounts file (as
MEETWATCH_ACCOUNTS_FILE does): each line names its account.`, stderr)
	interval := fs.Duration("interval", 2*time.Second, "poll interval")
	churn := fs.Duration("churn", 1500*time.Millisecond, "time between random meeting changes")
	meetings := fs.Int("meetings", 6, "meetings already running at start")
	listen := fs.String("nats-listen", natsembed.DefaultListen, "the `address` the embedded NATS server listens on, for meetwatch tail to attach to; a free port if it is taken")
	verbose := fs.Bool("v", false, "show the watcher's logs")
	accounts := fs.Int("accounts", 0, "simulate this `number` of accounts, each with --meetings of its own, and watch them through an accounts file; 0 for one account without a file")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := checkCounts(fs, *meetings); err != nil {
		return err
	}
	if *accounts < 0 {
		return usagef("--accounts %d: must not be negative", *accounts)
	}

	dir, err := os.MkdirTemp("", "meetwatch-demo-")
	if err != nil {
		return fmt.Errorf("creating a data dir: %w", err)
	}
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Options{Listen: *listen, StoreDir: dir})
	if err != nil {
		srv, err = natsembed.Start(natsembed.Options{Listen: "127.0.0.1:0", StoreDir: dir})
	}
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()

	// The simulator serves from here on: a failure before the watcher
	// starts stops it again.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	fail := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}
	seed := time.Now().UnixNano()
	environ := map[string]string{
		envPrefix + "NATS_URL":      srv.ClientURL(),
		envPrefix + "POLL_INTERVAL": interval.String(),
		envPrefix + "HTTP_ADDR":     "",          // no probes for a trial
		envPrefix + "LEASE_TTL":     "3s",        // one replica: lead after a second
		envPrefix + "SEAL_KEY":      rand.Text(), // a state that lives as long as the demo
	}
	apiURL := ""
	if *accounts > 0 {
		entries, err := startSimAccounts(ctx, g, *accounts, *meetings, *churn, apisim.Options{Token: demoToken, Seed: seed})
		if err != nil {
			return fail(err)
		}
		file := filepath.Join(dir, "accounts.yaml")
		if err := writeAccountsFile(file, entries); err != nil {
			return fail(err)
		}
		environ[envPrefix+"ACCOUNTS_FILE"] = file
		apiURL = entries[0].APIURL
	} else {
		sim := apisim.New(apisim.Options{Token: demoToken, Seed: seed})
		sim.AddN(*meetings)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(fmt.Errorf("listening for the simulated API: %w", err))
		}
		g.Go(func() error { return serveSim(ctx, sim, l, *churn, seed) })
		apiURL = "http://" + l.Addr().String()
		environ[envPrefix+"API_URL"] = apiURL
		environ[envPrefix+"ACCESS_TOKEN"] = demoToken
	}

	cfg, err := loadConfig(environ, true)
	if err != nil {
		return fail(err)
	}
	level := "warn"
	if *verbose {
		level = "info"
	}
	logger := newLogger(stderr, level, "text")

	nc, err := nats.Connect(srv.ClientURL(), nats.Name("meetwatch-demo"))
	if err != nil {
		return fail(fmt.Errorf("connecting to the embedded nats: %w", err))
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 256)
	if _, err := nc.ChanSubscribe(cfg.SubjectPrefix+".>", msgs); err != nil {
		return fail(fmt.Errorf("subscribing: %w", err))
	}

	if *accounts > 0 {
		fmt.Fprintf(stdout, "meetwatch demo: simulated API %s for %d accounts (%s), NATS %s\n", apiURL, *accounts, cfg.AccountsFile, srv.ClientURL())
	} else {
		fmt.Fprintf(stdout, "meetwatch demo: simulated API %s, NATS %s\n", apiURL, srv.ClientURL())
	}
	fmt.Fprintf(stdout, "polling every %s; in another terminal: MEETWATCH_NATS_URL=%s meetwatch tail\n", *interval, srv.ClientURL())
	fmt.Fprintln(stdout, "press Ctrl-C to stop")

	g.Go(func() error { return watch(ctx, cfg, logger) })
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case m := <-msgs:
				printEvent(stdout, m.Subject, m.Data, false)
			}
		}
	})
	return g.Wait()
}
