package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/events"
	"github.com/meetwatch/meetwatch/internal/backoff"
)

// DefaultTries is how many refusals a message gets before Send gives up.
const DefaultTries = 3

// DefaultTimeout bounds one request, answer included.
const DefaultTimeout = 15 * time.Second

// maxAnswer bounds what is read of an answer: the platforms answer a few
// hundred bytes, and the rest is drained unread.
const maxAnswer = 64 << 10

// NewHTTPClient returns the client a Sender uses by default: its own
// transport, every request bounded by timeout, and redirects not
// followed, so that neither the body nor the URL's credential goes
// anywhere but the webhook (a redirect is a refusal).
func NewHTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// Webhook is where the messages go.
	Webhook *Webhook
	// Client sends the requests; nil means NewHTTPClient(DefaultTimeout).
	Client *http.Client
	// Tries is how many refusals a message gets before Send gives up on
	// it; 0 means DefaultTries.
	Tries int
	// Limiter paces the requests; nil means the format's own
	// (Format.Limiter).
	Limiter *rate.Limiter
	// Logger receives the retries; nil discards them.
	Logger *slog.Logger
	// Now is the clock the signatures and Retry-After dates are read
	// against; nil means time.Now.
	Now func() time.Time
}

// Sender delivers events to one webhook, one at a time: it paces the
// requests within the platform's rate, and sends a message again until
// the platform accepts it, waiting as long as a rate-limited answer asks
// and backing off while the platform fails. A Sender is safe for
// concurrent use, but the platforms keep the order of messages only when
// they are sent one after another.
type Sender struct {
	hook    *Webhook
	client  *http.Client
	limiter *rate.Limiter
	tries   int
	logger  *slog.Logger
	now     func() time.Time
}

// NewSender returns a Sender for cfg.Webhook.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Webhook == nil {
		return nil, errors.New("new sender: no webhook")
	}
	s := &Sender{hook: cfg.Webhook, client: cfg.Client, limiter: cfg.Limiter, tries: cfg.Tries, logger: cfg.Logger, now: cfg.Now}
	if s.client == nil {
		s.client = NewHTTPClient(DefaultTimeout)
	}
	if s.limiter == nil {
		s.limiter = cfg.Webhook.format.Limiter()
	}
	if s.tries <= 0 {
		s.tries = DefaultTries
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.logger = s.logger.With("webhook", s.hook.String(), "format", string(s.hook.format))
	return s, nil
}

// Send posts event e, whose stored body is raw, until the platform accepts
// it, and returns nil then. It returns the context's error when ctx ends
// first, and otherwise an error for a message that will not be delivered:
// one the platform refused Tries times (wrapping ErrRefused), or one that
// cannot be put in the platform's format. The caller skips such a message
// and goes on with the next.
//
// Rate-limited answers and failures (5xx, network errors) do not count as
// refusals: they are retried for as long as ctx lasts, so that a platform
// that is down or throttling loses nothing.
func (s *Sender) Send(ctx context.Context, e events.Event, raw []byte) error {
	p := platforms[s.hook.format]
	slow := backoff.Backoff{Base: p.cooldown, Max: p.maxCooldown}
	busy := backoff.Backoff{Base: time.Second, Max: time.Minute}
	broken := backoff.Backoff{Base: 10 * time.Second, Max: 5 * time.Minute}
	refusedWait := backoff.Backoff{Base: 500 * time.Millisecond, Max: 5 * time.Second}
	refusals := 0
	for attempt := 1; ; attempt++ {
		if err := s.limiter.Wait(ctx); err != nil {
			return fmt.Errorf("pacing event %s: %w", e.ID, err)
		}
		err := s.post(ctx, e, raw)
		if err == nil {
			if attempt > 1 {
				s.logger.Info("webhook accepted the message", "event_id", e.ID, "attempt", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("sending event %s: %w", e.ID, context.Cause(ctx))
		}
		var wait time.Duration
		var ae *AnswerError
		switch {
		case errors.Is(err, ErrRateLimited):
			wait = slow.Next()
			if errors.As(err, &ae) && ae.RetryAfter > 0 {
				wait = ae.RetryAfter
			}
		case errors.Is(err, ErrUnavailable):
			wait = busy.Next()
			if errors.As(err, &ae) && ae.RetryAfter > 0 {
				wait = ae.RetryAfter
			}
		case errors.Is(err, ErrWebhookBroken):
			wait = broken.Next()
		case errors.Is(err, ErrRefused):
			refusals++
			if refusals >= s.tries {
				return fmt.Errorf("sending event %s: giving up after %d refusals: %w", e.ID, refusals, err)
			}
			wait = refusedWait.Next()
		default:
			return fmt.Errorf("sending event %s: %w", e.ID, err)
		}
		level, msg := slog.LevelWarn, "webhook did not accept the message; retrying"
		if errors.Is(err, ErrWebhookBroken) {
			level, msg = slog.LevelError, "the webhook refuses every message; events wait until its configuration is mended"
		}
		s.logger.Log(ctx, level, msg, "event_id", e.ID, "kind", string(e.Kind()), "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting to send event %s again: %w", e.ID, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// Try posts event e once, neither paced nor sent again, and returns nil
// when the platform accepted it, or else what it answered (an
// *AnswerError) or why it could not be reached: for a test message, whose
// sender wants the platform's word now rather than patience.
func (s *Sender) Try(ctx context.Context, e events.Event, raw []byte) error {
	return s.post(ctx, e, raw)
}

// post makes one attempt: it returns nil when the platform accepted the
// message, an error wrapping ErrRateLimited, ErrUnavailable,
// ErrWebhookBroken or ErrRefused when it answered otherwise or not at all, and another error
// when the message cannot be built.
func (s *Sender) post(ctx context.Context, e events.Event, raw []byte) error {
	req, err := s.hook.Request(ctx, e, raw, s.now())
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// A *url.Error quotes the URL, which holds the credential:
		// keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: posting to %s: %w", ErrUnavailable, s.hook, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%w: reading the answer of %s: %w", ErrUnavailable, s.hook, err)
	}
	// Drained, the connection can carry the next message.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		s.logger.Debug("draining an answer", "err", err)
	}
	return s.hook.format.Check(resp.StatusCode, resp.Header, body, s.now())
}
