package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

const defaultNATSURL = "nats://127.0.0.1:4222"

func runTail(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", `Usage: meetwatch tail [--json] [--all | --since DURATION|TIME] [filter]

Prints meeting events as they are stored, one line each, until interrupted.
filter is a NATS subject filter; the default is every event
(<prefix>.>, e.g. meetings.>). Examples: meetings.ended.>, meetings.*.<confUUID>.

Events are read from the stream MEETWATCH_STREAM (default MEETINGS), from
the first one stored after tail starts. --all first replays every event
the stream holds, and --since only those stored since a moment: a duration
back from now (10m, 2h30m) or an RFC 3339 time (2026-11-25T21:00:00Z). The
replay runs straight into the new events, with none missed or shown twice
in between. A stream not there yet is waited for, and then read from its
first event.

A reader slower than the events (a pipe, a paused terminal) holds the rest
back in the stream: tail keeps only a bounded backlog, and shows each event
once, in stream order.

Connects to MEETWATCH_NATS_URL (default `+defaultNATSURL+`).`, stderr)
	asJSON := fs.Bool("json", false, "print each event's CloudEvents JSON as received")
	all := fs.Bool("all", false, "replay the events already in the stream first")
	sinceFlag := fs.String("since", "", "replay the events stored since a `moment`, a duration back from now (10m) or an RFC 3339 time, then follow")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("unexpected argument %q: give one filter at most", fs.Arg(1))
	}
	var since time.Time
	if *sinceFlag != "" {
		if *all {
			return usagef("--all and --since: give one")
		}
		var err error
		if since, err = parseSince(*sinceFlag, time.Now()); err != nil {
			return usagef("%v", err)
		}
	}
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
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

	// One ordered consumer reads every mode: a replay and the new events
	// after it come as one sequence, without a gap or an overlap.
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	from := ""
	switch {
	case *all:
		occ.DeliverPolicy = jetstream.DeliverAllPolicy
	case !since.IsZero():
		occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		occ.OptStartTime = &since
		from = " since " + since.Format(time.RFC3339)
	}
	cons, err := tailConsumer(ctx, js, cfg.Stream, occ, func() {
		fmt.Fprintf(stderr, "meetwatch tail: waiting for stream %s on %s\n", cfg.Stream, redact.URL(nc.ConnectedUrl()))
	})
	if err != nil || cons == nil {
		return err // nil, nil: stopped while waiting
	}
	// Each event waits in the handler until it is printed, so a reader
	// that does not keep up stops the pulls: the client holds at most what
	// the pulls asked for, and the rest waits in the stream. The byte
	// limit lets the largest event the server takes through.
	msgs := make(chan jetstream.Msg)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxBytes(2*int(nc.MaxPayload())))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", cfg.Stream, err)
	}
	defer cc.Stop()
	fmt.Fprintf(stderr, "meetwatch tail: %s%s on %s\n", filter, from, redact.URL(nc.ConnectedUrl()))
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			printEvent(stdout, m.Subject(), m.Data(), *asJSON)
		}
	}
}

// tailConsumer creates the ordered consumer tail reads, retrying while the
// stream does not exist (tail started before meetwatch run made it). Every
// event in a stream made after tail started is new to tail, so the stream
// is then read from its start. waiting is called once, when the stream is
// not there. It returns nil, nil when ctx ends first.
func tailConsumer(ctx context.Context, js jetstream.JetStream, stream string, occ jetstream.OrderedConsumerConfig, waiting func()) (jetstream.Consumer, error) {
	for first := true; ; first = false {
		cons, err := orderedConsumer(ctx, js, stream, occ)
		switch {
		case err == nil:
			return cons, nil
		case ctx.Err() != nil:
			return nil, nil
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, fmt.Errorf("reading stream %s: %w", stream, err)
		}
		if first {
			waiting()
			if occ.DeliverPolicy == jetstream.DeliverNewPolicy {
				occ.DeliverPolicy = jetstream.DeliverAllPolicy
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(streamWait):
		}
	}
}

// orderedConsumer creates an ordered consumer. One of the new events
// starts after the stream's last event as a first consumer finds it,
// rather than with DeliverNewPolicy: an ordered consumer made again
// before its first event (after a reconnection, or a pull no server
// answered) applies its deliver policy again, and "new" would then skip
// the events stored in between. The first consumer goes once inactive.
func orderedConsumer(ctx context.Context, js jetstream.JetStream, stream string, occ jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	if occ.DeliverPolicy != jetstream.DeliverNewPolicy {
		return js.OrderedConsumer(ctx, stream, occ)
	}
	probe := occ
	probe.InactiveThreshold = time.Second
	p, err := js.OrderedConsumer(ctx, stream, probe)
	if err != nil {
		return nil, err
	}
	occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
	occ.OptStartSeq = p.CachedInfo().Delivered.Stream + 1
	return js.OrderedConsumer(ctx, stream, occ)
}

// streamWait is how often tail looks for a stream that is not there yet.
const streamWait = 250 * time.Millisecond

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
