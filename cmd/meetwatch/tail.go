package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
)

const defaultNATSURL = "nats://127.0.0.1:4222"

func runTail(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", `Usage: meetwatch tail [--json] [--all] [filter]

Prints meeting events as they arrive, one line each, until interrupted.
filter is a NATS subject filter; the default is every event
(<prefix>.>, e.g. meetings.>). Examples: meetings.ended.>, meetings.*.<confUUID>.
Connects to MEETWATCH_NATS_URL (default `+defaultNATSURL+`).`, stderr)
	asJSON := fs.Bool("json", false, "print each event's CloudEvents JSON as received")
	all := fs.Bool("all", false, "replay the events already in the stream first (needs JetStream)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
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
	url := cfg.NATSURL
	if url == "" {
		url = defaultNATSURL
	}
	security, err := natsSecurity(cfg, newLogger(stderr, cfg.LogLevel, cfg.LogFormat))
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(security, nats.Name("meetwatch-tail"), nats.MaxReconnects(-1))...)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", url, err)
	}
	defer nc.Close()

	msgs := make(chan *nats.Msg, 256)
	if *all {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("opening jetstream: %w", err)
		}
		cons, err := js.OrderedConsumer(ctx, cfg.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
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
		sub, err := nc.ChanSubscribe(filter, msgs)
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", filter, err)
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("subscribing to %s: %w", filter, err)
		}
	}
	fmt.Fprintf(stderr, "meetwatch tail: %s on %s\n", filter, nc.ConnectedUrlRedacted())
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			printEvent(stdout, m.Subject, m.Data, *asJSON)
		}
	}
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
