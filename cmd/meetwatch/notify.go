package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/chat"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/backoff"
)

// Defaults of `meetwatch notify`.
const (
	defaultDurable = "meetwatch-notify"
	defaultKinds   = "started,ended"
	// notifyAckWait is how long the server waits for a message's
	// acknowledgement before it delivers it again: after a crash, the
	// message being sent is sent again within it. A send that takes
	// longer (a platform asking to wait) reports progress well within it.
	notifyAckWait = 30 * time.Second
)

// Variables that keep the webhook's credentials off the command line,
// where other users of the host can read them.
const (
	envNotifyWebhook = envPrefix + "NOTIFY_WEBHOOK"
	envNotifySecret  = envPrefix + "NOTIFY_SECRET"
)

const notifyHelp = `Usage: meetwatch notify --webhook URL --format FORMAT [--secret S] [--kinds started,ended] [--durable NAME]

Posts one chat message per meeting event to a webhook: the kind, the
meeting's subject and conference ID and, for a changed meeting, what
changed (old → new when both are short). FORMAT is the platform:

  slack        Slack incoming webhook
  feishu       Feishu / Lark custom bot (--secret: the bot's signing secret)
  dingtalk     DingTalk custom robot (--secret: its SEC... signing secret)
  wecom        WeCom group robot
  welink       Huawei WeLink group robot
  cloudevents  the event itself, as stored, to any HTTP receiver
               (Content-Type: application/cloudevents+json)

Events are read through a durable JetStream consumer (--durable). Its
first start sends only the events that arrive after it, no history; a
restart resumes where the last run stopped, and nothing is lost. An event
is acknowledged only once the platform has accepted it. Sends are paced
within the platform's documented rate; a 429 or the platform's rate-limit
code waits (Retry-After) and tries again; 5xx and network errors are
retried with backoff for as long as they last; a message the platform
refuses 3 times is logged and skipped. Events of the kinds not selected
are acknowledged without a message, and so, with --skip-initial, are the
started events of meetings already running when the watcher first looked
(their message says so otherwise).
Stops cleanly on SIGINT or SIGTERM.

Environment: MEETWATCH_NATS_URL (default ` + defaultNATSURL + `),
MEETWATCH_STREAM, MEETWATCH_SUBJECT_PREFIX, MEETWATCH_NATS_* (credentials,
TLS) and MEETWATCH_LOG_LEVEL, MEETWATCH_LOG_FORMAT. The webhook URL and
the secret are credentials: ` + envNotifyWebhook + ` and
` + envNotifySecret + ` keep them off the command line.

Example:
  meetwatch notify --format dingtalk --kinds started,ended,changed \
    --webhook 'https://oapi.dingtalk.com/robot/send?access_token=...' --secret 'SEC...'`

// notifyOptions is what the flags ask of a notifier.
type notifyOptions struct {
	webhook *chat.Webhook
	kinds   []events.Kind
	durable string
	// skipInitial sends no message for a meeting already running when the
	// watcher first looked.
	skipInitial bool
}

func runNotify(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("notify", notifyHelp, stderr)
	webhook := fs.String("webhook", "", "the webhook `URL`; or set "+envNotifyWebhook)
	format := fs.String("format", "", "the platform, `FORMAT`: slack, feishu, dingtalk, wecom, welink or cloudevents")
	secret := fs.String("secret", "", "the signing secret of a feishu or dingtalk bot; or set "+envNotifySecret)
	kinds := fs.String("kinds", defaultKinds, "the event kinds to send, comma-separated: started, ended, changed")
	durable := fs.String("durable", defaultDurable, "the durable consumer's `NAME`: where this notifier resumes")
	skipInitial := fs.Bool("skip-initial", false, "send no message for the started events of meetings already running when the watcher first looked")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return notifyUsage(stderr, "unexpected argument %q", fs.Arg(0))
	}
	opts, err := parseNotifyOptions(*webhook, *format, *secret, *kinds, *durable, environ)
	if err != nil {
		return notifyUsage(stderr, "%v", err)
	}
	opts.skipInitial = *skipInitial
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
	}
	if err := cfg.validateForConsumers(); err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	return notify(ctx, cfg, opts, logger)
}

