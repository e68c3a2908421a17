package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsembed"
	"github.com/meetwatch/meetwatch/events/publish"
	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
	"github.com/meetwatch/meetwatch/watcher/ha"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
	"github.com/meetwatch/meetwatch/watcher/meetingapi"
	"github.com/meetwatch/meetwatch/watcher/metrics"
)

func runDaemon(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "Usage: meetwatch run\n\nPolls the ongoing-meeting list, diffs it against the last committed\nsnapshot, publishes started/ended/changed events to JetStream, then commits.\nStops cleanly on SIGINT or SIGTERM.\n\nEnvironment:\n"+envHelp()+
		"\nThe MEETWATCH_NATS_* credentials and TLS settings apply only with MEETWATCH_NATS_URL:\nthe embedded server takes none.", stderr)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArguments(fs); err != nil {
		return err
	}
	cfg, err := loadConfig(environ, true)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	b := readBuild()
	logger.Info("meetwatch starting", "version", b.Version, "commit", b.Commit, "modified", b.Modified, "go", runtime.Version())
	return watch(ctx, cfg, logger)
}

// watch runs the watcher as configured until ctx ends, starting the
// embedded NATS server first when no NATS URL is set. The probes listen
// before anything connects, so that an orchestrator sees a live process
// however long NATS takes to answer.
func watch(ctx context.Context, cfg config, logger *slog.Logger) error {
	if cfg.AccountsFile != "" {
		return watchAccounts(ctx, cfg, logger)
	}
	health := &ha.Health{LoopGrace: cfg.loopGrace()}
	link, logger := linkedLogger(logger, health)
	var tokens meetingapi.TokenSource // set before the metrics are served
	mx := metrics.New(metrics.Sources{
		Leader:      health.Leader,
		Connected:   health.Connected,
		TokenExpiry: func() time.Time { return tokens.Expiry() },
	})
	hc := meetingapi.NewHTTPClient(cfg.PageConcurrency, cfg.RequestTimeout)
	hc.Transport = mx.Transport(cmp.Or(hc.Transport, http.DefaultTransport), meetingapi.Endpoints()...)
	var budget *rate.Limiter
	if cfg.APIRate > 0 {
		budget = meetingapi.NewBudget(cfg.APIRate, cfg.PageConcurrency)
		perPoll := int(float64(budget.Limit()) * cfg.PollInterval.Seconds())
		attrs := []any{"api_rate_per_min", cfg.APIRate, "requests_per_interval", perPoll,
			"max_meetings_per_interval", max(perPoll-1, 0) * max(cfg.PageSize-cfg.PageOverlap, 1)}
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

	return serve(ctx, cfg, mx, health, logger, func(ctx context.Context, natsURL string) error {
		pipe, err := openPipeline(ctx, natsURL, cfg, mx.Stored, health, link, logger)
		if err != nil || pipe == nil {
			return err // nil, nil: stopped while NATS was unreachable
		}
		defer pipe.close()
		return lead(ctx, cfg, pipe, client, policy, health, mx, logger)
	})
}

// serve runs work beside the probes' server until either ends: the run
// group of the process. With no NATS URL configured it starts the
// embedded server first, and hands work the URL to dial.
func serve(ctx context.Context, cfg config, mx *metrics.Metrics, health *ha.Health, logger *slog.Logger, work func(ctx context.Context, natsURL string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	serveProbes(gctx, g, cfg, mx, health, logger)
	natsURL := cfg.NATSURL
	if natsURL == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			cancel()
			_ = g.Wait() // the probes' server, stopping
			return err
		}
		defer natsembed.Stop(srv)
		natsURL = srv.ClientURL()
		logger.Info("embedded nats started", "url", natsURL, "data_dir", cfg.DataDir)
	}
	g.Go(func() error { return work(gctx, natsURL) })
	err := g.Wait()
	logger.Info("stopped")
	return err
}

// serveProbes serves the probes and the metrics in g until ctx ends, when
// an address is configured.
func serveProbes(ctx context.Context, g *errgroup.Group, cfg config, mx *metrics.Metrics, health *ha.Health, logger *slog.Logger) {
	if cfg.HTTPAddr == "" {
		return
	}
	// Several replicas on one host share a configuration, and so a
	// port: a replica without probes still watches.
	l, err := ha.Listen(cfg.HTTPAddr)
	if err != nil {
		logger.Error("probes disabled: set "+varName("HTTPAddr")+" to a free host:port, or empty to turn them off", "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", mx.Handler())
	mux.Handle("/", health.Handler())
	g.Go(func() error {
		if err := ha.Serve(ctx, l, mux, logger); err != nil {
			logger.Error("probes stopped", "err", err)
		}
		return nil
	})
}

// startEmbedded starts the embedded NATS server. A port another NATS
// holds (a demo, a second run) is said with the variables that resolve
// it, rather than as a bare "address already in use".
func startEmbedded(cfg config) (*server.Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	srv, err := natsembed.Start(natsembed.Options{Listen: cfg.EmbeddedListen, StoreDir: cfg.DataDir})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w: another NATS server (a meetwatch demo or run?) listens there; set %s=nats://%s to use it, or %s to listen elsewhere",
			err, varName("NATSURL"), cfg.EmbeddedListen, varName("EmbeddedListen"))
	}
	return srv, err
}

