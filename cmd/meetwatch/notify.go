package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/chat"
	"github.com/meetwatch/meetwatch/events/notify"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// Defaults of `meetwatch notify`.
const (
	defaultKinds = "started,ended"
)

// Variables that keep the webhook's credentials off the command line,
// where other users of the host can read them.
const (
	envNotifyWebhook = envPrefix + "NOTIFY_WEBHOOK"
	envNotifySecret  = envPrefix + "NOTIFY_SECRET"
)

const notifyHelp = `Usage: meetwatch notify --webhook URL --format FORMAT [--secret S] [--kinds started,ended] [--durable NAME] [--filter SUBJECT] [--time-zone ZONE] [--plain] [--test]

Posts one chat message per meeting event to a webhook: the kind, the
meeting's subject and conference ID, its organiser, when it started (in
--time-zone), the attendees online, how long an ended meeting ran and,
for a changed meeting, what changed (old → new when both are short;
a secret only as changed). FORMAT is the platform, and the message its
rich one:

  slack        Slack incoming webhook (Block Kit blocks, with a text fallback)
  feishu       Feishu / Lark custom bot (an interactive card; --secret: the
               bot's signing secret)
  dingtalk     DingTalk custom robot (markdown; --secret: its SEC... signing
               secret)
  wecom        WeCom group robot (markdown)
  welink       Huawei WeLink group robot (text, the only kind it takes, at
               most 500 characters)
  cloudevents  the event itself, as stored, to any HTTP receiver
               (Content-Type: application/cloudevents+json)

--plain sends the platforms' text messages instead. --test sends one
sample message, about a meeting starting now, and exits: 0 when the
platform accepted it, 1 with its answer when it did not; it needs no NATS.

Events are read through a durable JetStream consumer (--durable). Its
first start sends only the events that arrive after it, no history; a
restart resumes where the last run stopped, and nothing is lost. An event
is acknowledged only once the platform has accepted it. Sends are paced
within the platform's documented rate; a 429 or the platform's rate-limit
code waits (Retry-After) and tries again; 5xx and network errors are
retried with backoff for as long as they last, and so are answers that
refuse the webhook itself (401, 403, 404, 410, a bad signature or a
keyword the robot requires, a robot disabled or gone), logged as errors:
the events wait until the configuration is mended. A message the
platform refuses 3 times is logged and skipped. Events of the kinds not selected
are acknowledged without a message, and so, with --skip-initial, are the
started events of meetings already running when the watcher first looked
(their message says so otherwise).
--filter reads only the events on the subjects a NATS subject filter
matches: meetings.acme.> for the account acme of an accounts file; the
default is every event, <prefix>.>.
Stops cleanly on SIGINT or SIGTERM.

Environment: MEETWATCH_NATS_URL (default ` + defaultNATSURL + `),
MEETWATCH_STREAM, MEETWATCH_SUBJECT_PREFIX, MEETWATCH_NATS_* (credentials,
TLS) and MEETWATCH_LOG_LEVEL, MEETWATCH_LOG_FORMAT. The webhook URL and
the secret are credentials: ` + envNotifyWebhook + ` and
` + envNotifySecret + ` keep them off the command line.

Example:
  meetwatch notify --format dingtalk --kinds started,ended,changed \
    --webhook 'https://oapi.dingtalk.com/robot/send?access_token=...' --secret 'SEC...'
  meetwatch notify --test --format feishu --time-zone Asia/Shanghai \
    --webhook 'https://open.feishu.cn/open-apis/bot/v2/hook/...' --secret '...'`

