package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/meetwatch/meetwatch/events/audit"
)

func runAudit(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", `Usage: meetwatch audit --out FILE [--durable NAME] [--filter SUBJECT]

Appends every message of the stream MEETWATCH_STREAM (default MEETINGS) to
FILE, one per line, in stream order, and keeps following until interrupted.
A line is the message body exactly as stored when that body is one line of
JSON (valid JSON with no newline or carriage return byte), as every event
is. Any other body, which something else published on the stream's
subjects, is written as the line
  {"audit_unreadable":{"seq":N,"subject":"...","body_base64":"..."}}
with its stream sequence, subject and body in standard base64, and logged
as a warning; the stop's log line counts them (unreadable_total).

FILE holds every message exactly once, even if meetwatch audit is killed at
any moment: lines are written and synced before they are acknowledged to
a durable JetStream consumer, and on start the file's last line is matched
with the messages that consumer delivered, so that nothing is written twice
and nothing is skipped. A last line cut short by a kill is removed first,
and written again whole.

A new durable starts from the first event in the stream. A durable belongs
to one file: to start another file from the beginning, give it another
--durable. With --out -, events go to standard output instead; standard
output cannot be read back, so after a restart the events written but not
yet acknowledged are written again.

--filter logs only the messages on the subjects a NATS subject filter
matches, such as meetings.acme.> (the events of the account acme) or
meetings.*.ended.> (every account's ends), still each once and in stream
order. A durable keeps the filter it was made with: to log other subjects,
give another --durable, and another file.

Connects to MEETWATCH_NATS_URL (default `+defaultNATSURL+`) with the
MEETWATCH_NATS_* credentials, as tail does. Logs go to standard error.`, stderr)
	out := fs.String("out", "", "the `file` to append events to, or - for standard output (required)")
	durable := fs.String("durable", audit.DefaultDurable, "the `name` of the durable consumer that records how far the file is acknowledged")
	filter := fs.String("filter", "", "log only the messages on the subjects this `SUBJECT` filter matches (meetings.acme.>); default: the whole stream")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArguments(fs); err != nil {
		return err
	}
	switch {
	case *out == "":
		return usagef("--out is required (a file, or - for standard output)")
	case !streamName.MatchString(*durable):
		return usagef("--durable %q: use letters, digits, - and _", *durable)
	}
	if *filter != "" {
		if err := subjectFilterError(*filter); err != nil {
			return usagef("--filter %q: %v", *filter, err)
		}
	}
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if *out == "-" {
		return auditTo(ctx, cfg, *durable, *filter, stdout, logger)
	}
	_, statErr := os.Stat(*out)
	f, err := audit.OpenFile(*out)
	if err != nil {
		return err
	}
	err = auditTo(ctx, cfg, *durable, *filter, f, logger)
	// A run that failed leaves no file it created and wrote nothing to. It
	// goes while this process still holds the file's lock: once closed,
	// another audit could take the file and write to it.
	if st, serr := os.Stat(*out); err != nil && errors.Is(statErr, os.ErrNotExist) && serr == nil && st.Size() == 0 {
		_ = os.Remove(*out) // best effort: an empty file is harmless
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing %s: %w", *out, cerr))
	}
	return err
}

// auditTo connects to NATS and runs the audit log of the subjects filter
// matches (all when empty) into w.
func auditTo(ctx context.Context, cfg config, durable, filter string, w io.Writer, logger *slog.Logger) error {
	nc, js, err := dialNATS(cfg, "meetwatch-audit", logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	err = audit.Run(ctx, js, w, audit.Options{Stream: cfg.Stream, Durable: durable, Filter: filter, Logger: logger})
	if errors.Is(err, audit.ErrMismatch) {
		return fmt.Errorf("%w (a file continues only with the durable that wrote it; a new file takes a new --durable)", err)
	}
	if errors.Is(err, audit.ErrConsumerConfig) {
		return fmt.Errorf("%w (a durable keeps its filter; other subjects take another --durable, and another file)", err)
	}
	return err
}
