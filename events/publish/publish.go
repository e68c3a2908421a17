// Package publish delivers meetwatch's events to their JetStream stream,
// and reports success only when every event is acknowledged: the watcher
// commits its state after a successful publish, so an event that is not
// safely stored must fail it.
package publish

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/jsensure"
	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/internal/pubwindow"
	"github.com/meetwatch/meetwatch/watcher"
)

// Publisher delivers events to a JetStream stream and reports success only
// when every event is acknowledged: the watcher commits its state after a
// successful Publish, so an event that is not safely stored must fail it.
type Publisher struct {
	js  jetstream.JetStream
	cfg Config
	// subjects is the prefix of the events' subjects: Prefix, or
	// <Prefix>.<Account>.
	subjects string
	logger   *slog.Logger
}

// PublisherConfig describes the stream events go to.
type Config struct {
	// Stream is the stream's name; it holds the subjects <Prefix>.>.
	Stream string
	// Prefix is the first subject token(s): MEETWATCH_SUBJECT_PREFIX.
	Prefix string
	// Account, when set, names the account of an accounts file whose
	// events this publisher sends: they go to
	// <Prefix>.<Account>.<kind>.<confUUID>, in the one stream of every
	// account, whose subjects stay <Prefix>.> (EnsureStream never narrows
	// them to one account's). Empty for a watcher of one account, whose
	// events go to <Prefix>.<kind>.<confUUID>.
	Account string
	// Duplicates is the stream's deduplication window. It must outlast a
	// restart, so that re-publishing an event with its id is dropped; an
	// existing stream's window may be longer.
	Duplicates time.Duration
	// Replicas is the stream's replica count when EnsureStream creates
	// it; 0 means 1.
	Replicas int
	// MaxAge bounds how long events are kept, in a stream EnsureStream
	// creates; 0 keeps them until removed by hand. It must not be shorter
	// than Duplicates.
	MaxAge time.Duration
	// AckTimeout bounds the wait for one acknowledgement; 0 means 5s. An
	// acknowledgement lost with a stream leader that died never comes:
	// the wait is what events stall by before the retry under a new
	// leader, while a live server answers within milliseconds even with
	// a thousand events in flight.
	AckTimeout time.Duration
	// Attempts bounds how often one event is sent before Publish fails;
	// 0 means 5. Every attempt carries the same id.
	Attempts int
	// Logger receives retries; nil discards them.
	Logger *slog.Logger
	// Guard, when set, is asked before every event goes out, and an error
	// it returns stops the publish: the lease's check that this replica
	// still leads by its own clock.
	Guard func() error
	// Stored, when set, hears of each event the stream stored (not of one
	// it dropped as a duplicate), for metrics.
	Stored func(events.Kind)
	// Conflict, when set, hears of each setting of an existing stream
	// that keeps events from a guarantee and that EnsureStream leaves as
	// the operator set it, as a sentence for the readiness probe.
	Conflict func(msg string)
}

var _ watcher.Publisher = (*Publisher)(nil)

// New returns a Publisher on nc. Call EnsureStream before Publish.
func New(nc *nats.Conn, cfg Config) (*Publisher, error) {
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 5
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(pubwindow.Window),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	subjects := cfg.Prefix
	if cfg.Account != "" {
		subjects += "." + cfg.Account
	}
	return &Publisher{js: js, cfg: cfg, subjects: subjects, logger: cfg.Logger.With("component", "publisher")}, nil
}

// JetStream returns the context the events go through: its asynchronous
// publishes allow pubwindow.Window pending, and time out after AckTimeout.
// The state store writes through it too, so that one cap and one timeout
// cover every write of a poll.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Close lets go of what the publisher's asynchronous publishes hold on
// the connection (the subscription their acknowledgements come back on),
// so that the publishers a long-lived process makes and drops (one per
// term of an account) leave nothing behind. Call it once no Send is in
// flight: one that is fails.
func (p *Publisher) Close() { p.js.CleanupPublisher() }

