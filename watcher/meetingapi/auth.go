package meetingapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot/redact"
)

const (
	appAuthPath     = "/v2/usg/acs/auth/appauth"
	accountAuthPath = "/v1/usg/acs/auth/account"
	// loginClientType is the API's client type for integrations. Each user
	// holds up to 64 tokens of it; the 65th login evicts the oldest.
	loginClientType = 72
	// signatureLife is how long an App ID login's signature stays valid: long
	// enough for a slow request and some clock skew, short enough that a
	// captured request is soon worthless.
	signatureLife = 10 * time.Minute
	// loginTimeout bounds one login. The login runs apart from any caller's
	// context, so that one caller giving up does not fail the others
	// waiting for it; this bound is what stops it instead.
	loginTimeout = 30 * time.Second
	// maxLoginAnswer caps a login answer's body, which is about a kilobyte.
	maxLoginAnswer = 64 << 10
	// fallbackLife is the lifetime assumed for a token whose answer gives
	// neither validPeriod nor a future expireTime: the shortest the API
	// documents. If it is wrong, the API's 401 and Invalidate recover.
	fallbackLife = 12 * time.Hour
	// defaultRenewAt is the share of a token's life after which it is
	// renewed, leaving a fifth of it to cover a slow or failing login.
	defaultRenewAt = 0.8
	// defaultRefusalBase and defaultRefusalMax space the logins after a
	// refusal when LoginConfig.Backoff does not: the default poll
	// interval, and five minutes. Refused credentials are a configuration
	// to mend, not an outage to outlast, so they are tried far less often
	// than a failed poll.
	defaultRefusalBase = 15 * time.Second
	defaultRefusalMax  = 5 * time.Minute
	// renewalBase and renewalMax space the tries of a renewal that failed
	// for a passing reason (a 5xx, a network error) while the token in
	// hand still works: each is a request from the budget, and a login
	// endpoint in trouble gains nothing from one per request.
	renewalBase = time.Second
	renewalMax  = time.Minute
)

// TokenSource hands out the API access token. Implementations cache it,
// renew it before it expires, and share one login among concurrent callers,
// because each login takes one of the user's 64 token slots.
type TokenSource interface {
	// Token returns a token that is valid now, logging in first if need
	// be.
	Token(ctx context.Context) (redact.Secret, error)
	// Close stops a login under way and waits for it.
	Close()
	// Invalidate is called with a token the API refused (401 or
	// USG.000000004). The next Token logs in again, but only if the cached
	// token is still bad, so that ten requests refused at once cause one
	// login, not ten. It reports whether a new token can be had at all:
	// a static one cannot, and a request sent again would be refused again.
	Invalidate(bad redact.Secret) (renewable bool)
	// Expiry is when the token in hand expires; zero when unknown.
	Expiry() time.Time
	// NotBefore is when Token may hand out a working token again after
	// a refused login; zero while nothing is held back.
	NotBefore() time.Time
}

// StaticToken returns a TokenSource for a token obtained elsewhere (the
// MEETWATCH_ACCESS_TOKEN setting). It never renews the token, since it has
// no credentials to do so, and Invalidate does nothing: once the API
// refuses the token, every request fails until the token is replaced.
func StaticToken(tok redact.Secret) TokenSource { return staticToken{tok: tok} }

type staticToken struct{ tok redact.Secret }

func (s staticToken) Token(context.Context) (redact.Secret, error) {
	if s.tok.IsZero() {
		return redact.Secret{}, errors.New("static access token is empty")
	}
	return s.tok, nil
}

func (staticToken) Invalidate(redact.Secret) bool { return false }

// Expiry is unknown: the token came from elsewhere.
func (staticToken) Expiry() time.Time { return time.Time{} }

// NotBefore is zero: no login is ever held back.
func (staticToken) NotBefore() time.Time { return time.Time{} }

func (staticToken) Close() {}

// Format prints a description instead of the fields, because fmt prints
// unexported fields raw, without the Secret's redaction.
func (staticToken) Format(f fmt.State, _ rune) {
	io.WriteString(f, "meetingapi.StaticToken("+redact.Placeholder+")")
}

// LogValue implements slog.LogValuer.
func (staticToken) LogValue() slog.Value { return slog.StringValue("static token") }

