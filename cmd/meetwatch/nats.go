package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// natsSecurity returns the security options for connecting to
// MEETWATCH_NATS_URL, or none when it is empty: then the server is the
// embedded one, which takes no credentials and speaks no TLS (see
// NATSAuth). Settings left over in that case are named in a warning,
// since they suggest MEETWATCH_NATS_URL was meant to be set.
func natsSecurity(cfg config, logger *slog.Logger) ([]nats.Option, error) {
	if cfg.NATSURL == "" {
		if names := varNames(cfg.NATSAuth.Set()); len(names) > 0 {
			logger.Warn("nats security settings ignored: they apply only with "+varName("NATSURL"), "vars", strings.Join(names, ","))
		}
		return nil, nil
	}
	return cfg.NATSAuth.Options()
}

func varNames(fields []string) []string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = varName(f)
	}
	return names
}

// dialNATS connects a command that reads what meetwatch wrote (tail, ls,
// audit, notify) with the NATS settings of meetwatch run,
// MEETWATCH_NATS_URL defaulting to a local server, reconnecting for as
// long as it runs. A server that cannot be reached at first is an error
// that says why.
func dialNATS(cfg config, name string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	url := cmp.Or(cfg.NATSURL, defaultNATSURL)
	security, err := natsSecurity(cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	link := newNATSLink(logger, nil)
	opts = append(append(append(security, nats.Name(name), nats.MaxReconnects(-1)), link.options()...), opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", redact.URLs(url), link.explain(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return nc, js, nil
}

// natsLink follows one NATS connection for the log and, in run, the
// probes. It logs a disconnection and the reconnection once each, and
// each distinct asynchronous error once per outage (an ordered
// consumer's missed heartbeats repeat every few seconds while the server
// is away); it records why the last dial failed, so that an error made
// while disconnected names the cause rather than the client's "no
// servers available" or "outbound buffer limit exceeded".
type natsLink struct {
	log    *slog.Logger
	health *ha.Health // nil outside run
	dialer net.Dialer
	// connected hears of the first connection and every reconnection,
	// without blocking: what waits for NATS (the set-up, a failing poll)
	// goes on at once rather than after its backoff.
	connected chan struct{}

	mu       sync.Mutex
	lastDial error
	said     map[string]bool // asynchronous errors logged in this outage
}

// linkedLogger returns the link of a watcher whose probes health serves,
// and logger with the link's explanations: the NATS client's words for a
// request made while it is away ("outbound buffer limit exceeded") are
// said as what they mean, with the dial error, in every line and in the
// probes.
func linkedLogger(logger *slog.Logger, health *ha.Health) (*natsLink, *slog.Logger) {
	link := newNATSLink(logger, health)
	health.Explain = link.explainText
	return link, slog.New(link.explaining(logger.Handler()))
}

func newNATSLink(logger *slog.Logger, health *ha.Health) *natsLink {
	l := &natsLink{
		health:    health,
		dialer:    net.Dialer{Timeout: 2 * time.Second}, // the client's own default
		connected: make(chan struct{}, 1),
	}
	l.log = slog.New(l.explaining(logger.Handler())).With("component", "nats")
	return l
}

// options are the client options that report to the link.
func (l *natsLink) options() []nats.Option {
	return []nats.Option{
		nats.SetCustomDialer(l),
		nats.ConnectHandler(func(c *nats.Conn) { l.up(c, "nats connected", false) }),
		nats.ReconnectHandler(func(c *nats.Conn) { l.up(c, "nats reconnected", true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // closed on purpose
			}
			l.log.Warn("nats disconnected", "err", err)
			if l.health != nil {
				l.health.Failed(ha.SourceNATS, fmt.Errorf("nats disconnected: %w", err))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if l.health != nil {
				l.health.Failed(ha.SourceNATS, fmt.Errorf("nats is not connected: %w", err))
			}
		}),
		// What the server refuses asynchronously (a permission, a slow
		// consumer) goes to the log with the rest, not to bare stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			if l.first(err.Error()) { // an ordered consumer's subject changes as it is made anew
				l.log.Error("nats error", attrs...)
				return
			}
			l.log.Debug("nats error", attrs...)
		}),
	}
}

// Dial dials as the client would, and keeps the error of a failed dial.
func (l *natsLink) Dial(network, address string) (net.Conn, error) {
	c, err := l.dialer.Dial(network, address)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastDial = err
	return c, err
}

// up hears of a connection. The first is worth a line only when dials
// failed before it; every reconnection is.
func (l *natsLink) up(c *nats.Conn, msg string, again bool) {
	l.mu.Lock()
	l.said = nil
	failed := l.lastDial != nil
	l.mu.Unlock()
	level := slog.LevelDebug
	if again || failed {
		level = slog.LevelInfo
	}
	l.log.Log(context.Background(), level, msg, "url", redact.URL(c.ConnectedUrl()))
	if l.health != nil {
		l.health.Recovered(ha.SourceNATS)
	}
	select {
	case l.connected <- struct{}{}:
	default:
	}
}

// first reports whether an asynchronous error is new in this outage.
func (l *natsLink) first(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.said[key] {
		return false
	}
	if l.said == nil {
		l.said = make(map[string]bool)
	}
	l.said[key] = true
	return true
}

// explain returns err, said of a NATS that could not be reached, with
// the dial error behind it when there was one: the client's own words for
// a request made while disconnected ("no servers available", "outbound
// buffer limit exceeded") do not say that NATS is away, nor why.
func (l *natsLink) explain(err error) error {
	switch {
	case err == nil, errors.As(err, new(*notConnectedError)):
		return err
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting):
		l.mu.Lock()
		defer l.mu.Unlock()
		return &notConnectedError{dial: l.lastDial, err: err}
	}
	return err
}

// explainText is explain for an error that reached a line through other
// code's wrapping: the client's words are replaced where they stand, so
// the context around them stays.
func (l *natsLink) explainText(err error) string {
	text := err.Error()
	if errors.As(err, new(*notConnectedError)) {
		return text
	}
	for _, client := range []error{nats.ErrReconnectBufExceeded, nats.ErrConnectionReconnecting, nats.ErrNoServers} {
		if errors.Is(err, client) {
			return strings.Replace(text, client.Error(), l.explain(client).Error(), 1)
		}
	}
	return text
}

// notConnectedError is a request made while NATS was unreachable.
type notConnectedError struct {
	dial error // the last dial's error; nil when none failed yet
	err  error // what the client said
}

func (e *notConnectedError) Error() string {
	if e.dial == nil {
		return "nats is not connected"
	}
	return "nats is not connected: " + e.dial.Error()
}

func (e *notConnectedError) Unwrap() []error { return []error{e.dial, e.err} }

// explaining returns h, with each error a record carries said as
// explainText says it.
func (l *natsLink) explaining(h slog.Handler) slog.Handler { return explainHandler{h, l} }

type explainHandler struct {
	slog.Handler
	link *natsLink
}

func (e explainHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Value.Kind() == slog.KindAny {
			a = slog.String(a.Key, e.link.explainText(err))
		}
		out.AddAttrs(a)
		return true
	})
	return e.Handler.Handle(ctx, out)
}

func (e explainHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return explainHandler{e.Handler.WithAttrs(as), e.link}
}

func (e explainHandler) WithGroup(name string) slog.Handler {
	return explainHandler{e.Handler.WithGroup(name), e.link}
}
