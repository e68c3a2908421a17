package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/events/jsensure"
	"github.com/meetwatch/meetwatch/events/natsprobe"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

// checkNATS adds the NATS checks to rep: the connection, JetStream, and
// every permission run needs on the stream and the buckets, each probed
// without writing (see events/natsprobe). Each permission is named as
// docs/security.md lists it.
func checkNATS(ctx context.Context, cfg config, timeout time.Duration, logger *slog.Logger, rep *checkReport) {
	if cfg.NATSURL == "" {
		checkEmbedded(cfg, rep)
		return
	}
	security, err := natsSecurity(cfg, logger)
	if err != nil {
		rep.add("nats", false, "%v", err)
		return
	}
	p, err := natsprobe.Dial(cfg.NATSURL, timeout, append(security, nats.Name("meetwatch-check"))...)
	if err != nil {
		rep.add("nats", false, "connecting to %s: %v", redact.URLs(cfg.NATSURL), err)
		return
	}
	defer p.Close()
	nc := p.Conn()
	rep.add("nats", true, "connected to %s, nats-server %s, max_payload %s", nc.ConnectedUrlRedacted(), nc.ConnectedServerVersion(), byteSize(uint64(nc.MaxPayload())))
	if !checkJetStream(ctx, p, rep) {
		return
	}
	checkEventStream(ctx, cfg, p, rep)
	checkBucket(ctx, p, rep, bucketProbe{
		check: "state_bucket", bucket: cfg.StateBucket, key: "meta", info: true, flowControl: true,
		reads: "run reads the state at start, and ahead of each poll's writes",
		watch: "the watch that loads the state at start",
		about: aboutState,
	})
	checkBucket(ctx, p, rep, bucketProbe{
		check: "lease_bucket", bucket: cfg.LeaseBucket, key: "leader", info: true,
		reads: "a replica reads the lease before it takes it",
		about: aboutLease, readAll: cfg.AccountsFile != "",
	})
	if cfg.ViewBucket != "" {
		checkBucket(ctx, p, rep, bucketProbe{
			check: "view_bucket", bucket: cfg.ViewBucket, key: natsprobe.Name, info: true, flowControl: true,
			watch:  "the watch that reconciles the view with the state",
			flowed: "flow control while a large view is read",
			about:  aboutView,
		})
	}
}

// checkEmbedded reports what run does without MEETWATCH_NATS_URL: it
// starts a server of its own, so the only thing to check is where that
// server keeps its data.
func checkEmbedded(cfg config, rep *checkReport) {
	where := fmt.Sprintf("%s is empty: run starts its own NATS server on %s, with its data in %s", varName("NATSURL"), cfg.EmbeddedListen, cfg.DataDir)
	fi, err := os.Stat(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.add("nats", true, "%s (made at start); no other NATS check applies", where)
	case err != nil:
		rep.add("nats", false, "%s: %v", where, err)
	case !fi.IsDir():
		rep.add("nats", false, "%s, which is not a directory: set %s", where, varName("DataDir"))
	default:
		rep.add("nats", true, "%s (there already); no other NATS check applies", where)
	}
}

// denials gathers what the probes of one check were denied, by the
// permission each needs, and what else went wrong.
type denials struct {
	denied []*denied
	failed []string
}

// denied is a permission a check found missing: Pattern, as
// docs/security.md writes it, which run needs for Why, and the subjects
// the server refused under it.
type denied struct {
	op, pattern, why string
	subjects         []string
}

// note records err from a probe of pattern, a permission as
// docs/security.md writes it, which run needs for why. It reports whether
// the probe passed.
func (d *denials) note(err error, pattern, why string) bool {
	if err == nil {
		return true
	}
	found := natsprobe.Denied(err)
	for _, de := range found {
		op, pat, subject := de.Op, pattern, de.Subject
		if op == "subscribe" { // a probe's reply subject: each has its own
			pat, why, subject = nats.InboxPrefix+">", "every answer comes there", nats.InboxPrefix+"…"
		}
		i := slices.IndexFunc(d.denied, func(x *denied) bool { return x.op == op && x.pattern == pat })
		if i < 0 {
			d.denied = append(d.denied, &denied{op: op, pattern: pat, why: why})
			i = len(d.denied) - 1
		}
		if !slices.Contains(d.denied[i].subjects, subject) {
			d.denied[i].subjects = append(d.denied[i].subjects, subject)
		}
	}
	if len(found) == 0 {
		d.failed = append(d.failed, err.Error())
	}
	return false
}

func (d *denials) ok() bool { return len(d.denied) == 0 && len(d.failed) == 0 }

func (d *denials) String() string {
	var parts []string
	for _, x := range d.denied {
		parts = append(parts, fmt.Sprintf("needs %s permission on %s (%s), denied for %s", x.op, x.pattern, x.why, strings.Join(x.subjects, ", ")))
	}
	if len(d.denied) > 0 {
		parts[len(parts)-1] += " (docs/security.md lists what run needs)"
	}
	return strings.Join(append(parts, d.failed...), "; ")
}