// LoginConfig configures how a login-based TokenSource reaches the API.
type LoginConfig struct {
	// BaseURL is the API's scheme and host, e.g.
	// https://api.meeting.huaweicloud.com.
	BaseURL string
	// HTTPClient sends the login requests; it is required, so that the
	// caller decides its timeouts and transport.
	HTTPClient *http.Client
	// Wait, when set, is called before every login request and may block;
	// logins then share the client's request budget with the listing. An
	// error from it fails the login.
	Wait func(ctx context.Context) error
	// Gate, when set, holds every login while the API asked for a pause,
	// and a 429 or 503 with Retry-After from the login endpoint closes it.
	// Give it the client's gate (ClientConfig.Gate), so that a pause asked
	// for by any answer holds logins and pages alike.
	Gate *Gate
	// Backoff spaces the logins after the API refused the credentials (a
	// 4xx other than 429): once refused, Token fails at once, with the
	// refusal, and sends no login until Backoff's next wait has passed;
	// the waits grow with each refusal in a row and start over after a
	// login succeeds. While a token from before still works, Token hands it
	// out meanwhile. Set Base to the poll interval, so that logins back
	// off like polls; zero Base and Max mean 15s and 5m.
	Backoff backoff.Backoff
	// Now is the clock that times the token's life; nil means time.Now.
	Now func() time.Time
	// Logger receives "logged in" with the token's expiry (never the
	// token), and a warning when a renewal fails while the old token still
	// works; nil discards. Scope it before passing it in.
	Logger *slog.Logger
	// RenewAt is the share of a token's life after which it is renewed,
	// in (0, 1]; 0 or a value outside that range means 0.8.
	RenewAt float64
}

// AppIDCredentials are an App ID login's credentials, from the enterprise's
// app management page. They print with AppKey redacted.
type AppIDCredentials struct {
	AppID  string
	AppKey redact.Secret
	// UserID is the user the token acts for; empty means the enterprise
	// administrator.
	UserID string
	// CorpID is the enterprise, for an app that serves several (the API's
	// multi-tenant mode); empty otherwise.
	CorpID string
}

// AccountCredentials are an account login's credentials. They print with
// Password redacted.
type AccountCredentials struct {
	Account  string
	Password redact.Secret
}

// NewAppIDLogin returns a TokenSource that logs in with an App ID and its
// key, signing each login request with HMAC-SHA256 so the key itself never
// travels.
func NewAppIDLogin(cfg LoginConfig, cred AppIDCredentials) TokenSource {
	return newLoginSource(cfg, "app id", "app_id", cred.AppID, func(now time.Time) (loginRequest, error) {
		nonce, err := newNonce()
		if err != nil {
			return loginRequest{}, err
		}
		exp := now.Add(signatureLife).Unix()
		parts := []string{cred.AppID}
		if cred.CorpID != "" {
			parts = append(parts, cred.CorpID)
		}
		parts = append(parts, cred.UserID, strconv.FormatInt(exp, 10), nonce)
		mac := hmac.New(sha256.New, []byte(cred.AppKey.Reveal()))
		mac.Write([]byte(strings.Join(parts, ":")))
		sig := hex.EncodeToString(mac.Sum(nil))

		body, err := json.Marshal(struct {
			AppID      string `json:"appId"`
			ClientType int    `json:"clientType"`
			ExpireTime int64  `json:"expireTime"`
			Nonce      string `json:"nonce"`
			UserID     string `json:"userId,omitempty"`
			CorpID     string `json:"corpId,omitempty"`
		}{cred.AppID, loginClientType, exp, nonce, cred.UserID, cred.CorpID})
		if err != nil {
			return loginRequest{}, fmt.Errorf("encoding the login body: %w", err)
		}
		authz := "HMAC-SHA256 signature=" + sig + ",access=" + base64.StdEncoding.EncodeToString([]byte(cred.AppID))
		return loginRequest{
			path:    appAuthPath,
			authz:   authz,
			body:    body,
			secrets: []string{authz, sig, cred.AppKey.Reveal()},
		}, nil
	})
}

