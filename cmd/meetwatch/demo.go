package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
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
until Ctrl-C. Its state lives in a temporary directory, removed on exit.`, stderr)
	interval := fs.Duration("interval", 2*time.Second, "poll interval")
	churn := fs.Duration("churn", 1500*time.Millisecond, "time between random meeting changes")
	meetings := fs.Int("meetings", 6, "meetings already running at start")
	listen := fs.String("nats-listen", natsembed.DefaultListen, "the `address` the embedded NATS server listens on, for meetwatch tail to attach to; a free port if it is taken")
	verbose := fs.Bool("v", false, "show the watcher's logs")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := checkCounts(fs, *meetings); err != nil {
		return err
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

	seed := time.Now().UnixNano()
	sim := apisim.New(apisim.Options{Token: demoToken, Seed: seed})
	sim.AddN(*meetings)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the simulated API: %w", err)
	}

	cfg, err := loadConfig(map[string]string{
		envPrefix + "API_URL":       "http://" + l.Addr().String(),
		envPrefix + "ACCESS_TOKEN":  demoToken,
		envPrefix + "NATS_URL":      srv.ClientURL(),
		envPrefix + "POLL_INTERVAL": interval.String(),
		envPrefix + "HTTP_ADDR":     "",          // no probes for a trial
		envPrefix + "LEASE_TTL":     "3s",        // one replica: lead after a second
		envPrefix + "SEAL_KEY":      rand.Text(), // a state that lives as long as the demo
	}, true)
	if err != nil {
		return err
	}
	level := "warn"
	if *verbose {
		level = "info"
	}
	logger := newLogger(stderr, level, "text")

	nc, err := nats.Connect(srv.ClientURL(), nats.Name("meetwatch-demo"))
	if err != nil {
		return fmt.Errorf("connecting to the embedded nats: %w", err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 256)
	if _, err := nc.ChanSubscribe(cfg.SubjectPrefix+".>", msgs); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}

	fmt.Fprintf(stdout, "meetwatch demo: simulated API %s, NATS %s\n", cfg.APIURL, srv.ClientURL())
	fmt.Fprintf(stdout, "polling every %s; in another terminal: MEETWATCH_NATS_URL=%s meetwatch tail\n", *interval, srv.ClientURL())
	fmt.Fprintln(stdout, "press Ctrl-C to stop")

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveSim(ctx, sim, l, *churn, seed) })
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