// EnsureStream creates the stream with the configuration when it is
// missing, and otherwise leaves the settings an operator gave it as they
// are: only the subjects events go to are added when the stream lacks
// them, since without them nothing could be published. A duplicate window
// shorter than Duplicates is kept too, but logged at WARN and reported to
// Conflict, since it lets a re-published event be stored twice.
func (p *Publisher) EnsureStream(ctx context.Context) error {
	subjects := p.cfg.Prefix + ".>"
	cfg, err := jsensure.Stream(ctx, p.js, jetstream.StreamConfig{
		Name:        p.cfg.Stream,
		Description: "meetwatch meeting events",
		Subjects:    []string{subjects},
		Storage:     jetstream.FileStorage,
		Duplicates:  p.cfg.Duplicates,
		MaxAge:      p.cfg.MaxAge,
		Replicas:    p.cfg.Replicas,
	}, func(cfg *jetstream.StreamConfig) []string {
		if slices.ContainsFunc(cfg.Subjects, func(s string) bool { return jsensure.Covers(s, subjects) }) {
			return nil
		}
		cfg.Subjects = append(cfg.Subjects, subjects)
		return []string{"subjects " + subjects}
	}, p.logger)
	if err != nil {
		return err
	}
	log := p.logger.With("stream", p.cfg.Stream)
	switch {
	case cfg.Duplicates < p.cfg.Duplicates:
		log.Warn("the stream's duplicate window is shorter than configured; keeping it, so an event published again after it is stored twice",
			"duplicate_window", cfg.Duplicates, "configured_duplicate_window", p.cfg.Duplicates)
		p.conflict(fmt.Sprintf("stream %s has a duplicate window of %s, shorter than the %s configured: an event published again more than %s after it was first (after a restart or an outage) is stored twice",
			p.cfg.Stream, cfg.Duplicates, p.cfg.Duplicates, cfg.Duplicates))
	case cfg.Duplicates > p.cfg.Duplicates:
		log.Debug("the stream's duplicate window is longer than configured; keeping it",
			"duplicate_window", cfg.Duplicates, "configured_duplicate_window", p.cfg.Duplicates)
	}
	if cfg.MaxAge != p.cfg.MaxAge || cfg.Replicas != p.cfg.Replicas {
		log.Info("the stream's own settings differ from the configured ones; keeping them",
			"max_age", cfg.MaxAge, "configured_max_age", p.cfg.MaxAge, "replicas", cfg.Replicas, "configured_replicas", p.cfg.Replicas)
	}
	return nil
}

// conflict reports msg to the configured Conflict, if any.
func (p *Publisher) conflict(msg string) {
	if p.cfg.Conflict != nil {
		p.cfg.Conflict(msg)
	}
}

// Publish encodes every event, sends it and waits for every
// acknowledgement, as Send does.
func (p *Publisher) Publish(ctx context.Context, evs []events.Event) (events.PublishResult, error) {
	msgs := make([]events.Message, len(evs))
	for i, e := range evs {
		m, err := e.Message()
		if err != nil {
			return events.PublishResult{}, err
		}
		msgs[i] = m
	}
	return p.Send(ctx, msgs)
}

// Send sends every message and waits for every acknowledgement.
//
// A message whose acknowledgement fails or times out may still have been
// stored, so it is sent again with the same id, up to the configured number
// of attempts; JetStream's deduplication turns any second copy into a
// duplicate ack. Send returns an error if any message is still
// unconfirmed. At most pubwindow.Window of them wait for their
// acknowledgement at once.
func (p *Publisher) Send(ctx context.Context, msgs []events.Message) (events.PublishResult, error) {
	var res events.PublishResult
	pending := make([]int, len(msgs))
	for i := range pending {
		pending[i] = i
	}
	var lastErr error
	wait := backoff.Backoff{Base: 250 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; len(pending) > 0; attempt++ {
		if attempt > 1 {
			if attempt > p.cfg.Attempts {
				return res, fmt.Errorf("publishing: %d of %d events unacknowledged after %d attempts: %w",
					len(pending), len(msgs), p.cfg.Attempts, lastErr)
			}
			p.logger.Warn("retrying unacknowledged events", "pending", len(pending), "attempt", attempt, "err", lastErr)
			t := time.NewTimer(wait.Next())
			select {
			case <-ctx.Done():
				t.Stop()
				return res, fmt.Errorf("publishing: %w", context.Cause(ctx))
			case <-t.C:
			}
		}
		var failed []int
		err := pubwindow.Publish(ctx, p.js, len(pending), pubwindow.Window,
			func(k int) (*nats.Msg, []jetstream.PublishOpt, error) {
				if p.cfg.Guard != nil {
					if err := p.cfg.Guard(); err != nil {
						return nil, nil, err
					}
				}
				m := &msgs[pending[k]]
				msg := &nats.Msg{
					Subject: events.Subject(p.subjects, m.Kind, m.Meeting),
					Header:  nats.Header{"Content-Type": []string{events.ContentType}},
					Data:    m.Body,
				}
				return msg, []jetstream.PublishOpt{jetstream.WithMsgID(m.ID), jetstream.WithExpectStream(p.cfg.Stream)}, nil
			},
			func(k int, ack *jetstream.PubAck, err error) error {
				switch {
				case err != nil:
					lastErr = err
					failed = append(failed, pending[k])
				case ack.Duplicate:
					res.Duplicates++
				default:
					res.Stored++
					if p.cfg.Stored != nil {
						p.cfg.Stored(msgs[pending[k]].Kind)
					}
				}
				return nil
			})
		if err != nil {
			return res, fmt.Errorf("publishing: %w", err)
		}
		pending = failed
	}
	return res, nil
}