// NewAccountLogin returns a TokenSource that logs in with an account and
// its password, sent as HTTP Basic credentials.
func NewAccountLogin(cfg LoginConfig, cred AccountCredentials) TokenSource {
	return newLoginSource(cfg, "account", "account", cred.Account, func(time.Time) (loginRequest, error) {
		body, err := json.Marshal(struct {
			Account    string `json:"account"`
			ClientType int    `json:"clientType"`
		}{cred.Account, loginClientType})
		if err != nil {
			return loginRequest{}, fmt.Errorf("encoding the login body: %w", err)
		}
		basic := base64.StdEncoding.EncodeToString([]byte(cred.Account + ":" + cred.Password.Reveal()))
		return loginRequest{
			path:    accountAuthPath,
			authz:   "Basic " + basic,
			body:    body,
			secrets: []string{basic, cred.Password.Reveal()},
		}, nil
	})
}

// newNonce returns 48 random hex characters; the API wants 32 to 64.
func newNonce() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// loginRequest is one login, built fresh per attempt because the App ID
// signature covers a time and a nonce.
type loginRequest struct {
	path  string
	authz string
	body  []byte
	// secrets are scrubbed from anything the server says back, in case
	// it echoes the request.
	secrets []string
}

// loginSource is a TokenSource that logs in with credentials, caches the
// token, and renews it after RenewAt of its life.
type loginSource struct {
	cfg     LoginConfig
	name    string // "app id" or "account", for errors
	idKey   string // log key of who logs in
	id      string // the App ID or the account: not secret
	build   func(now time.Time) (loginRequest, error)
	log     *slog.Logger
	now     func() time.Time
	renewAt float64

	// base parents every login; Close cancels it and waits for the login
	// goroutine, which so has an owner.
	base context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu        sync.Mutex
	tok       redact.Secret
	renewTime time.Time // when Token starts logging in again
	expiry    time.Time // when the token stops working
	inFlight  *flight   // the login under way, shared by every caller
	closed    bool
	// refusal is the last login the API refused, while no login has
	// succeeded since; no login is sent before retryAt.
	refusal error
	retryAt time.Time
	refused backoff.Backoff // the waits after refusals in a row
	renewal backoff.Backoff // the waits after failed renewals in a row
}

// flight is one login that several callers wait for: each login takes one
// of the user's 64 token slots, so ten callers must cause one, not ten.
type flight struct {
	done chan struct{}
	tok  redact.Secret
	err  error
}

func newLoginSource(cfg LoginConfig, name, idKey, id string, build func(time.Time) (loginRequest, error)) *loginSource {
	l := &loginSource{cfg: cfg, name: name, idKey: idKey, id: id, build: build, log: cfg.Logger, now: cfg.Now, renewAt: cfg.RenewAt}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if !(l.renewAt > 0 && l.renewAt <= 1) {
		l.renewAt = defaultRenewAt
	}
	l.refused = cfg.Backoff
	if l.refused.Base <= 0 {
		l.refused.Base = defaultRefusalBase
	}
	if l.refused.Max <= 0 {
		l.refused.Max = defaultRefusalMax
	}
	l.renewal = backoff.Backoff{Base: renewalBase, Max: renewalMax}
	l.base, l.stop = context.WithCancel(context.Background())
	return l
}

// Close stops a login under way and waits for it; Token fails afterwards.
// It is idempotent.
func (l *loginSource) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.stop()
	l.wg.Wait()
}

// Format prints who logs in and nothing else, because fmt prints
// unexported fields raw, without the Secret's redaction.
func (l *loginSource) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "meetingapi.TokenSource(%s login as %q)", l.name, l.id)
}

// LogValue implements slog.LogValuer, for the same reason as Format.
func (l *loginSource) LogValue() slog.Value {
	return slog.GroupValue(slog.String("login", l.name), slog.String(l.idKey, l.id))
}

// Token returns the cached token while it is fresh. Otherwise it joins the
// login in flight, or starts one. The login runs in a goroutine the source
// owns, bounded by loginTimeout and by Close, so every caller gives up on
// its own context only. A login that every caller gave up on still
// finishes, within loginTimeout, and its token is cached.
func (l *loginSource) Token(ctx context.Context) (redact.Secret, error) {
	if tok, ok := l.fresh(); ok {
		return tok, nil
	}
	if tok, held, err := l.held(); held {
		return tok, err
	}
	if err := context.Cause(ctx); err != nil {
		return redact.Secret{}, fmt.Errorf("%s login: %w", l.name, err) // nobody would wait for it
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return redact.Secret{}, fmt.Errorf("%s login: %w: the token source is closed", l.name, ErrLoginFailed)
	}
	f := l.inFlight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		l.inFlight = f
		l.wg.Go(func() {
			f.tok, f.err = l.refresh(l.base)
			l.mu.Lock()
			l.inFlight = nil
			l.mu.Unlock()
			close(f.done)
		})
	}
	l.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return redact.Secret{}, fmt.Errorf("waiting for the %s login: %w", l.name, context.Cause(ctx))
	}
}

