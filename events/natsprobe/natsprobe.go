// Package natsprobe learns what a NATS user may do on the subjects
// meetwatch uses, without storing, creating or deleting anything, so that
// `meetwatch check` can vouch for a deployment before `meetwatch run`
// writes to it.
//
// A probe is a message that the server checks against the user's
// permissions and that JetStream then refuses: a publish whose
// Nats-Expected-Stream header names a stream that cannot exist (stream
// names hold no dot), a stream or consumer request whose body names
// another stream than its subject, a consumer deletion with a body, which
// the server wants empty. The server checks a publish permission before it
// routes the message, and answers a denied one with a permissions
// violation on the connection instead: that is what a probe listens for.
// The reply, when one comes, adds what JetStream knows (which stream took
// a subject, what a key holds); reads (account and stream info, a direct
// get) are sent as they are, since they change nothing.
package natsprobe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header marks every probe message, so that a plain subscriber to the
// subjects (a probe on an event subject reaches those, though no stream
// stores it) can tell it from an event.
const Header = "Meetwatch-Probe"

// noStream is the stream a probe expects or names where JetStream must
// refuse: no stream can be called that, since a stream name holds no dot.
const noStream = "meetwatch.probe"

// Name is the consumer a probe names, in the subjects of its consumer
// requests and its flow-control publish; no consumer is created or
// deleted under it.
const Name = "meetwatch-probe"

var (
	// ErrNoAnswer means the server let the probe through but nothing
	// answered it before the timeout.
	ErrNoAnswer = errors.New("no answer")
	// ErrAccepted means JetStream did what a probe asks instead of
	// refusing it: the server does not check what the probe relies on
	// before it acts, as nats-server does.
	ErrAccepted = errors.New("the server accepted a probe it should have refused")
)

// DeniedError is a permissions violation the server reported for a probe:
// the user may not publish to, or subscribe to, Subject.
type DeniedError struct {
	// Op is "publish" or "subscribe".
	Op      string
	Subject string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("permissions violation for %s to %q", e.Op, e.Subject)
}

// Denied returns every *DeniedError in err's tree: a probe may be denied
// its publish and its reply subscription at once.
func Denied(err error) []*DeniedError {
	var out []*DeniedError
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case *DeniedError:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, c := range x.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return out
}

// violation matches what the server says of a denied subject, as nats.go
// passes it to the error handler.
var violation = regexp.MustCompile(`Permissions Violation for (Publish|Subscription) to "([^"]+)"`)

// Prober sends probes on one connection, one at a time.
type Prober struct {
	nc      *nats.Conn
	timeout time.Duration

	mu sync.Mutex
	// heard lists the permissions violations the server sent, in order;
	// arrived is closed, and replaced, whenever one is added.
	heard   []string
	arrived chan struct{}
}

// Dial connects to url (one or more comma-separated server URLs) with
// opts, without reconnecting, and returns a Prober that waits timeout at
// most for each answer. When no server could be reached, the error says
// why each dial failed, where nats.go says only that no server was
// available.
func Dial(url string, timeout time.Duration, opts ...nats.Option) (*Prober, error) {
	p := &Prober{timeout: timeout, arrived: make(chan struct{})}
	d := &dialer{Dialer: net.Dialer{Timeout: timeout}}
	nc, err := nats.Connect(url, append(opts,
		nats.NoReconnect(),
		nats.Timeout(timeout),
		nats.SetCustomDialer(d),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { p.hear(err) }),
	)...)
	if failed := d.errors(); errors.Is(err, nats.ErrNoServers) && len(failed) > 0 {
		return nil, fmt.Errorf("%w: %s", err, strings.Join(failed, "; "))
	}
	if err != nil {
		return nil, err
	}
	p.nc = nc
	return p, nil
}

// dialer remembers why each dial failed.
type dialer struct {
	net.Dialer
	mu     sync.Mutex
	failed []string
}

func (d *dialer) errors() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

func (d *dialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, address)
	if err != nil {
		d.mu.Lock()
		d.failed = append(d.failed, err.Error())
		d.mu.Unlock()
	}
	return c, err
}

// Conn is the probes' connection.
func (p *Prober) Conn() *nats.Conn { return p.nc }

// Close closes the connection.
func (p *Prober) Close() { p.nc.Close() }

func (p *Prober) hear(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.heard = append(p.heard, err.Error())
	close(p.arrived)
	p.arrived = make(chan struct{})
}

// mark is where the connection's errors stood before a probe was sent.
type mark struct {
	heard int
	last  error
}

func (p *Prober) mark() mark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return mark{heard: len(p.heard), last: p.nc.LastError()}
}

