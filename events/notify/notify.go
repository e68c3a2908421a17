// Package notify sends the events of a stream to a chat webhook through a
// durable JetStream consumer, one message per event, in stream order: each
// is acknowledged once the platform took it, so a restart resumes where the
// last run stopped and loses nothing, and a message the platform refuses
// for good is skipped rather than holding every later one back.
//
// What a message looks like on each platform, and how a platform's answer
// is read, is package chat's; this package is the consumer around it.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/chat"
	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot"
)

// DefaultDurable is the durable consumer's name when none is given.
const DefaultDurable = "meetwatch-notify"

// ackWait is how long the server waits for a message's acknowledgement
// before it delivers it again: after a crash, the message being sent is
// sent again within it, and every later one waits for it meanwhile. A
// send that takes longer (a platform asking to wait) reports progress
// well within it.
const ackWait = 5 * time.Second

// stopGrace is how long a stop lets the message being sent finish: cut
// short, the platform may have posted it all the same, and the next start
// would post it again. It keeps the stop within the 5 s every command
// promises.
const stopGrace = 3 * time.Second

// Config says what to read and what to send.
type Config struct {
	// Stream is the events' stream, and Filter the subjects read from it
	// ("<prefix>.>").
	Stream, Filter string
	// Durable names the durable consumer.
	Durable string
	// Kinds are the kinds of event sent; the others are acknowledged
	// without a message.
	Kinds []events.Kind
	// SkipInitial sends no message for a meeting already running when the
	// watcher first looked.
	SkipInitial bool
	// Sender posts to the webhook.
	Sender *chat.Sender
	Logger *slog.Logger
}

// Counts are what a run did, for its last log line.
type Counts struct {
	Sent, Skipped, Ignored int
}

// Open creates the durable consumer, or brings an existing one to the
// configuration, retrying while the stream does not exist yet (the watcher
// creates it) or NATS is not up, until ctx ends; then it returns nil,
// false, nil. created reports that the durable is new: it delivers only the
// events published from now on, no history.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (cons jetstream.Consumer, created bool, err error) {
	name, log := cfg.Durable, cfg.Logger
	want := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "meetwatch notify: one chat message per meeting event",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		// One at a time: the messages reach the chat in the order of the
		// stream, a message handed back is the next one delivered, and
		// nothing waits in a buffer while the platform is slow.
		MaxAckPending: 1,
		FilterSubject: cfg.Filter,
	}
	wait := backoff.Backoff{Base: 500 * time.Millisecond, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		_, err := js.Consumer(ctx, cfg.Stream, name)
		created = errors.Is(err, jetstream.ErrConsumerNotFound)
		if err == nil || created {
			cons, err = js.CreateOrUpdateConsumer(ctx, cfg.Stream, want)
		}
		if err == nil {
			return cons, created, nil
		}
		if ctx.Err() != nil {
			return nil, false, nil
		}
		if isAPIError(err, jetstream.JSErrCodeConsumerCreate) || isAPIError(err, jetstream.JSErrCodeBadRequest) {
			// The server refuses the configuration, such as an existing
			// durable of the same name made for another purpose.
			return nil, false, fmt.Errorf("opening durable %s on stream %s: %w", name, cfg.Stream, err)
		}
		msg := "nats not ready; retrying"
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			msg = "waiting for the stream; is meetwatch run started?"
		}
		log.Warn(msg, "stream", cfg.Stream, "durable", name, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, false, nil
		case <-time.After(wait.Next()):
		}
	}
}

// isAPIError reports whether err is JetStream's refusal with code.
func isAPIError(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}

// Run turns the messages of the durable consumer into chat messages until
// ctx ends, one at a time, and settles each: acknowledged once sent or not
// wanted, terminated once given up on, handed back when stopped mid-send.
// It returns an error only when the durable or its stream is deleted under
// it.
func Run(ctx context.Context, cons jetstream.Consumer, cfg Config) (Counts, error) {
	n := &notifier{cfg: cfg, log: cfg.Logger}
	err := n.run(ctx, cons)
	return n.counts, err
}