// Expiry is when the token in hand expires; zero before the first login.
func (l *loginSource) Expiry() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiry
}

// Invalidate forgets bad if it is still the cached token. A token renewed
// since bad was handed out is kept: it is not the one the API refused.
func (l *loginSource) Invalidate(bad redact.Secret) bool {
	if bad.IsZero() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tok.Reveal() == bad.Reveal() {
		l.tok, l.renewTime, l.expiry = redact.Secret{}, time.Time{}, time.Time{}
	}
	return true
}

// held answers a Token call while a refused login is held back: the token
// from before while it still works, or else the refusal, at once.
func (l *loginSource) held() (redact.Secret, bool, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.refusal == nil || !now.Before(l.retryAt):
		return redact.Secret{}, false, nil
	case !l.tok.IsZero() && now.Before(l.expiry):
		return l.tok, true, nil
	default:
		return redact.Secret{}, true, fmt.Errorf("%w (no login before %s)", l.refusal, l.retryAt.Format(time.RFC3339))
	}
}

// NotBefore returns when a refused login is tried again, while Token
// cannot hand out a working token until then; the zero time otherwise.
func (l *loginSource) NotBefore() time.Time {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusal == nil || (!l.tok.IsZero() && now.Before(l.expiry)) {
		return time.Time{}
	}
	return l.retryAt
}

// fresh returns the cached token if it is not yet due for renewal.
func (l *loginSource) fresh() (redact.Secret, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tok, !l.tok.IsZero() && now.Before(l.renewTime)
}

// refresh logs in and caches the token. When a renewal fails while the old
// token still works, it returns the old token: the caller's request can
// still succeed, and a Token after a backoff (within the token's life)
// tries the login again.
func (l *loginSource) refresh(ctx context.Context) (redact.Secret, error) {
	// A caller that found the cache stale may arrive just after another
	// flight stored a new token; it takes that token instead of logging in.
	if tok, ok := l.fresh(); ok {
		return tok, nil
	}
	if tok, held, err := l.held(); held {
		return tok, err // a caller that found the cache stale as a refusal came in
	}
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	tok, sent, life, err := l.login(ctx)
	if err != nil {
		now := l.now()
		l.mu.Lock()
		old, expiry := l.tok, l.expiry
		refused := errors.Is(err, ErrLoginRefused)
		if refused {
			l.refusal, l.retryAt = err, now.Add(l.refused.Next())
		}
		refusals, retryAt := l.refused.Failures(), l.retryAt
		keep := !old.IsZero() && now.Before(expiry)
		if keep {
			l.renewTime = now.Add(min(l.renewal.Next(), expiry.Sub(now)))
		}
		l.mu.Unlock()
		if refused {
			l.log.Error("the api refused the credentials; no login before the backoff has passed",
				"login", l.name, l.idKey, l.id, "refusals", refusals, "retry_at", retryAt, "err", err)
		}
		if keep {
			l.log.Warn("keeping the current token after a failed renewal", "err", err, "expires_at", expiry)
			return old, nil
		}
		return redact.Secret{}, err
	}
	renew := sent.Add(time.Duration(float64(life) * l.renewAt))
	expiry := sent.Add(life)
	l.mu.Lock()
	l.tok, l.renewTime, l.expiry = tok, renew, expiry
	l.refusal, l.retryAt = nil, time.Time{}
	l.refused.Reset()
	l.renewal.Reset()
	l.mu.Unlock()
	l.log.Info("logged in", "login", l.name, l.idKey, l.id, "expires_at", expiry, "renew_at", renew)
	return tok, nil
}

// loginAnswer is the part of a login's answer the source uses.
type loginAnswer struct {
	AccessToken string  `json:"accessToken"`
	ValidPeriod flexInt `json:"validPeriod"`
	ExpireTime  flexInt `json:"expireTime"`
}