// deniedSince returns the violations the server sent since m. The caller
// has flushed the connection, so every violation the server sent for what
// came before is in: the client reads it before the flush's answer and
// records it as the connection's last error at once, though the error
// handler hears of it a little later, in a goroutine of its own. Only
// when the last error is a new violation is there something to wait for.
func (p *Prober) deniedSince(ctx context.Context, m mark) error {
	last := p.nc.LastError()
	if !errors.Is(last, nats.ErrPermissionViolation) {
		return nil
	}
	if errors.Is(m.last, nats.ErrPermissionViolation) && last == m.last { // both a *fmt.wrapError: comparable
		return nil
	}
	for {
		p.mu.Lock()
		heard, arrived := p.heard[m.heard:], p.arrived
		p.mu.Unlock()
		for i, h := range heard {
			if h == last.Error() {
				return denials(heard[:i+1])
			}
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the server's permissions violation: %w", context.Cause(ctx))
		}
	}
}

func denials(heard []string) error {
	var errs []error
	for _, h := range heard {
		if m := violation.FindStringSubmatch(h); m != nil {
			op := "publish"
			if m[1] == "Subscription" {
				op = "subscribe"
			}
			errs = append(errs, &DeniedError{Op: op, Subject: m[2]})
		}
	}
	return errors.Join(errs...)
}

// send publishes msg, with a reply subscription when reply is set, and
// returns once the server has let it through (with the subscription), or
// with the violations it sent for them.
func (p *Prober) send(ctx context.Context, msg *nats.Msg, reply bool) (*nats.Subscription, error) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(Header, "check")
	m := p.mark()
	var sub *nats.Subscription
	if reply {
		var err error
		if sub, err = p.nc.SubscribeSync(p.nc.NewInbox()); err != nil {
			return nil, fmt.Errorf("subscribing for the answer to %s: %w", msg.Subject, err)
		}
		msg.Reply = sub.Subject
	}
	err := p.nc.PublishMsg(msg)
	if err == nil {
		err = p.nc.FlushWithContext(ctx)
	}
	if err == nil {
		err = p.deniedSince(ctx, m)
	}
	if err != nil {
		if sub != nil {
			_ = sub.Unsubscribe() // the connection's errors say more than this one
		}
		return nil, fmt.Errorf("sending to %s: %w", msg.Subject, err)
	}
	return sub, nil
}

// request sends msg and returns the answer. It fails with a *DeniedError
// when the server refused the message or its reply subscription, with
// nats.ErrNoResponders when nothing took the subject, and with ErrNoAnswer
// after the timeout.
func (p *Prober) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	sub, err := p.send(ctx, msg, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }() // closing the connection drops it anyway
	answer, err := sub.NextMsgWithContext(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("%s: %w within %s", msg.Subject, ErrNoAnswer, p.timeout)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", msg.Subject, err)
	case len(answer.Data) == 0 && answer.Header.Get("Status") == "503":
		return nil, fmt.Errorf("%s: %w", msg.Subject, nats.ErrNoResponders)
	}
	return answer, nil
}

// apiAnswer is the error part of every JetStream API answer.
type apiAnswer struct {
	Error *jetstream.APIError `json:"error"`
}

// refused sends a request that JetStream must refuse, and returns nil once
// it did, or when it let the request through and nothing answered: the
// permission is what a refusal probe is about.
func (p *Prober) refused(ctx context.Context, subject string, body []byte) error {
	answer, err := p.request(ctx, &nats.Msg{Subject: subject, Data: body})
	switch {
	case errors.Is(err, ErrNoAnswer) || errors.Is(err, nats.ErrNoResponders):
		return nil
	case err != nil:
		return err
	}
	var a apiAnswer
	if json.Unmarshal(answer.Data, &a) != nil || a.Error == nil {
		return fmt.Errorf("%s: %w: %s", subject, ErrAccepted, answer.Data)
	}
	return nil
}

// AccountInfo asks for the account's JetStream usage and limits
// ($JS.API.INFO). Without JetStream it fails with
// jetstream.ErrJetStreamNotEnabled or the server's *jetstream.APIError.
func (p *Prober) AccountInfo(ctx context.Context) (*jetstream.AccountInfo, error) {
	answer, err := p.request(ctx, &nats.Msg{Subject: "$JS.API.INFO"})
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, jetstream.ErrJetStreamNotEnabled
	}
	if err != nil {
		return nil, err
	}
	var a struct {
		jetstream.AccountInfo
		apiAnswer
	}
	if err := json.Unmarshal(answer.Data, &a); err != nil {
		return nil, fmt.Errorf("reading the account info: %w", err)
	}
	if a.Error != nil {
		return nil, a.Error
	}
	return &a.AccountInfo, nil
}

