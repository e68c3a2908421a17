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

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/ha"
)

// natsSecurity returns the security options for connecting to
// MEETWATCH_NATS_URL, or none when it is empty: then the server is the
// embedded one, which takes no credentials and speaks no TLS (see
// events.NATSAuth). Settings left over in that case are named in a warning,
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

// natsAuthError turns the NATS settings' error into a configuration error
// that names the variables.
func natsAuthError(err error) error {
	var se *events.SettingError
	if errors.As(err, &se) {
		return &configError{Var: strings.Join(varNames(se.Fields), ", "), Msg: se.Msg}
	}
	return err
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
	// reconnected hears of every reconnection, without blocking.
	reconnected chan struct{}

	mu       sync.Mutex
	lastDial error
	said     map[string]bool // asynchronous errors logged in this outage
}

func newNATSLink(logger *slog.Logger, health *ha.Health) *natsLink {
	return &natsLink{
		log: logger.With("component", "nats"), health: health,
		dialer:      net.Dialer{Timeout: 2 * time.Second}, // the client's own default
		reconnected: make(chan struct{}, 1),
	}
}

// options are the client options that report to the link.
func (l *natsLink) options() []nats.Option {
	return []nats.Option{
		nats.SetCustomDialer(l),
		nats.ConnectHandler(func(c *nats.Conn) { l.up(c, "nats connected", false) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			l.up(c, "nats reconnected", true)
			select {
			case l.reconnected <- struct{}{}:
			default:
			}
		}),
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
			if l.first(fmt.Sprint(attrs...)) {
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
// the dial error behind it when there was one.
func (l *natsLink) explain(err error) error {
	l.mu.Lock()
	dial := l.lastDial
	l.mu.Unlock()
	if dial == nil || (!errors.Is(err, nats.ErrNoServers) && !errors.Is(err, nats.ErrReconnectBufExceeded) &&
		!errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionReconnecting)) {
		return err
	}
	return fmt.Errorf("nats is not connected: %w (%w)", dial, err)
}