// login sends one login request. It returns the token, the local time the
// request was sent, and the token's life measured from then.
func (l *loginSource) login(ctx context.Context) (tok redact.Secret, sent time.Time, life time.Duration, err error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s login: %w: %s", l.name, ErrLoginFailed, fmt.Sprintf(format, args...))
	}
	if l.cfg.HTTPClient == nil {
		return redact.Secret{}, time.Time{}, 0, fail("no http client configured")
	}
	u, err := ParseBaseURL(l.cfg.BaseURL)
	if err != nil {
		return redact.Secret{}, time.Time{}, 0, fail("%v", err)
	}
	budget := l.cfg.Wait
	if budget != nil {
		budget = func(ctx context.Context) error {
			if err := l.cfg.Wait(ctx); err != nil {
				return fmt.Errorf("waiting for the request budget: %w", err)
			}
			return nil
		}
	}
	gate := l.cfg.Gate
	if gate == nil {
		gate = &Gate{} // open: only the budget waits
	}
	if err := gate.admit(ctx, budget); err != nil {
		return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: %w", l.name, ErrLoginFailed, err)
	}
	sent = l.now()
	lr, err := l.build(sent)
	if err != nil {
		return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: %w", l.name, ErrLoginFailed, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + lr.path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(lr.body))
	if err != nil {
		return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: building the request: %w", l.name, ErrLoginFailed, err)
	}
	req.Header.Set("Authorization", lr.authz)
	req.Header.Set("X-Token-Type", "LongTicket")
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meetwatch")
	resp, err := l.cfg.HTTPClient.Do(req)
	if err != nil {
		// The error names the URL and the cause; the credentials are only
		// in the header and body, which it never shows.
		return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: %w", l.name, ErrLoginFailed, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLoginAnswer))
	reqID := resp.Header.Get("X-Request-Id")
	if resp.StatusCode != http.StatusOK {
		gate.heed(resp.StatusCode, resp.Header, time.Now())
		apiErr := parseAPIError(resp.StatusCode, reqID, b, lr.secrets...)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			// Wrong credentials, or a client the API does not accept: a
			// retry would be refused the same way, and may lock the account.
			return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: %w: %s", l.name, ErrLoginFailed, ErrLoginRefused, apiErr)
		}
		return redact.Secret{}, time.Time{}, 0, fail("%s", apiErr)
	}
	if err != nil {
		return redact.Secret{}, time.Time{}, 0, fmt.Errorf("%s login: %w: reading the answer (request_id %s): %w", l.name, ErrLoginFailed, reqID, err)
	}
	var ans loginAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		// Not the decoder's message: for a mistyped field it quotes the
		// value, which may be the token.
		return redact.Secret{}, time.Time{}, 0, fail("answer 200 is not a token (request_id %s)", reqID)
	}
	if ans.AccessToken == "" {
		return redact.Secret{}, time.Time{}, 0, fail("answer 200 has no accessToken (request_id %s)", reqID)
	}
	return redact.NewSecret(ans.AccessToken), sent, l.lifetime(sent, ans), nil
}

// lifetime prefers validPeriod, which measured from the local send time is
// immune to the skew between the local and the server's clocks; it falls
// back to expireTime, then to fallbackLife.
func (l *loginSource) lifetime(sent time.Time, ans loginAnswer) time.Duration {
	if ans.ValidPeriod > 0 {
		return time.Duration(ans.ValidPeriod) * time.Second
	}
	if exp := int64(ans.ExpireTime); exp > 0 {
		// The unit is documented as seconds but unverified against a live
		// account; a value that big in seconds would be past the year
		// 5000, so it is read as milliseconds.
		at := time.Unix(exp, 0)
		if exp > 100_000_000_000 {
			at = time.UnixMilli(exp)
		}
		if life := at.Sub(sent); life > 0 {
			return life
		}
	}
	l.log.Warn("login answer gives no lifetime", "assumed", fallbackLife)
	return fallbackLife
}

// A refused login is reported as text, not as an *APIError, so that it
// never matches ErrUnauthorized: logging in again cannot fix credentials.

// flexInt reads a JSON number or a numeric string, defensively, since the
// answer's types are unverified against a live account; anything else reads
// as 0, which lifetime falls back from rather than failing a login that did
// give a token.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = flexInt(v)
		return nil
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		*n = flexInt(v)
		return nil
	}
	*n = 0
	return nil
}
