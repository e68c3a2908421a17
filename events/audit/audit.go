// Package audit keeps an audit log of a JetStream stream: a file with one
// line per message, in stream order, each exactly once, however often the
// process writing it is killed. An event, and any body that is one line of
// JSON, is its line exactly as stored. Anything else published on the
// stream's subjects cannot be, and must not stop the log, so it is written
// as a line that holds it in base64:
//
//	{"audit_unreadable":{"seq":N,"subject":"...","body_base64":"..."}}
//
// with the stream sequence, the subject, and the body in standard, padded
// base64. A body is one line of JSON when encoding/json.Valid accepts it and
// it holds no '\n' or '\r' byte. A JSON string cannot hold either raw, so in
// valid JSON they are whitespace between tokens (a pretty-printed document,
// a trailing "\r\n"); '\r' counts as well as '\n' because readers that split
// lines on "\r\n" or "\r" would cut the body. An empty body is not JSON.
//
// Two records say how far the log got, and they cannot be updated together:
// the file's last line, and the acknowledgement floor of a durable consumer.
// So lines are written and synced before they are acknowledged, which
// keeps the file never behind the floor, and on start the file's last line
// is looked up among the lines of the messages the consumer delivered from
// the floor on. Its stream sequence is where the file stands; everything at
// or before it is not written again, everything after it is, in order.
//
// Stream sequences, not event ids, carry the reconciliation: an id may come
// back after the stream's duplicate window, and a message delivered to a
// killed process comes back only when its acknowledgement times out, after
// later ones. The log fills any such gap from the stream itself, so that
// its order is the stream's whatever the order of delivery.
package audit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Options.
const (
	// DefaultDurable is the durable consumer's name when none is given.
	DefaultDurable = "meetwatch-audit"
	// DefaultBatch is how many messages are written and synced at most
	// before one acknowledgement covers them all.
	DefaultBatch = 256
	// DefaultAckTimeout bounds the wait for the server to confirm an
	// acknowledgement.
	DefaultAckTimeout = 5 * time.Second
)

// Errors of the audit log.
var (
	// ErrMismatch reports an audit file that does not continue where its
	// durable consumer stands: it was written through another consumer or
	// from another stream, or it lost lines after they were acknowledged.
	// Writing on would double or drop events, so the log stops instead.
	ErrMismatch = errors.New("the audit file does not match its durable consumer")
	// ErrLocked reports an audit file that another process has open.
	ErrLocked = errors.New("another process is writing the audit file")
	// ErrConsumerConfig reports a durable consumer of the given name that
	// does not deliver the whole stream, in order, acknowledged
	// cumulatively, so that the log cannot rely on its floor.
	ErrConsumerConfig = errors.New("the durable consumer is not an audit consumer")
)

// Options say what to log and how.
type Options struct {
	// Stream is the stream to log.
	Stream string
	// Filter, when set, logs only the messages on the subjects it matches
	// (a NATS subject filter, such as "meetings.acme.>" for one account's
	// events), in stream order; empty logs the whole stream. A durable
	// keeps the filter it was made with: one made with another is
	// refused with ErrConsumerConfig.
	Filter string
	// Durable names the durable consumer that records how far the log is
	// acknowledged; DefaultDurable when empty. One log per durable: two
	// processes on one durable would each get part of the stream.
	Durable string
	// Batch bounds the messages written, synced and acknowledged at once;
	// DefaultBatch when 0.
	Batch int
	// AckTimeout bounds the wait for an acknowledgement's confirmation;
	// DefaultAckTimeout when 0.
	AckTimeout time.Duration
	// Logger receives the log's progress; nil discards it.
	Logger *slog.Logger
}

// Run appends the stream's messages to out until ctx ends, and returns nil
// then. A durable consumer that does not exist yet is created, and starts
// from the stream's first message.
//
// A *File is reconciled with the consumer on start and synced before every
// acknowledgement: it holds every message once, whatever kills the process.
// Any other writer, such as standard output, cannot be read back, so what
// was written but not acknowledged before a restart is written again.
func Run(ctx context.Context, js jetstream.JetStream, out io.Writer, opts Options) error {
	if opts.Durable == "" {
		opts.Durable = DefaultDurable
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = DefaultAckTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &auditLog{opts: opts, out: out, logger: opts.Logger.With("component", "audit", "stream", opts.Stream, "durable", opts.Durable)}
	if opts.Filter != "" {
		l.logger = l.logger.With("filter", opts.Filter)
	}
	if f, ok := out.(*File); ok {
		l.file = f
		l.logger = l.logger.With("file", f.Path())
	}
	err := l.run(ctx, js)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		l.logger.Info("audit stopped", "last_seq", l.written, "unreadable_total", l.unreadable)
		return nil // stopped while starting, as asked
	}
	return err
}