// validateForConsumers checks what a consumer of the stream reads beside
// what every command does: the stream's name and the log settings.
func (c config) validateForConsumers() error {
	if !streamName.MatchString(c.Stream) {
		return bad("Stream", "%q: use letters, digits, - and _", c.Stream)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return bad("LogLevel", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("LogFormat", "want text or json, got %q", c.LogFormat)
	}
	return nil
}

// notifyUsage reports a bad flag value in one line, as the flag package
// reports an unknown flag, and makes meetwatch exit 2.
func notifyUsage(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "meetwatch notify: %s (see meetwatch notify --help)\n", fmt.Sprintf(format, args...))
	return errUsage
}

// parseNotifyOptions checks the flags, taking the webhook and the secret
// from the environment when the flags leave them out.
func parseNotifyOptions(webhook, format, secret, kinds, durable string, environ map[string]string) (notifyOptions, error) {
	var opts notifyOptions
	if webhook == "" {
		webhook = environ[envNotifyWebhook]
	}
	if secret == "" {
		secret = environ[envNotifySecret]
	}
	switch {
	case webhook == "":
		return opts, fmt.Errorf("--webhook is required (or %s)", envNotifyWebhook)
	case format == "":
		return opts, errors.New("--format is required: slack, feishu, dingtalk, wecom, welink or cloudevents")
	case !streamName.MatchString(durable):
		return opts, fmt.Errorf("--durable %q: use letters, digits, - and _", durable)
	}
	f, err := chat.ParseFormat(format)
	if err != nil {
		return opts, fmt.Errorf("--format: %w", err)
	}
	if opts.webhook, err = chat.NewWebhook(webhook, f, redact.NewSecret(secret)); err != nil {
		return opts, err // its message names the value at fault
	}
	if opts.kinds, err = parseKinds(kinds); err != nil {
		return opts, fmt.Errorf("--kinds: %w", err)
	}
	opts.durable = durable
	return opts, nil
}

// parseKinds reads a comma-separated list of event kinds.
func parseKinds(s string) ([]events.Kind, error) {
	known := []events.Kind{snapshot.Started, snapshot.Ended, snapshot.Changed}
	var out []events.Kind
	for _, part := range strings.Split(s, ",") {
		k := events.Kind(strings.ToLower(strings.TrimSpace(part)))
		switch {
		case k == "":
			continue
		case !slices.Contains(known, k):
			return nil, fmt.Errorf("unknown kind %q (want started, ended or changed)", k)
		case !slices.Contains(out, k):
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("name at least one kind: started, ended or changed")
	}
	return out, nil
}

// notify connects to NATS, opens the durable consumer, and sends its
// events until ctx ends.
func notify(ctx context.Context, cfg config, opts notifyOptions, logger *slog.Logger) error {
	log := logger.With("component", "notify")
	nc, err := dialNATS(cfg, "meetwatch-notify", log,
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Error("nats error", "err", err) }),
	)
	if err != nil {
		return err
	}
	defer func() {
		// What was settled last (an acknowledgement, a message handed
		// back on the way out) reaches the server before the exit.
		if err := nc.FlushTimeout(time.Second); err != nil && nc.IsConnected() {
			log.Warn("flushing before exit", "err", err)
		}
		nc.Close()
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("opening jetstream: %w", err)
	}
	if opts.webhook.Plaintext() {
		log.Warn("the webhook is plain http: its credential travels in the clear", "webhook", opts.webhook.String())
	}
	sender, err := chat.NewSender(chat.SenderConfig{Webhook: opts.webhook, Logger: log})
	if err != nil {
		return err
	}
	cons, created, err := openDurable(ctx, js, cfg, opts.durable, log)
	if err != nil || cons == nil {
		return err // nil, nil: stopped before the stream was there
	}
	kinds := make([]string, len(opts.kinds))
	for i, k := range opts.kinds {
		kinds[i] = string(k)
	}
	log.Info("notifying", "webhook", opts.webhook.String(), "format", string(opts.webhook.Format()),
		"kinds", strings.Join(kinds, ","), "skip_initial", opts.skipInitial, "stream", cfg.Stream,
		"durable", opts.durable, "new_durable", created)
	n := &notifier{sender: sender, kinds: opts.kinds, skipInitial: opts.skipInitial, log: log}
	err = n.run(ctx, cons)
	log.Info("stopped", "sent_total", n.sent, "skipped_total", n.skipped, "ignored_total", n.ignored)
	return err
}

