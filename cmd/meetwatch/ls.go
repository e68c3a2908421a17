package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events/view"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher/kvstore"
)

func runLs(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ls", `Usage: meetwatch ls [--json] [--account NAME] [--timeout DURATION]

Prints the meetings going on now, as the view bucket holds them
(MEETWATCH_VIEW_BUCKET, default meetings-now), or, when there is none, the
last committed snapshot in the state bucket: a table of confUUID, conference ID, subject,
start time and online attendees, sorted by start time. It only reads: a
running meetwatch is not disturbed.

With --account, the meetings of that account of an accounts file
(MEETWATCH_ACCOUNTS_FILE), whose state the bucket keeps under the key
prefix NAME. (the view under the keys NAME.<confUUID>); without it, the
meetings of meetwatch run without an accounts file.

With --json, one JSON object per line: each meeting's record as events
carry it, with the fields of MEETWATCH_REDACT removed, so that no secret
is printed.

Reads MEETWATCH_VIEW_BUCKET, or MEETWATCH_STATE_BUCKET (default
meetwatch-state) when that is empty or no such bucket exists, over
MEETWATCH_NATS_URL (default `+defaultNATSURL+`) with the NATS credential
settings of meetwatch run: a user allowed to read the view needs no access
to the state. A view bucket that gives no answer within 3s (a user allowed
only the state) is passed over for the state, with a warning. A bucket
that does not load within --timeout (a server that does not answer, a
permission the user lacks) is an error.`, stderr)
	asJSON := fs.Bool("json", false, "print each meeting's record, secrets removed, one JSON object per line")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the view or the state to load")
	accountFlag := fs.String("account", "", "the `NAME` of an account of an accounts file: list its meetings")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArguments(fs); err != nil {
		return err
	}
	prefix := ""
	if *accountFlag != "" {
		if err := validAccountName(*accountFlag); err != nil {
			return usagef("--account: %v", err)
		}
		prefix = account{Name: *accountFlag}.statePrefix()
	}
	cfg, err := loadConfig(environ, false)
	if err != nil {
		return err
	}
	policy, _ := redact.Parse(cfg.Redact) // validated with the configuration
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	nc, js, err := dialNATS(cfg, "meetwatch-ls", logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	// The load retries a step that gets no answer, as a leader would
	// through an election; a tool asked once must give up instead.
	rctx, cancel := context.WithTimeoutCause(ctx, *timeout, errNoAnswer)
	defer cancel()
	source := "view bucket " + cfg.ViewBucket
	meetings, err := readView(rctx, js, cfg.ViewBucket, *accountFlag)
	if errors.Is(err, errNoView) {
		if errors.Is(err, errNoAnswer) {
			logger.Warn("reading the state bucket instead of the view", "err", err)
		}
		source = "state bucket " + cfg.StateBucket
		meetings, err = readState(rctx, js, cfg.StateBucket, prefix)
	}
	if errors.Is(context.Cause(rctx), errNoAnswer) {
		return fmt.Errorf("reading %s: no answer within %s (a permission the NATS user lacks is logged above; see docs/security.md): %w",
			source, *timeout, err)
	}
	if err != nil {
		return err
	}
	slices.SortFunc(meetings, func(a, b snapshot.Meeting) int {
		return cmp.Or(strings.Compare(a.StartTime, b.StartTime), strings.Compare(a.UUID, b.UUID))
	})
	if *asJSON {
		for _, m := range meetings {
			rec, err := policy.Strip(m.Raw())
			if err != nil {
				return fmt.Errorf("redacting %s: %w", m.UUID, err)
			}
			fmt.Fprintf(stdout, "%s\n", rec)
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONFUUID\tCONFERENCE ID\tSUBJECT\tSTART\tONLINE")
	for _, m := range meetings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.UUID, dash(m.ConferenceID), dash(oneLine(m.Subject)), dash(m.StartTime), onlineAttendees(m))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing the table: %w", err)
	}
	return nil
}

// errNoAnswer is the cause of a read of the state that ran out of time.
var errNoAnswer = errors.New("no answer")

// viewLookup bounds the wait for the view bucket's info, before ls reads
// the state instead.
const viewLookup = 3 * time.Second

// errNoView means that there is no view bucket to read: MEETWATCH_VIEW_BUCKET
// is empty, or names a bucket that does not exist.
var errNoView = errors.New("no view bucket")

// readView returns the meetings of the view bucket, those of account
// when it is set, or errNoView when there is no view bucket.
func readView(ctx context.Context, js jetstream.JetStream, bucket, account string) ([]snapshot.Meeting, error) {
	if bucket == "" {
		return nil, errNoView
	}
	// A user allowed the state but not the view (the permissions before
	// the view came) gets no answer at all: after a short wait, the
	// state is read instead.
	lctx, cancel := context.WithTimeoutCause(ctx, viewLookup, errNoAnswer)
	kv, err := js.KeyValue(lctx, bucket)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, errNoView
	case err != nil && errors.Is(context.Cause(lctx), errNoAnswer) && ctx.Err() == nil:
		return nil, fmt.Errorf("%w: view bucket %s gave %w within %s (a permission the NATS user lacks?)", errNoView, bucket, errNoAnswer, viewLookup)
	}
	if err != nil {
		return nil, fmt.Errorf("opening view bucket %s: %w", bucket, err)
	}
	filter := "*"
	if account != "" {
		filter = account + ".*"
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	entries, _, err := view.Watch(wctx, kv, filter)
	if err != nil {
		return nil, fmt.Errorf("reading view bucket %s: %w", bucket, err)
	}
	meetings := make([]snapshot.Meeting, 0, len(entries))
	for key, e := range entries {
		m, err := snapshot.ParseMeeting(e.Conference)
		if err != nil {
			return nil, fmt.Errorf("reading view key %s: %w", key, err)
		}
		meetings = append(meetings, m)
	}
	return meetings, nil
}

// readState returns the meetings of the last committed snapshot under
// prefix in the state bucket.
func readState(ctx context.Context, js jetstream.JetStream, bucket, prefix string) ([]snapshot.Meeting, error) {
	st, err := kvstore.Read(ctx, js, bucket, prefix)
	if err != nil {
		return nil, err
	}
	meetings := make([]snapshot.Meeting, 0, len(st.Snapshot))
	for _, m := range st.Snapshot {
		meetings = append(meetings, m)
	}
	return meetings, nil
}

// onlineAttendees reads the record's onlineAttendeeAmount, or "-".
func onlineAttendees(m snapshot.Meeting) string {
	var rec struct {
		Online json.Number `json:"onlineAttendeeAmount"`
	}
	if err := json.Unmarshal(m.Raw(), &rec); err != nil || rec.Online == "" {
		return "-"
	}
	return rec.Online.String()
}

func dash(s string) string { return cmp.Or(s, "-") }

// oneLine keeps a subject with line breaks or tabs from breaking the table.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