// checkJetStream asks for the account's JetStream information. It reports
// whether the other probes can tell anything: not without JetStream, nor
// when nothing answers.
func checkJetStream(ctx context.Context, p *natsprobe.Prober, rep *checkReport) bool {
	info, err := p.AccountInfo(ctx)
	switch {
	case len(natsprobe.Denied(err)) > 0:
		var d denials
		d.note(err, "$JS.API.INFO", "run asks it before it makes the buckets")
		rep.add("jetstream", false, "%s", d.String())
		return true
	case err != nil:
		rep.add("jetstream", false, "%v: run needs JetStream, enabled for this user's account", err)
		return false
	case info.API.Level < 1:
		rep.add("jetstream", false, "JetStream API level %d: the state bucket's marker TTL needs nats-server 2.11 or later", info.API.Level)
		return true
	}
	rep.add("jetstream", true, "enabled: %d stream%s and %d consumer%s in the account, %s stored, API level %d",
		info.Streams, plural(info.Streams), info.Consumers, plural(info.Consumers), byteSize(info.Store), info.API.Level)
	return true
}

// checkEventStream probes the events' stream: that run may read and create
// it, and update it where it lacks the event subjects; which stream stores
// those subjects; that its duplicate window keeps the exactly-once
// guarantee; and the publish of each kind of event.
func checkEventStream(ctx context.Context, cfg config, p *natsprobe.Prober, rep *checkReport) {
	stream, subjects := cfg.Stream, cfg.SubjectPrefix+".>"
	var d, pub denials
	info, err := p.StreamInfo(ctx, stream)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		d.note(err, "$JS.API.STREAM.INFO."+stream, "run reads the stream's settings at every start")
	}
	d.note(p.MayCreateStream(ctx, stream), "$JS.API.STREAM.CREATE."+stream, "run creates it when it is missing")
	if info != nil && !slices.ContainsFunc(info.Config.Subjects, func(s string) bool { return jsensure.Covers(s, subjects) }) {
		d.note(p.MayUpdateStream(ctx, stream), "$JS.API.STREAM.UPDATE."+stream, "run adds "+subjects+" to the stream, which lacks it")
	}
	if info != nil && info.Config.Duplicates < cfg.DuplicateWindow {
		d.failed = append(d.failed, fmt.Sprintf("%s keeps ids for %s, less than %s=%s: an event published again after a longer outage would be stored twice; raise the stream's duplicate window (run leaves it as it is)",
			stream, info.Config.Duplicates, varName("DuplicateWindow"), cfg.DuplicateWindow))
	}
	var (
		stored  string // the stream that stores the event subjects
		known   bool
		unclear error
	)
	for _, kind := range []events.Kind{events.Started, events.Ended, events.Changed} {
		subject := events.Subject(cfg.SubjectPrefix, kind, natsprobe.Name)
		if unclear != nil { // no need to wait for the answer again: the permission is what is left
			pub.note(p.MayPublish(ctx, subject), cfg.SubjectPrefix+".>", "the events")
			continue
		}
		got, err := p.StreamOf(ctx, subject)
		switch {
		case errors.Is(err, natsprobe.ErrNoAnswer):
			unclear = err // the server let it through: the publish is allowed
		case err != nil:
			pub.note(err, cfg.SubjectPrefix+".>", "the events")
		case !known:
			stored, known = got, true
		}
	}
	switch {
	case !d.ok():
		rep.add("stream", false, "%s", d.String())
	case known && stored == stream:
		rep.add("stream", true, "%s stores %s.>; run may read it, or create it", stream, cfg.SubjectPrefix)
	case known && stored == "":
		rep.add("stream", true, "%s does not exist yet, and no stream stores %s.>: run creates it (it may)", stream, cfg.SubjectPrefix)
	case known:
		rep.add("stream", false, "the stream %s stores %s.>, not %s: run's events, which expect %s, would be refused; set %s=%s, or take %s.> out of %s",
			stored, cfg.SubjectPrefix, stream, stream, varName("Stream"), stored, cfg.SubjectPrefix, stored)
	case unclear != nil:
		rep.add("stream", false, "%v: something takes %s.> but no stream answered: either %s is there and its leader does not answer, or it is not there and something else (such as nats sub) subscribes; stop that and check again",
			unclear, cfg.SubjectPrefix, stream)
	default:
		rep.add("stream", true, "run may read and create %s (whether it stores the events is not known: publishing was denied)", stream)
	}
	if !pub.ok() {
		rep.add("publish", false, "%s", pub.String())
		return
	}
	by := "that the server let through"
	switch {
	case known && stored != "":
		by = "that " + stored + " refused to store"
	case known:
		by = "that no stream stores"
	}
	rep.add("publish", true, "may publish to %[1]s.started.>, %[1]s.ended.> and %[1]s.changed.> (each probed with an empty message %[2]s)", cfg.SubjectPrefix, by)
}