// StreamInfo asks for a stream's configuration and state
// ($JS.API.STREAM.INFO.<name>). A stream that does not exist fails it
// with jetstream.ErrStreamNotFound.
func (p *Prober) StreamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	answer, err := p.request(ctx, &nats.Msg{Subject: "$JS.API.STREAM.INFO." + name})
	if err != nil {
		return nil, err
	}
	var a struct {
		jetstream.StreamInfo
		apiAnswer
	}
	if err := json.Unmarshal(answer.Data, &a); err != nil {
		return nil, fmt.Errorf("reading the info of stream %s: %w", name, err)
	}
	switch {
	case a.Error != nil && a.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil, jetstream.ErrStreamNotFound
	case a.Error != nil:
		return nil, a.Error
	}
	return &a.StreamInfo, nil
}

// MayCreateStream and MayUpdateStream find out whether the user may create
// and update the stream called name: each sends the request with a body
// naming another stream, which the server refuses.
func (p *Prober) MayCreateStream(ctx context.Context, name string) error {
	return p.refused(ctx, "$JS.API.STREAM.CREATE."+name, fmt.Appendf(nil, `{"name":%q}`, noStream))
}

// MayUpdateStream: see MayCreateStream.
func (p *Prober) MayUpdateStream(ctx context.Context, name string) error {
	return p.refused(ctx, "$JS.API.STREAM.UPDATE."+name, fmt.Appendf(nil, `{"name":%q}`, noStream))
}

// MayCreateConsumer finds out whether the user may create consumers on
// stream (a watch of a bucket is one): the request names another stream in
// its body, which the server refuses.
func (p *Prober) MayCreateConsumer(ctx context.Context, stream string) error {
	return p.refused(ctx, "$JS.API.CONSUMER.CREATE."+stream+"."+Name,
		fmt.Appendf(nil, `{"stream_name":%q,"config":{"name":%q}}`, noStream, Name))
}

// MayDeleteConsumer finds out whether the user may delete consumers of
// stream (a watch deletes its own as it stops): the request has a body,
// which the server refuses before it looks for the consumer.
func (p *Prober) MayDeleteConsumer(ctx context.Context, stream string) error {
	return p.refused(ctx, "$JS.API.CONSUMER.DELETE."+stream+"."+Name, []byte(`{"probe":true}`))
}

// MayPublish finds out whether the user may publish to subject, with an
// empty message and no reply, which expects a stream no stream can be:
// were subject a stream's, the stream would refuse it, as it refuses
// StreamOf's. It does not wait for anything but the server's verdict on
// the permission. A plain subscriber to subject receives the message.
func (p *Prober) MayPublish(ctx context.Context, subject string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	_, err := p.send(ctx, &nats.Msg{Subject: subject, Header: nats.Header{jetstream.ExpectedStreamHeader: []string{noStream}}}, false)
	return err
}

// StreamOf finds out which stream stores subject, and whether the user may
// publish to it: it publishes an empty message that expects a stream no
// stream can be, which JetStream refuses, naming the stream it checked.
// It returns "" when no stream stores subject. A plain subscriber to
// subject receives the message, with Header set.
func (p *Prober) StreamOf(ctx context.Context, subject string) (string, error) {
	answer, err := p.request(ctx, &nats.Msg{Subject: subject, Header: nats.Header{jetstream.ExpectedStreamHeader: []string{noStream}}})
	if errors.Is(err, nats.ErrNoResponders) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var a struct {
		Stream   string `json:"stream"`
		Sequence uint64 `json:"seq"`
		apiAnswer
	}
	if err := json.Unmarshal(answer.Data, &a); err != nil {
		return "", fmt.Errorf("reading the answer to %s: %w", subject, err)
	}
	if a.Error == nil {
		return a.Stream, fmt.Errorf("%s: %w: stored at sequence %d of %s", subject, ErrAccepted, a.Sequence, a.Stream)
	}
	return a.Stream, nil
}

// DirectGet reads the last message on subject in stream
// ($JS.API.DIRECT.GET.<stream>.<subject>), as a key-value get does. It
// returns nil and no error when the stream holds none, and
// nats.ErrNoResponders when the stream does not exist (or takes no direct
// gets).
func (p *Prober) DirectGet(ctx context.Context, stream, subject string) (*nats.Msg, error) {
	answer, err := p.request(ctx, &nats.Msg{Subject: "$JS.API.DIRECT.GET." + stream + "." + subject})
	if err != nil {
		return nil, err
	}
	switch status := answer.Header.Get("Status"); {
	case status == "404":
		return nil, nil
	case status != "":
		return nil, fmt.Errorf("reading %s from %s: status %s %s", subject, stream, status, answer.Header.Get("Description"))
	}
	return answer, nil
}
