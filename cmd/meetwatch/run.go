package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	neturl "net/url"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/backoff"
	"github.com/meetwatch/meetwatch/watcher/ha"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/metrics"
)

func runDaemon(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "Usage: meetwatch run\n\nPolls the ongoing-meeting list, diffs it against the last committed\nsnapshot, publishes started/ended/changed events to JetStream, then commits.\nStops cleanly on SIGINT or SIGTERM.\n\nEnvironment:\n"+envHelp(), stderr)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	cfg, err := loadConfig(environ, true)
	if err != nil {
		return err
	}
	return watch(ctx, cfg, newLogger(stderr, cfg.LogLevel, cfg.LogFormat))
}

// watch runs the watcher as configured until ctx ends, starting the
// embedded NATS server first when no NATS URL is set.
func watch(ctx context.Context, cfg config, logger *slog.Logger) error {
	natsURL := cfg.NATSURL
	if natsURL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
		srv, err := natsembed.Start(natsembed.Options{Listen: cfg.EmbeddedListen, StoreDir: cfg.DataDir})
		if err != nil {
			return err
		}
		defer natsembed.Stop(srv)
		natsURL = srv.ClientURL()
		logger.Info("embedded nats started", "url", natsURL, "data_dir", cfg.DataDir)
	}

	var pipe *pipeline // set once NATS answers, before the metrics are served
	var tokens meetingapi.TokenSource
	mx := metrics.New(metrics.Sources{
		Leader:      func() bool { return pipe.lease.Leader() },
		Connected:   func() bool { return pipe.nc.IsConnected() },
		TokenExpiry: func() time.Time { return tokens.Expiry() },
	})
	hc := meetingapi.NewHTTPClient(cfg.PageConcurrency, cfg.RequestTimeout)
	hc.Transport = mx.Transport(cmp.Or(hc.Transport, http.DefaultTransport), meetingapi.Endpoints()...)
	var budget *rate.Limiter
	if cfg.APIRate > 0 {
		budget = meetingapi.NewBudget(cfg.APIRate, cfg.PageConcurrency)
		perPoll := int(float64(budget.Limit()) * cfg.PollInterval.Seconds())
		attrs := []any{"api_rate_per_min", cfg.APIRate, "requests_per_interval", perPoll,
			"max_meetings_per_interval", max(perPoll-1, 0) * cfg.PageSize}
		if perPoll < 2 {
			logger.Warn("the request budget fits less than one listing and one confirmation per poll interval; polls will run back to back", attrs...)
		} else {
			logger.Info("request budget", attrs...)
		}
	}
	policy, _ := redact.Parse(cfg.Redact) // validated with the configuration
	if key, _ := cfg.sealKey(); key != nil {
		policy = policy.WithKey(key)
	} else if policy != nil {
		logger.Warn("the digests of secrets in the state bucket are not keyed: anyone who can read the bucket can test guesses of a short password against them; set MEETWATCH_SEAL_KEY or MEETWATCH_SEAL_KEY_FILE")
	}
	// One gate for the client and its logins: a pause the API asks for in
	// any answer holds every request.
	gate := &meetingapi.Gate{}
	tokens = tokenSource(cfg, hc, budget, gate, logger)
	defer tokens.Close()
	client, err := newAPIClient(cfg, tokens, budget, gate, hc, logger)
	if err != nil {
		return bad("APIURL", "%v", err)
	}
	pipe, err = openPipeline(ctx, natsURL, cfg, mx.Stored, logger)
	if err != nil || pipe == nil {
		return err // nil, nil: stopped while NATS was unreachable
	}
	defer pipe.close()

	health := &ha.Health{
		Connected:   pipe.nc.IsConnected,
		Lease:       pipe.lease,
		LoopGrace:   cfg.loopGrace(),
		LeaseMaxAge: 3 * cfg.LeaseTTL,
	}
	ignore, _ := snapshot.ParseFieldSet(cfg.IgnoreFields) // validated with the configuration
	// The server's max payload bounds every event and state value: records
	// are trimmed to fit rather than wedge the polls (it is read once, at
	// start; a cluster should agree on it).
	maxPayload := pipe.nc.MaxPayload()
	logger.Info("size limits", "max_payload", maxPayload,
		"max_event_bytes", events.MaxEventBytes(maxPayload), "max_record_bytes", events.MaxRecordBytes(maxPayload))
	wcfg := watcher.Config{
		Lister:    client,
		Publisher: pipe.publisher,
		Store:     pipe.store,
		Builder: events.Builder{
			Source: events.Source(client.Host()), Prefix: cfg.SubjectPrefix, Redact: policy,
			Ignore: ignore, MaxBytes: events.MaxEventBytes(maxPayload),
		},
		Redact:             policy,
		MaxRecordBytes:     events.MaxRecordBytes(maxPayload),
		Interval:           cfg.PollInterval,
		PollTimeout:        cfg.PollTimeout,
		ConfirmConcurrency: cfg.PageConcurrency,
		Wake:               pipe.reconnected,
		Logger:             logger,
		Health:             health,
		Observer:           mx,
	}
	logger.Info("watching", "api", cfg.APIURL, "interval", cfg.PollInterval, "stream", cfg.Stream,
		"subjects", cfg.SubjectPrefix+".>", "state_bucket", cfg.StateBucket, "replica", cfg.replicaID(),
		"lease_bucket", cfg.LeaseBucket, "lease_ttl", cfg.LeaseTTL)

	g, gctx := errgroup.WithContext(ctx)
	if cfg.HTTPAddr != "" {
		g.Go(func() error {
			// Several replicas on one host share a configuration, and so a
			// port: a replica without probes still watches.
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", mx.Handler())
			mux.Handle("/", health.Handler())
			if err := ha.Serve(gctx, cfg.HTTPAddr, mux, logger); err != nil {
				logger.Error("probes disabled", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error { return watcher.Lead(gctx, pipe.lease, wcfg) })
	err = g.Wait()
	logger.Info("stopped")
	return err
}

// tokenSource returns the configured way of getting an access token; the
// configuration has checked that exactly one is set. Logins wait for gate
// and the budget like every request, and after a refusal back off like
// failed polls.
func tokenSource(cfg config, hc *http.Client, budget *rate.Limiter, gate *meetingapi.Gate, logger *slog.Logger) meetingapi.TokenSource {
	login := meetingapi.LoginConfig{
		BaseURL: cfg.APIURL, HTTPClient: hc, Logger: logger, Gate: gate,
		Backoff: backoff.Backoff{Base: cfg.PollInterval, Max: watcher.MaxBackoff},
	}
	if budget != nil {
		login.Wait = budget.Wait
	}
	switch {
	case cfg.AppID != "":
		return meetingapi.NewAppIDLogin(login, meetingapi.AppIDCredentials{AppID: cfg.AppID, AppKey: cfg.AppKey, UserID: cfg.UserID, CorpID: cfg.CorpID})
	case cfg.Account != "":
		return meetingapi.NewAccountLogin(login, meetingapi.AccountCredentials{Account: cfg.Account, Password: cfg.Password})
	default:
		return meetingapi.StaticToken(cfg.AccessToken)
	}
}

// newAPIClient returns the meeting API's client as the configuration sets
// it up, for run and for check alike.
func newAPIClient(cfg config, tokens meetingapi.TokenSource, budget *rate.Limiter, gate *meetingapi.Gate, hc *http.Client, logger *slog.Logger) (*meetingapi.Client, error) {
	return meetingapi.NewClient(meetingapi.ClientConfig{
		BaseURL:        cfg.APIURL,
		Tokens:         tokens,
		PageSize:       cfg.PageSize,
		Overlap:        cmp.Or(cfg.PageOverlap, -1), // the setting's 0 is the client's "none"
		QueryAll:       cfg.QueryAll,
		SearchKey:      cfg.SearchKey,
		Concurrency:    cfg.PageConcurrency,
		RequestTimeout: cfg.RequestTimeout,
		Budget:         budget,
		Gate:           gate,
		HTTPClient:     hc,
		Logger:         logger,
	})
}

// pipeline is what the watcher needs from NATS.
type pipeline struct {
	nc        *nats.Conn
	publisher *events.Publisher
	store     *kvstore.Store
	lease     *ha.Lease
	// reconnected hears of every reconnection, so that polls failing
	// while NATS was away start again at once rather than after their
	// backoff.
	reconnected chan struct{}
	// closed is closed once the connection is, after every callback
	// queued before it ran.
	closed chan struct{}
}

// close closes the connection and waits, a second at most, until the
// callbacks queued before have run: an error the server sent for the last
// requests (a permission refused while stopping) is logged before
// meetwatch exits, rather than lost with the process.
func (p *pipeline) close() {
	p.nc.Close()
	select {
	case <-p.closed:
	case <-time.After(time.Second):
	}
}

// leads guards every event and state write: only while this replica holds
// the lease by its own clock.
func (p *pipeline) leads() error {
	if p.lease == nil {
		return fmt.Errorf("%w: no lease yet", watcher.ErrFenced)
	}
	return p.lease.Check()
}

// openPipeline connects to NATS and makes sure the stream and the state
// bucket exist, retrying until it succeeds or ctx ends, so that meetwatch
// can start before its NATS is up. It returns nil, nil when ctx ends.
func openPipeline(ctx context.Context, url string, cfg config, stored func(events.Kind), logger *slog.Logger) (*pipeline, error) {
	log := logger.With("component", "nats")
	security, err := natsSecurity(cfg, log)
	if err != nil {
		return nil, err
	}
	reconnected, closed := make(chan struct{}, 1), make(chan struct{})
	nc, err := nats.Connect(url, append(security,
		nats.Name("meetwatch"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		// A write made while disconnected fails at once rather than wait
		// in a buffer for the reconnection: by then this replica may no
		// longer lead, and the write must not go out late.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
		// What the server refuses asynchronously (a permission, a slow
		// consumer) goes to the log with the rest, not to bare stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("nats error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("nats error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	p := &pipeline{nc: nc, reconnected: reconnected, closed: closed}
	p.publisher, err = events.NewPublisher(nc, events.PublisherConfig{
		Stream:     cfg.Stream,
		Prefix:     cfg.SubjectPrefix,
		Duplicates: cfg.DuplicateWindow,
		MaxAge:     cfg.StreamMaxAge,
		Replicas:   cfg.Replicas,
		Logger:     logger,
		Guard:      p.leads,
		Stored:     stored,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	wait := backoff.Backoff{Base: time.Second, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		err := p.publisher.EnsureStream(ctx)
		if err == nil {
			p.store, err = kvstore.Open(ctx, js, kvstore.Config{Bucket: cfg.StateBucket, Replicas: cfg.Replicas, Guard: p.leads, Logger: logger})
		}
		if err == nil {
			p.lease, err = ha.OpenLease(ctx, js, ha.LeaseConfig{
				Bucket: cfg.LeaseBucket, Replicas: cfg.Replicas, TTL: cfg.LeaseTTL, ID: cfg.replicaID(), Logger: logger,
			})
		}
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			nc.Close()
			return nil, nil
		}
		log.Warn("nats not ready; retrying", "url", redactURLs(url), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, nil
		case <-time.After(wait.Next()):
		}
	}
}

// envHelp lists the configuration variables and their defaults.
func envHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		if f.Anonymous {
			continue // an embedded struct: its fields follow it
		}
		def := f.Tag.Get("envDefault")
		if help := f.Tag.Get("help"); help != "" { // a default worked out at start-up
			def = help
		}
		if f.Name == "Redact" {
			def = redact.DefaultSpec()
		}
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(tw, "  %s%s\t%s\n", envPrefix, f.Tag.Get("env"), def)
	}
	tw.Flush()
	return b.String()
}

// redactURLs returns NATS server URLs without the user information they may
// carry, for log lines.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