// lead runs the watcher for every term the lease grants this replica.
func lead(ctx context.Context, cfg config, pipe *pipeline, client *meetingapi.Client, policy *redact.Policy, health *ha.Health, mx *metrics.Metrics, logger *slog.Logger) error {
	ignore, _ := snapshot.ParseFieldSet(cfg.IgnoreFields) // validated with the configuration
	zone, _ := cfg.apiZone()                              // validated with the configuration
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
			Ignore: ignore, MaxBytes: events.MaxEventBytes(maxPayload), Zone: zone,
		},
		Redact:             policy,
		MaxRecordBytes:     events.MaxRecordBytes(maxPayload),
		Interval:           cfg.PollInterval,
		PollTimeout:        cfg.PollTimeout,
		ConfirmConcurrency: cfg.PageConcurrency,
		Wake:               pipe.link.connected,
		Logger:             logger,
		Health:             health,
		Observer:           mx,
	}
	if pipe.view != nil {
		wcfg.View = pipe.view
	}
	logger.Info("watching", "api", cfg.APIURL, "interval", cfg.PollInterval, "stream", cfg.Stream,
		"subjects", cfg.SubjectPrefix+".>", "state_bucket", cfg.StateBucket, "view_bucket", cfg.ViewBucket, "replica", cfg.replicaID(),
		"lease_bucket", cfg.LeaseBucket, "lease_ttl", pipe.lease.TTL())
	return watcher.Lead(ctx, pipe.lease, wcfg)
}