// bucketProbe is a key-value bucket run uses, and what for.
type bucketProbe struct {
	check  string // the check's name
	bucket string
	key    string // a key run writes, read and probed
	// info and flowControl: run reads the bucket's status, and loads it
	// with flow control (the state bucket).
	info, flowControl bool
	// readAll: run reads every key at once (a placement of accounts).
	readAll      bool
	reads, watch string // why run reads the key, and watches the bucket ("": it does not)
	// flowed says why the watch needs flow control; "" for the state's
	// load.
	flowed string
	// about describes what the key holds; entry is nil when it holds
	// nothing.
	about func(entry *nats.Msg) string
}

// checkBucket probes a bucket: that run may create and update it, read and
// write its keys, and watch it when it does.
func checkBucket(ctx context.Context, p *natsprobe.Prober, rep *checkReport, b bucketProbe) {
	stream := "KV_" + b.bucket
	var d denials
	var info *jetstream.StreamInfo
	if b.info {
		var err error
		info, err = p.StreamInfo(ctx, stream)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			d.note(err, "$JS.API.STREAM.INFO."+stream, "run reads the bucket's settings at every start")
		}
	}
	d.note(p.MayCreateStream(ctx, stream), "$JS.API.STREAM.CREATE."+stream, "run creates it when it is missing")
	subject := "$KV." + b.bucket + "." + b.key
	var entry *nats.Msg
	if b.reads != "" {
		var err error
		entry, err = p.DirectGet(ctx, stream, subject)
		if !errors.Is(err, nats.ErrNoResponders) { // no responders: the bucket is missing, as the next probe says
			d.note(err, "$JS.API.DIRECT.GET."+stream+".>", b.reads)
		}
	}
	owner, err := p.StreamOf(ctx, subject)
	switch {
	case err == nil && owner != "" && owner != stream:
		d.failed = append(d.failed, fmt.Sprintf("the stream %s stores %s, not %s: run's writes would be refused", owner, subject, stream))
	case err != nil:
		d.note(err, "$KV."+b.bucket+".>", "run's writes")
	}
	may := "run may read, write and create it"
	if b.watch != "" {
		d.note(p.MayCreateConsumer(ctx, stream), "$JS.API.CONSUMER.CREATE."+stream+".>", b.watch)
		d.note(p.MayDeleteConsumer(ctx, stream), "$JS.API.CONSUMER.DELETE."+stream+".>", "a watch deletes its consumer as it stops")
		may = "run may read, write, watch and create it"
	}
	if b.flowControl {
		why := cmp.Or(b.flowed, "flow control while a large state loads")
		d.note(p.MayPublish(ctx, "$JS.FC."+stream+"."+natsprobe.Name+".probe"), "$JS.FC."+stream+".>", why)
	}
	if b.readAll {
		// A request without a reply subject: the stream reads nothing.
		d.note(p.MayPublish(ctx, "$JS.API.DIRECT.GET."+stream), "$JS.API.DIRECT.GET."+stream, "with an accounts file, each replica reads every key at each look")
	}
	if !d.ok() {
		rep.add(b.check, false, "%s", d.String())
		return
	}
	switch {
	case owner == "" && info == nil:
		rep.add(b.check, true, "%s does not exist yet: run creates it; %s", stream, may)
	case info != nil:
		rep.add(b.check, true, "%s holds %d message%s (%s); %s; %s", stream, info.State.Msgs, plural(int(info.State.Msgs)), byteSize(info.State.Bytes), b.about(entry), may)
	default:
		rep.add(b.check, true, "%s is there; %s; %s", stream, b.about(entry), may)
	}
}

// aboutState describes the state bucket's meta key: when the last commit
// was observed, and of how many meetings (kvstore writes it).
func aboutState(entry *nats.Msg) string {
	var meta struct {
		ObservedAt time.Time `json:"observedAt"`
		Meetings   int       `json:"meetings"`
	}
	switch {
	case entry == nil || deleted(entry):
		return "no commit yet"
	case json.Unmarshal(entry.Data, &meta) != nil:
		return "its meta key is not meetwatch's"
	}
	return fmt.Sprintf("the last commit, of %d meeting%s, observed %s", meta.Meetings, plural(meta.Meetings), meta.ObservedAt.UTC().Format(time.RFC3339))
}

// aboutView describes the view bucket, whose keys run only writes.
func aboutView(*nats.Msg) string { return "the meetings going on, one key each, for consumers" }

// aboutLease describes the lease: which replica leads, as ha writes it.
func aboutLease(entry *nats.Msg) string {
	var lease struct {
		ID string `json:"id"`
	}
	switch {
	case entry == nil || deleted(entry):
		return "no replica leads"
	case json.Unmarshal(entry.Data, &lease) != nil || lease.ID == "":
		return "its leader key is not meetwatch's"
	}
	return fmt.Sprintf("replica %q leads", lease.ID)
}

// deleted reports a key's delete or purge marker, or the marker the server
// leaves when a key's TTL ran out.
func deleted(entry *nats.Msg) bool {
	op := entry.Header.Get("KV-Operation")
	return op == "DEL" || op == "PURGE" || entry.Header.Get("Nats-Marker-Reason") != ""
}

// byteSize prints n bytes in the largest binary unit that keeps it at
// least 1.
func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