// openDurable creates the durable consumer, or brings an existing one to
// the configuration, retrying while the stream does not exist yet (the
// watcher creates it) or NATS is not up, until ctx ends; then it returns
// nil, false, nil. created reports that the durable is new: it delivers
// only the events published from now on.
func openDurable(ctx context.Context, js jetstream.JetStream, cfg config, name string, log *slog.Logger) (cons jetstream.Consumer, created bool, err error) {
	want := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "meetwatch notify: one chat message per meeting event",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       notifyAckWait,
		MaxDeliver:    -1,
		// One at a time: the messages reach the chat in the order of the
		// stream, a message handed back is the next one delivered, and
		// nothing waits in a buffer while the platform is slow.
		MaxAckPending: 1,
		FilterSubject: cfg.SubjectPrefix + ".>",
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

// notifier turns the messages of the durable consumer into chat messages,
// one at a time, and settles each: acknowledged once sent or not wanted,
// terminated once given up on, handed back when stopped mid-send.
type notifier struct {
	sender      *chat.Sender
	kinds       []events.Kind
	skipInitial bool
	log         *slog.Logger

	// Counts of this run, logged when it stops.
	sent, skipped, ignored int
}

// run fetches and handles messages until ctx ends. It returns an error
// only when the durable or its stream is deleted under it.
func (n *notifier) run(ctx context.Context, cons jetstream.Consumer) error {
	wait := backoff.Backoff{Base: 250 * time.Millisecond, Max: 5 * time.Second}
	for {
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
		n.skipped++
		log.Warn("not a meeting event; skipped", "err", err, "skipped_total", n.skipped)
		n.settle(log, "terminating", m.TermWithReason("not a meeting event"))
		return
	}
	log = log.With("event_id", e.ID, "kind", string(e.Kind()), "meeting", e.Subject)
	if reason := n.unwanted(e); reason != "" {
		n.ignored++
		log.Debug("event not sent", "reason", reason)
		n.settle(log, "acknowledging", m.Ack())
		return
	}

	// A send may wait long for the platform: the server hears that the
	// message is in progress, so that it does not deliver it again.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { keepAlive(sctx, m, log) })
	err = n.sender.Send(sctx, e, m.Data())
	stop()
	wg.Wait()

	switch {
	case err == nil:
		n.sent++
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Confirmed, so that a restart right after does not send it again.
		n.settle(log, "acknowledging", m.DoubleAck(actx))
		log.Info("event sent")
	case ctx.Err() != nil:
		n.handBack(m)
		log.Info("stopped while sending; the event will be sent on the next start")
	default:
		n.skipped++
		log.Error("event skipped: the webhook did not take it", "err", err, "skipped_total", n.skipped)
		n.settle(log, "terminating", m.TermWithReason("refused by the webhook"))
	}
}

// unwanted says why e is not to be sent, or "" when it is.
func (n *notifier) unwanted(e events.Event) string {
	switch {
	case !slices.Contains(n.kinds, e.Kind()):
		return "kind not selected"
	case e.Kind() == snapshot.Started && e.Data.Initial && n.skipInitial:
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
	t := time.NewTicker(notifyAckWait / 3)
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