// auditLog is one run of an audit log.
type auditLog struct {
	opts   Options
	out    io.Writer
	file   *File // nil when out cannot be read back
	stream jetstream.Stream
	cons   jetstream.Consumer
	logger *slog.Logger

	// written is the stream sequence of the last line in out. Every
	// message of the stream up to it is in out, once and in order.
	written uint64
	// unreadable counts the audit_unreadable lines this run wrote.
	unreadable int
	buf        []byte
}

func (l *auditLog) run(ctx context.Context, js jetstream.JetStream) error {
	var err error
	l.stream, err = js.Stream(ctx, l.opts.Stream)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", l.opts.Stream, err)
	}
	created, err := l.consumer(ctx, js)
	if err != nil {
		return err
	}
	info := l.cons.CachedInfo()
	floor, delivered := info.AckFloor.Stream, info.Delivered.Stream
	// A consumer's floor starts just before the stream's first message;
	// only a floor with a consumer sequence was acknowledged.
	acked := info.AckFloor.Consumer > 0
	if l.file != nil {
		if n := l.file.Repaired(); n > 0 {
			l.logger.Warn("removed a torn last line", "bytes", n)
		}
		l.written, err = l.reconcile(ctx, floor, delivered, acked)
		if err != nil {
			return err
		}
	} else {
		l.written = floor
	}
	copied, err := l.catchUp(ctx, delivered)
	if err != nil {
		return err
	}
	l.logger.Info("audit started", "created", created, "ack_floor", floor, "delivered", delivered,
		"last_seq", l.written, "copied", copied)
	return l.follow(ctx)
}

// consumer opens the durable consumer, or creates it from the stream's
// first message, and reports whether it created it. A file that already
// holds events gets no new durable: it would write them all again.
func (l *auditLog) consumer(ctx context.Context, js jetstream.JetStream) (bool, error) {
	cons, err := l.stream.Consumer(ctx, l.opts.Durable)
	if err == nil {
		l.cons = cons
		return false, checkConsumer(cons.CachedInfo().Config, l.opts.Filter)
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("opening durable consumer %s: %w", l.opts.Durable, err)
	}
	if l.file != nil {
		if last, ok := l.file.LastLine(); ok {
			return false, fmt.Errorf("%w: %s already holds events (the last %s), but durable %s is new and would write them again",
				ErrMismatch, l.file.Path(), describe(last), l.opts.Durable)
		}
	}
	l.cons, err = js.CreateConsumer(ctx, l.opts.Stream, jetstream.ConsumerConfig{
		Durable:       l.opts.Durable,
		Description:   "meetwatch audit log",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		// Each process killed before its first acknowledgement leaves
		// up to a batch or two pending; a generous bound keeps a run of
		// such kills from stopping deliveries until they time out.
		MaxAckPending: 16 * l.opts.Batch,
		FilterSubject: l.opts.Filter,
	})
	if err != nil {
		return false, fmt.Errorf("creating durable consumer %s: %w", l.opts.Durable, err)
	}
	return true, nil
}

// checkConsumer rejects a durable that would skip or reorder messages, or
// whose floor does not mean "everything up to here": one that filters
// other subjects than filter.
func checkConsumer(c jetstream.ConsumerConfig, filter string) error {
	switch {
	case c.AckPolicy != jetstream.AckAllPolicy:
		return fmt.Errorf("%w: its ack policy is %s, not all", ErrConsumerConfig, c.AckPolicy)
	case len(c.FilterSubjects) > 0:
		return fmt.Errorf("%w: it filters the subjects %q", ErrConsumerConfig, c.FilterSubjects)
	case c.FilterSubject != filter && filter == "":
		return fmt.Errorf("%w: it filters the subjects %s, and no filter is given", ErrConsumerConfig, c.FilterSubject)
	case c.FilterSubject != filter && c.FilterSubject == "":
		return fmt.Errorf("%w: it filters no subjects, and the filter %s is given", ErrConsumerConfig, filter)
	case c.FilterSubject != filter:
		return fmt.Errorf("%w: it filters the subjects %s, not %s", ErrConsumerConfig, c.FilterSubject, filter)
	case c.DeliverPolicy != jetstream.DeliverAllPolicy:
		return fmt.Errorf("%w: its deliver policy is %s, not all", ErrConsumerConfig, c.DeliverPolicy)
	}
	return nil
}