// tokenSource returns the configured way of getting an access token; the
// configuration has checked that exactly one is set. Logins wait for gate
// and the budget like every request, and after a refusal back off like
// failed polls.
func tokenSource(cfg config, hc *http.Client, budget *rate.Limiter, gate *meetingapi.Gate, logger *slog.Logger) meetingapi.TokenSource {
	login := meetingapi.LoginConfig{
		BaseURL: cfg.APIURL, HTTPClient: hc, Logger: logger, Gate: gate,
		Backoff: backoff.Backoff{Base: cfg.PollInterval}, // up to 5 minutes: refused credentials do not mend themselves
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
	link      *natsLink
	publisher *publish.Publisher
	store     *kvstore.Store
	// view is the consumers' view of the meetings going on; nil when
	// MEETWATCH_VIEW_BUCKET is empty.
	view  *kvstore.View
	lease *ha.Lease
	// placement shares the units of an accounts file out among the
	// replicas, in place of the lease; nil without the file.
	placement *ha.Placement
	// closed is closed once the connection is, after every callback
	// queued before it ran.
	closed chan struct{}
	// conflicts are the settings of the existing stream and buckets that
	// keep meetwatch from a guarantee, left as the operator set them:
	// the probes show them.
	conflicts []string
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

// leads guards every event and state write: only while NATS is connected,
// so that the write's failure names the cause, and this replica holds the
// lease by its own clock.
func (p *pipeline) leads() error {
	if !p.nc.IsConnected() {
		return p.link.explain(nats.ErrConnectionReconnecting)
	}
	if p.lease == nil {
		return fmt.Errorf("%w: no lease yet", watcher.ErrFenced)
	}
	return p.lease.Check()
}

// openPipeline connects to NATS and makes sure the stream and the state
// bucket exist, retrying until it succeeds or ctx ends, so that meetwatch
// can start before its NATS is up. It tells health how the connection and
// the set-up go. It returns nil, nil when ctx ends.
func openPipeline(ctx context.Context, url string, cfg config, stored func(events.Kind), health *ha.Health, link *natsLink, logger *slog.Logger) (*pipeline, error) {
	return openPipelineOf(ctx, url, cfg, stored, nil, health, link, logger)
}

// openPipelineOf is openPipeline, opening a placement of units (the
// accounts file's) rather than the lease when there are any.
func openPipelineOf(ctx context.Context, url string, cfg config, stored func(events.Kind), units []string, health *ha.Health, link *natsLink, logger *slog.Logger) (*pipeline, error) {
	security, err := natsSecurity(cfg, link.log)
	if err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	nc, err := nats.Connect(url, append(append(security,
		nats.Name("meetwatch"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		// A write made while disconnected fails at once rather than wait
		// in a buffer for the reconnection: by then this replica may no
		// longer lead, and the write must not go out late.
		nats.ReconnectBufSize(-1),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	), link.options()...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	health.SetConnection(nc.IsConnected)
	p := &pipeline{nc: nc, link: link, closed: closed}
	conflict := func(msg string) { p.conflicts = append(p.conflicts, msg) }
	p.publisher, err = publish.New(nc, publish.Config{
		Stream:     cfg.Stream,
		Prefix:     cfg.SubjectPrefix,
		Duplicates: cfg.DuplicateWindow,
		MaxAge:     cfg.StreamMaxAge,
		Replicas:   cfg.Replicas,
		Logger:     logger,
		Guard:      p.leads,
		Stored:     stored,
		Conflict:   conflict,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	js := p.publisher.JetStream() // the state's writes share the events' window
	wait := backoff.Backoff{Base: time.Second, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		pause := wait.Next()
		health.Beat(ha.LoopSetup, time.Now().Add(pause+time.Minute)) // a minute for the requests
		p.conflicts = nil                                            // each attempt checks the settings afresh
		err := p.open(ctx, js, cfg, units, health, conflict, logger)
		if err == nil {
			health.Recovered(ha.LoopSetup)
			health.Done(ha.LoopSetup)
			health.SetWarnings(p.conflicts)
			if p.placement != nil {
				health.SetPlacement(p.placement)
			} else {
				health.SetLease(p.lease)
			}
			return p, nil
		}
		if ctx.Err() != nil {
			nc.Close()
			return nil, nil
		}
		health.Failed(ha.LoopSetup, err)
		link.log.Warn("nats not ready; retrying", "url", redact.URLs(url), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, nil
		case <-time.After(pause):
		case <-link.connected:
		}
	}
}

// open makes sure of the stream and the buckets, and opens the lease, or
// the placement of units when there are any.
func (p *pipeline) open(ctx context.Context, js jetstream.JetStream, cfg config, units []string, health *ha.Health, conflict func(string), logger *slog.Logger) error {
	if !p.nc.IsConnected() {
		return nats.ErrConnectionReconnecting
	}
	if err := p.publisher.EnsureStream(ctx); err != nil {
		return err
	}
	store, err := kvstore.Open(ctx, js, kvstore.Config{Bucket: cfg.StateBucket, Replicas: cfg.Replicas, DuplicateWindow: cfg.DuplicateWindow,
		Guard: p.leads, Logger: logger, Conflict: conflict})
	if err != nil {
		return err
	}
	p.view = nil
	if cfg.ViewBucket != "" {
		p.view, err = kvstore.OpenView(ctx, js, kvstore.ViewConfig{Bucket: cfg.ViewBucket, Replicas: cfg.Replicas,
			Guard: p.leads, Logger: logger, Conflict: conflict})
		if err != nil {
			return err
		}
	}
	if units != nil {
		placement, err := ha.OpenPlacement(ctx, js, ha.PlacementConfig{
			Bucket: cfg.LeaseBucket, Replicas: cfg.Replicas, TTL: cfg.LeaseTTL, ID: cfg.replicaID(), Units: units, Logger: logger,
			Beat: func(until time.Time) { health.Beat(ha.LoopLease, until) }, Conflict: conflict,
		})
		if err != nil {
			return err
		}
		p.store, p.placement = store, placement
		return nil
	}
	lease, err := ha.OpenLease(ctx, js, ha.LeaseConfig{
		Bucket: cfg.LeaseBucket, Replicas: cfg.Replicas, TTL: cfg.LeaseTTL, ID: cfg.replicaID(), Logger: logger,
		Beat: func(until time.Time) { health.Beat(ha.LoopLease, until) }, Conflict: conflict,
	})
	if err != nil {
		return err
	}
	p.store, p.lease = store, lease
	return nil
}

// envHelp lists the configuration variables, each with its meaning and
// default, as the tags of the configuration's fields give them.
func envHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config]()) {
		if f.Anonymous {
			continue // an embedded struct: its fields follow it
		}
		fmt.Fprintf(tw, "  %s%s\t%s (default: %s)\n", envPrefix, f.Tag.Get("env"), f.Tag.Get("desc"), envDefault(f))
	}
	tw.Flush()
	return b.String()
}

// envDefault is what a variable left unset means, in words.
func envDefault(f reflect.StructField) string {
	if f.Name == "Redact" {
		return redact.DefaultSpec()
	}
	if def := f.Tag.Get("help"); def != "" { // a default worked out at start-up
		return def
	}
	return cmp.Or(f.Tag.Get("envDefault"), "empty")
}