// notifyOptions is what the flags ask of a notifier.
type notifyOptions struct {
	webhook *chat.Webhook
	kinds   []events.Kind
	durable string
	// filter is the subjects the durable reads.
	filter string
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
	durable := fs.String("durable", notify.DefaultDurable, "the durable consumer's `NAME`: where this notifier resumes")
	skipInitial := fs.Bool("skip-initial", false, "send no message for the started events of meetings already running when the watcher first looked")
	filter := fs.String("filter", "", "read only the events on the subjects this `SUBJECT` filter matches (meetings.acme.>); default <prefix>.>")
	zone := fs.String("time-zone", "Local", "the IANA `ZONE` start times are shown in, such as Asia/Shanghai; Local is the machine's")
	plain := fs.Bool("plain", false, "send the platforms' text messages rather than their rich ones (blocks, cards, markdown)")
	test := fs.Bool("test", false, "send one sample message and exit: 0 when the platform accepted it, 1 when not; needs no NATS")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArguments(fs); err != nil {
		return err
	}
	opts, err := parseNotifyOptions(*webhook, *format, *secret, *kinds, *durable, environ)
	if err != nil {
		return usagef("%v", err)
	}
	style, err := parseStyle(*zone, *plain, opts.webhook.Format())
	if err != nil {
		return usagef("%v", err)
	}
	opts.webhook = opts.webhook.WithStyle(style)
	if *test {
		return notifyTest(ctx, opts.webhook, stdout)
	}
	opts.skipInitial = *skipInitial
	if *filter != "" {
		if err := subjectFilterError(*filter); err != nil {
			return usagef("--filter %q: %v", *filter, err)
		}
	}
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
	}
	opts.filter = cmp.Or(*filter, cfg.SubjectPrefix+".>")
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	return notifyChat(ctx, cfg, opts, logger)
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

// parseStyle checks --time-zone and --plain. The machine's zone is the
// default: the people reading are most likely where the notifier runs.
func parseStyle(zone string, plain bool, f chat.Format) (chat.Style, error) {
	z, err := time.LoadLocation(zone)
	if err != nil || zone == "" {
		return chat.Style{}, fmt.Errorf("--time-zone %q: want an IANA zone such as UTC or Asia/Shanghai, or Local", zone)
	}
	if plain && f == chat.CloudEvents {
		return chat.Style{}, errors.New("--plain: the cloudevents format posts the event itself, not a message")
	}
	return chat.Style{Zone: z, Plain: plain}, nil
}

// notifyTest sends one sample message to the webhook, once, and says
// whether the platform took it: a check of the URL, the secret and the
// robot's settings (a keyword it requires, say) before a meeting starts.
func notifyTest(ctx context.Context, hook *chat.Webhook, stdout io.Writer) error {
	sender, err := chat.NewSender(chat.SenderConfig{Webhook: hook})
	if err != nil {
		return err
	}
	e, raw, err := chat.Sample(time.Now())
	if err != nil {
		return err
	}
	if err := sender.Try(ctx, e, raw); err != nil {
		return fmt.Errorf("%s did not accept the test message: %w", hook, err)
	}
	fmt.Fprintf(stdout, "%s accepted the test message (%s)\n", hook, hook.Format())
	return nil
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

// notifyChat connects to NATS, opens the durable consumer, and sends its
// events until ctx ends.
func notifyChat(ctx context.Context, cfg config, opts notifyOptions, logger *slog.Logger) error {
	log := logger.With("component", "notify")
	nc, js, err := dialNATS(cfg, "meetwatch-notify", log,
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
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
	if opts.webhook.Plaintext() {
		log.Warn("the webhook is plain http: its credential travels in the clear", "webhook", opts.webhook.String())
	}
	sender, err := chat.NewSender(chat.SenderConfig{Webhook: opts.webhook, Logger: log})
	if err != nil {
		return err
	}
	ncfg := notify.Config{
		Stream: cfg.Stream, Filter: opts.filter, Durable: opts.durable,
		Kinds: opts.kinds, SkipInitial: opts.skipInitial, Sender: sender, Logger: log,
	}
	cons, created, err := notify.Open(ctx, js, ncfg)
	if err != nil || cons == nil {
		return err // nil, nil: stopped before the stream was there
	}
	kinds := make([]string, len(opts.kinds))
	for i, k := range opts.kinds {
		kinds[i] = string(k)
	}
	log.Info("notifying", "webhook", opts.webhook.String(), "format", string(opts.webhook.Format()),
		"kinds", strings.Join(kinds, ","), "skip_initial", opts.skipInitial, "stream", cfg.Stream, "filter", opts.filter,
		"durable", opts.durable, "new_durable", created)
	counts, err := notify.Run(ctx, cons, ncfg)
	log.Info("stopped", "sent_total", counts.Sent, "skipped_total", counts.Skipped, "ignored_total", counts.Ignored)
	return err
}