// reconcile returns the stream sequence of the file's last line.
//
// The file holds every message up to the consumer's ack floor, since a
// batch is synced before it is acknowledged, and possibly more: a batch
// written, or synced, whose acknowledgement did not happen, and messages
// copied from the stream on an earlier start. Those can only be messages
// the consumer delivered, so the last line is looked for among the lines
// of the messages from the floor to the last delivered one, by its whole
// text: an id alone could match an older message published again after
// the duplicate window. An audit_unreadable line holds its sequence, so it
// matches only its own message.
func (l *auditLog) reconcile(ctx context.Context, floor, delivered uint64, acked bool) (uint64, error) {
	last, ok := l.file.LastLine()
	switch {
	case !ok && acked:
		return 0, fmt.Errorf("%w: %s is empty, but durable %s has acknowledged up to stream sequence %d",
			ErrMismatch, l.file.Path(), l.opts.Durable, floor)
	case !ok:
		return 0, nil
	}
	floorGone := acked
	for seq := max(floor, 1); seq <= delivered; {
		m, err := l.next(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, err
		}
		if m.Sequence == floor {
			floorGone = false
		}
		if m.Sequence > delivered {
			break
		}
		line, _, err := lineOf(m.Sequence, m.Subject, m.Data)
		if err != nil {
			return 0, err
		}
		if bytes.Equal(line, last) {
			if m.Sequence > floor {
				l.logger.Info("the file holds messages not yet acknowledged", "ack_floor", floor, "last_seq", m.Sequence)
			}
			return m.Sequence, nil
		}
		seq = m.Sequence + 1
	}
	if floorGone {
		// The message at the floor left the stream (its age, a purge),
		// so the last line cannot be matched to it. Nothing after the
		// floor matched either, so the file stops at the floor.
		l.logger.Warn("the message at the ack floor is no longer in the stream; resuming after it",
			"ack_floor", floor, "last_id", eventID(last))
		return floor, nil
	}
	return 0, fmt.Errorf("%w: the last line of %s (%s) is none of the messages durable %s delivered from its ack floor, stream sequences %d to %d",
		ErrMismatch, l.file.Path(), describe(last), l.opts.Durable, floor, delivered)
}

// next returns the stream's first message at or after seq that the log
// takes: on a subject of its filter.
func (l *auditLog) next(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := l.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(cmp.Or(l.opts.Filter, ">")))
	if err != nil {
		return nil, fmt.Errorf("reading stream %s from sequence %d: %w", l.opts.Stream, seq, err)
	}
	return m, nil
}

// catchUp copies from the stream the messages after the file's end that the
// consumer already delivered, to a process that was killed before writing
// them. The consumer delivers them again only once their acknowledgement
// times out, and writing later ones first would break the order. They are
// synced but not acknowledged: the next acknowledgement covers them.
func (l *auditLog) catchUp(ctx context.Context, delivered uint64) (int, error) {
	if delivered <= l.written {
		return 0, nil
	}
	l.buf = l.buf[:0]
	n, err := l.fill(ctx, delivered+1)
	if err != nil {
		return 0, err
	}
	if err := l.flush(); err != nil {
		return 0, err
	}
	return n, nil
}

// fill appends to the buffer every message of the stream after the last
// one written and before seq, and returns how many.
func (l *auditLog) fill(ctx context.Context, seq uint64) (int, error) {
	n := 0
	for l.written+1 < seq {
		m, err := l.next(ctx, l.written+1)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // none left, even seq's: removed since it was delivered
		}
		if err != nil {
			return n, err
		}
		if m.Sequence >= seq {
			break
		}
		if err := l.add(m.Sequence, m.Subject, m.Data); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// flushBytes bounds the buffer: past it, the lines are written and synced
// before more are added. Lines may always go out ahead of their
// acknowledgement, so a flush is safe at any point.
const flushBytes = 1 << 20

// add appends one message to the buffer as a line. A body that is not one
// line of JSON is counted and logged, by sequence and subject only: it is
// whatever someone published, and may hold anything.
func (l *auditLog) add(seq uint64, subject string, body []byte) error {
	line, readable, err := lineOf(seq, subject, body)
	if err != nil {
		return err
	}
	if !readable {
		l.unreadable++
		l.logger.Warn("message body is not one line of JSON; written as audit_unreadable",
			"seq", seq, "subject", subject, "bytes", len(body), "unreadable_total", l.unreadable)
	}
	l.buf = append(l.buf, line...)
	l.buf = append(l.buf, '\n')
	l.written = seq
	if len(l.buf) >= flushBytes {
		return l.flush()
	}
	return nil
}

// flush writes the buffer in one call and syncs it.
func (l *auditLog) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	if _, err := l.out.Write(l.buf); err != nil {
		return fmt.Errorf("writing the audit log: %w", err)
	}
	l.buf = l.buf[:0]
	if l.file == nil {
		return nil
	}
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", l.file.Path(), err)
	}
	return nil
}

// drainWait is how long a batch waits for one more message that is not
// already buffered before it is written.
const drainWait = 2 * time.Millisecond