// notifier is one Run.
type notifier struct {
	cfg    Config
	log    *slog.Logger
	counts Counts
}

func (n *notifier) run(ctx context.Context, cons jetstream.Consumer) error {
	wait := backoff.Backoff{Base: 250 * time.Millisecond, Max: 5 * time.Second}
	for {
		if ctx.Err() != nil {
			// Not one more pull: the server would hand it the message
			// just handed back, to a process on its way out.
			return nil
		}
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		switch {
		case ctx.Err() != nil:
			if msg != nil {
				n.handBack(msg)
			}
			return nil
		case err == nil:
			wait.Reset()
			n.handle(ctx, msg)
			continue
		case errors.Is(err, nats.ErrTimeout):
			continue // nothing new within the pull's expiry
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
			errors.Is(err, jetstream.ErrStreamNotFound):
			return fmt.Errorf("reading the durable: %w", err)
		}
		d := wait.Next()
		n.log.Warn("fetching the next event; retrying", "err", err, "consecutive_errors", wait.Failures(), "wait", d)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// handle sends one message's event, if it is wanted, and settles it.
func (n *notifier) handle(ctx context.Context, m jetstream.Msg) {
	log := n.log.With("nats_subject", m.Subject())
	if md, err := m.Metadata(); err == nil {
		log = log.With("stream_seq", md.Sequence.Stream, "delivered", md.NumDelivered)
	}
	e, err := events.Decode(m.Data())
	if err != nil {
		n.counts.Skipped++
		log.Warn("not a meeting event; skipped", "err", err, "skipped_total", n.counts.Skipped)
		n.settle(log, "terminating", m.TermWithReason("not a meeting event"))
		return
	}
	log = log.With("event_id", e.ID, "kind", string(e.Kind()), "meeting", e.Subject)
	if reason := n.unwanted(e); reason != "" {
		n.counts.Ignored++
		log.Debug("event not sent", "reason", reason)
		n.settle(log, "acknowledging", m.Ack())
		return
	}

	// A send may wait long for the platform: the server hears that the
	// message is in progress, so that it does not deliver it again. A
	// stop gives it stopGrace to finish.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { keepAlive(sctx, m, log) })
	wg.Go(func() {
		select {
		case <-sctx.Done():
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-sctx.Done():
		case <-t.C:
			stop()
		}
	})
	err = n.cfg.Sender.Send(sctx, e, m.Data())
	stop()
	wg.Wait()

	switch {
	case err == nil:
		n.counts.Sent++
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Confirmed, so that a restart right after does not send it again.
		n.settle(log, "acknowledging", m.DoubleAck(actx))
		log.Info("event sent")
	case ctx.Err() != nil:
		n.handBack(m)
		log.Info("stopped while sending, past the grace for it; the event will be sent on the next start", "grace", stopGrace)
	default:
		n.counts.Skipped++
		log.Error("event skipped: the webhook did not take it", "err", err, "skipped_total", n.counts.Skipped)
		n.settle(log, "terminating", m.TermWithReason("refused by the webhook"))
	}
}

// unwanted says why e is not to be sent, or "" when it is.
func (n *notifier) unwanted(e events.Event) string {
	switch {
	case !slices.Contains(n.cfg.Kinds, e.Kind()):
		return "kind not selected"
	case e.Kind() == snapshot.Started && e.Data.Initial && n.cfg.SkipInitial:
		return "already running when the watcher first looked"
	}
	return ""
}

// handBack returns a message to the server for the next delivery, when
// stopping: with MaxAckPending 1 it is the next one delivered.
func (n *notifier) handBack(m jetstream.Msg) {
	n.settle(n.log, "handing back", m.Nak())
}

func (n *notifier) settle(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn(what+" the message", "err", err)
	}
}

// keepAlive tells the server every third of the ack wait that m is still
// being worked on, until ctx ends.
func keepAlive(ctx context.Context, m jetstream.Msg, log *slog.Logger) {
	t := time.NewTicker(ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.InProgress(); err != nil {
				log.Warn("extending the ack wait", "err", err)
			}
		}
	}
}
