package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/natsprobe"
)

const defaultNATSURL = "nats://127.0.0.1:4222"

func runTail(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", `Usage: meetwatch tail [--json] [--all | --since DURATION|TIME] [filter]

Prints meeting events as they arrive, one line each, until interrupted.
filter is a NATS subject filter; the default is every event
(<prefix>.>, e.g. meetings.>). Examples: meetings.ended.>, meetings.*.<confUUID>.

--all first replays every event the stream MEETWATCH_STREAM holds, and
--since only those stored since a moment: a duration back from now (10m,
2h30m) or an RFC 3339 time (2026-11-25T21:00:00Z). The replay runs
straight into the live events, with none missed or shown twice in
between.

Connects to MEETWATCH_NATS_URL (default `+defaultNATSURL+`).`, stderr)
	asJSON := fs.Bool("json", false, "print each event's CloudEvents JSON as received")
	all := fs.Bool("all", false, "replay the events already in the stream first (needs JetStream)")
	sinceFlag := fs.String("since", "", "replay the events stored since a `moment`, a duration back from now (10m) or an RFC 3339 time, then follow (needs JetStream)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	var since time.Time
	if *sinceFlag != "" {
		if *all {
			fmt.Fprintln(stderr, "meetwatch tail: --all and --since: give one")
			return errUsage
		}
		var err error
		if since, err = parseSince(*sinceFlag, time.Now()); err != nil {
			fmt.Fprintf(stderr, "meetwatch tail: %v\n", err)
			return errUsage
		}
	}
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return errUsage
	}
	filter := cfg.SubjectPrefix + ".>"
	if fs.NArg() == 1 {
		filter = fs.Arg(0)
	}
	nc, js, err := dialNATS(cfg, "meetwatch-tail", newLogger(stderr, cfg.LogLevel, cfg.LogFormat))
	if err != nil {
		return err
	}
	defer nc.Close()

	msgs := make(chan *nats.Msg, 256)
	from := ""
	if *all || !since.IsZero() {
		// One ordered consumer reads the stored events and then the new
		// ones as they are stored, so the replay and the live part meet
		// without a gap or an overlap.
		occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}}
		if !since.IsZero() {
			occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
			occ.OptStartTime = &since
			from = " since " + since.Format(time.RFC3339)
		}
		cons, err := js.OrderedConsumer(ctx, cfg.Stream, occ)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}:
			case <-ctx.Done():
			}
		})
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
		}
		defer cc.Stop()
	} else {
		sub, err := nc.Subscribe(filter, func(m *nats.Msg) {
			if m.Header.Get(natsprobe.Header) != "" {
				return // a probe of meetwatch check: no event, and stored nowhere
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
			}
		})
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", filter, err)
		}
		defer sub.Unsubscribe()
		// A burst printed to a slow reader (a pipe) waits in the client,
		// however long, rather than be dropped as a slow consumer's.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			return fmt.Errorf("subscribing to %s: %w", filter, err)
		}
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("subscribing to %s: %w", filter, err)
		}
	}
	fmt.Fprintf(stderr, "meetwatch tail: %s%s on %s\n", filter, from, nc.ConnectedUrlRedacted())
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			printEvent(stdout, m.Subject, m.Data, *asJSON)
		}
	}
}

// parseSince reads --since: a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration back from now cannot be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration such as 10m or an RFC 3339 time such as 2026-11-25T21:00:00Z", s)
	}
	return t, nil
}

// printEvent writes one event: its JSON as received, or a line for people.
// A message that is not a meeting event is shown, not dropped, so a wrong
// filter is visible.
func printEvent(w io.Writer, subject string, body []byte, asJSON bool) {
	if asJSON {
		fmt.Fprintf(w, "%s\n", body)
		return
	}
	e, err := events.Decode(body)
	if err != nil {
		fmt.Fprintf(w, "%s: not a meeting event: %v\n", subject, err)
		return
	}
	fmt.Fprintln(w, e.Summary())
}