// follow writes what the consumer delivers, a batch at a time, until ctx
// ends.
func (l *auditLog) follow(ctx context.Context) error {
	it, err := l.cons.Messages(jetstream.PullMaxMessages(l.opts.Batch))
	if err != nil {
		return fmt.Errorf("reading durable consumer %s: %w", l.opts.Durable, err)
	}
	defer it.Stop()
	batch := make([]jetstream.Msg, 0, l.opts.Batch)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			l.logger.Info("audit stopped", "last_seq", l.written, "unreadable_total", l.unreadable)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading durable consumer %s: %w", l.opts.Durable, err)
		}
		batch = append(batch[:0], m)
		for len(batch) < l.opts.Batch && ctx.Err() == nil {
			m, err := it.Next(jetstream.NextMaxWait(drainWait))
			if errors.Is(err, nats.ErrTimeout) {
				break
			}
			if err != nil {
				return fmt.Errorf("reading durable consumer %s: %w", l.opts.Durable, err)
			}
			batch = append(batch, m)
		}
		if err := l.commit(ctx, batch); err != nil {
			return err
		}
	}
}

// commit writes a batch's new messages, syncs them, and acknowledges the
// batch's highest sequence, which acknowledges everything before it.
// Messages at or before the last one written are deliveries again of what
// the file holds: they are only acknowledged. A gap before a message
// (messages delivered to a process killed before writing them) is filled
// from the stream first.
//
// A batch in hand is finished even when ctx ends, so that a stop leaves
// nothing written but unacknowledged; the calls it makes are bounded by
// the JetStream timeouts.
func (l *auditLog) commit(ctx context.Context, batch []jetstream.Msg) error {
	ctx = context.WithoutCancel(ctx)
	var (
		top           jetstream.Msg
		topSeq        uint64
		added, redone int
	)
	l.buf = l.buf[:0]
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading a message's metadata: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > topSeq {
			top, topSeq = m, seq
		}
		if seq <= l.written {
			redone++
			continue
		}
		if seq > l.written+1 {
			from := l.written + 1
			n, err := l.fill(ctx, seq)
			if err != nil {
				return err
			}
			if n > 0 {
				l.logger.Info("copied from the stream messages delivered out of order", "from_seq", from, "to_seq", seq-1, "copied", n)
			}
			added += n
		}
		if err := l.add(seq, m.Subject(), m.Data()); err != nil {
			return err
		}
		added++
	}
	if err := l.flush(); err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, l.opts.AckTimeout)
	defer cancel()
	if err := top.DoubleAck(actx); err != nil {
		// The file holds the batch: a later acknowledgement covers it,
		// and a delivery of it again is skipped.
		l.logger.Warn("acknowledging", "seq", topSeq, "err", err)
	}
	l.logger.Debug("batch written", "written", added, "delivered_again", redone, "last_seq", l.written, "acked_seq", topSeq)
	return nil
}

// lineOf returns a message's line in the log, without its newline, and
// whether it is the body itself: a body that is one line of JSON is its own
// line, any other is wrapped in an audit_unreadable line.
func lineOf(seq uint64, subject string, body []byte) ([]byte, bool, error) {
	if json.Valid(body) && !bytes.ContainsAny(body, "\n\r") {
		return body, true, nil
	}
	var u unreadableLine
	u.Unreadable.Seq = seq
	u.Unreadable.Subject = subject
	u.Unreadable.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// A subject's '<', '>' and '&' stay as they are, so that the line
	// can be searched for the subject as it was published.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(u); err != nil {
		return nil, false, fmt.Errorf("encoding the line of stream sequence %d: %w", seq, err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), false, nil
}

// unreadableLine is the line of a body that is not one line of JSON. Its
// keys are part of the file's format: readers of the file look for them.
type unreadableLine struct {
	Unreadable struct {
		Seq        uint64 `json:"seq"`
		Subject    string `json:"subject"`
		BodyBase64 string `json:"body_base64"`
	} `json:"audit_unreadable"`
}

// describe names a line of the file in errors: by its event id, or as the
// audit_unreadable line of a stream sequence.
func describe(line []byte) string {
	var u struct {
		Unreadable *struct {
			Seq uint64 `json:"seq"`
		} `json:"audit_unreadable"`
	}
	if json.Unmarshal(line, &u) == nil && u.Unreadable != nil {
		return fmt.Sprintf("audit_unreadable, stream sequence %d", u.Unreadable.Seq)
	}
	return fmt.Sprintf("with id %q", eventID(line))
}

// eventID returns a body's CloudEvents id, for messages about it, or "" if
// it has none.
func eventID(body []byte) string {
	var e struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.ID
}
