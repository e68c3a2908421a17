// Package meetingapi is meetwatch's client of the Huawei Cloud Meeting API:
// it lists the ongoing meetings completely or not at all, logs in (a static
// token, an App ID, or an account), and spends a request budget with
// polite retries.
//
// It implements the watcher's Lister, and its errors match the watcher's
// sentinels (ErrUnauthorized, ErrRejected, ErrSkipped): the adapter
// depends on the engine, so that the engine never depends on HTTP.
package meetingapi

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/internal/backoff"
	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher"
)

// OnlinePath is the API's ongoing-meeting list.
const OnlinePath = "/v1/mmc/management/conferences/online"

// Endpoints are the paths of every request meetwatch makes to the API: the
// listing (and its lookups) and the logins. Metrics label requests by
// them.
func Endpoints() []string { return []string{OnlinePath, appAuthPath, accountAuthPath} }

// MaxPageSize is the largest page the API serves.
const MaxPageSize = 500

// maxCount is the largest count a listing may claim. It is far above any
// real enterprise and guards against a hostile or broken answer.
const maxCount = 10_000_000

// maxPrealloc caps the snapshot preallocated from a listing's count: the
// count is the API's word, and a wrong one must not reserve gigabytes
// before a single record arrived. Larger listings grow the map as usual.
const maxPrealloc = 200_000

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the API's scheme and host, e.g. https://api.meeting.huaweicloud.com.
	BaseURL string
	// Tokens hands out the X-Access-Token; see StaticToken, NewAppIDLogin
	// and NewAccountLogin.
	Tokens TokenSource
	// PageSize is the limit asked for per page, 1 to 500; 0 means 500.
	PageSize int
	// QueryAll lists every user's meetings (an enterprise admin's right).
	QueryAll bool
	// SearchKey, when set, filters the list as the API's searchKey does.
	SearchKey string
	// Concurrency bounds the requests in flight at once; 0 means 4.
	Concurrency int
	// RequestTimeout bounds one request, body included; 0 means 30s.
	RequestTimeout time.Duration
	// MaxBodyBytes caps one page's body; 0 means 32 MiB.
	MaxBodyBytes int64
	// Budget is the client-side request budget shared by every request:
	// pages, confirmations and logins. nil means unlimited.
	Budget *rate.Limiter
	// Gate holds every request while the API asked for a pause (a 429 or
	// 503 with Retry-After). Give the token source the same one
	// (LoginConfig.Gate), so that logins wait for it too; nil means a gate
	// of the client's own.
	Gate *Gate
	// Overlap is how many records each page re-reads of the page before
	// it, so that the list may shift by that many records between two page
	// requests (meetings ending ahead of them) without losing a record; a
	// bigger shift is detected and the listing taken again. At most half
	// a page is kept. 0 means DefaultOverlap; a negative value means none.
	Overlap int
	// ListAttempts bounds how often an inconsistent listing is taken again
	// before the poll is given up; 0 means 3.
	ListAttempts int
	// Retries bounds the retries of one request after a network error, a
	// 429 or a 5xx; 0 means 3.
	Retries int
	// BackoffBase and BackoffMax shape the jittered exponential backoff
	// between retries; 0 means 500ms and 10s. A Retry-After header wins,
	// and a 429 or 503 with one holds every request (see Gate).
	BackoffBase, BackoffMax time.Duration
	// HTTPClient, when set, replaces the client's own *http.Client.
	HTTPClient *http.Client
	// Logger receives retries; nil discards them.
	Logger *slog.Logger
}

// Client lists the ongoing meetings, completely or not at all.
type Client struct {
	cfg    ClientConfig
	base   *url.URL
	http   *http.Client
	logger *slog.Logger
	gate   *Gate
}

var _ watcher.Lister = (*Client)(nil)

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	base, err := ParseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.PageSize == 0:
		cfg.PageSize = MaxPageSize
	case cfg.PageSize < 1 || cfg.PageSize > MaxPageSize:
		return nil, fmt.Errorf("page size %d: want 1 to %d", cfg.PageSize, MaxPageSize)
	}
	if cfg.Tokens == nil {
		return nil, errors.New("no token source")
	}
	cfg.Concurrency = cmp.Or(max(cfg.Concurrency, 0), 4)
	cfg.RequestTimeout = cmp.Or(max(cfg.RequestTimeout, 0), 30*time.Second)
	cfg.MaxBodyBytes = cmp.Or(max(cfg.MaxBodyBytes, 0), 32<<20)
	cfg.ListAttempts = cmp.Or(max(cfg.ListAttempts, 0), 3)
	switch {
	case cfg.Overlap == 0:
		cfg.Overlap = DefaultOverlap
	case cfg.Overlap < 0:
		cfg.Overlap = 0
	}
	cfg.Retries = cmp.Or(max(cfg.Retries, 0), 3)
	cfg.BackoffBase = cmp.Or(max(cfg.BackoffBase, 0), 500*time.Millisecond)
	cfg.BackoffMax = cmp.Or(max(cfg.BackoffMax, 0), 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(cfg.Concurrency, cfg.RequestTimeout)
	}
	gate := cfg.Gate
	if gate == nil {
		gate = &Gate{}
	}
	return &Client{cfg: cfg, base: base, http: hc, logger: cfg.Logger.With("component", "api"), gate: gate}, nil
}

// ParseBaseURL checks the API's base URL: an http or https scheme and a
// host. It is the one check of that URL, for the configuration, the client
// and the logins.
func ParseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api url %q: want http(s)://host", s)
	}
	return u, nil
}

// NewHTTPClient returns the *http.Client meetwatch uses for the API: its
// own transport, with every request bounded by timeout, body included, so
// that a server that never finishes a body cannot stall a poll.
func NewHTTPClient(conns int, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Host is the API host, for the events' source.
func (c *Client) Host() string { return c.base.Host }

// BudgetTime returns how long the budget takes to allow n requests; 0 when
// there is no budget.
func (c *Client) BudgetTime(n int) time.Duration {
	if c.cfg.Budget == nil || c.cfg.Budget.Limit() == rate.Inf || c.cfg.Budget.Limit() <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(c.cfg.Budget.Limit()) * float64(time.Second))
}

// NotBefore returns the time before which a request has no use: the end of
// the pause the API asked for (see Gate), or, while the token source holds
// a refused login back and has no working token, the time it logs in
// again. The watcher does not poll before it.
func (c *Client) NotBefore() time.Time {
	return later(c.gate.NotBefore(), c.cfg.Tokens.NotBefore())
}

// limit returns the page size a listing whose first page is first asks
// for: the configured one, or less when the server echoed a smaller limit
// (a gateway that caps pages).
func (c *Client) limit(first Page) int {
	if first.Limit > 0 && first.Limit < c.cfg.PageSize {
		return first.Limit
	}
	return c.cfg.PageSize
}

// ListingRequests returns how many requests a listing takes whose first
// page is first, when the list holds still: that page, and those after it
// with their overlap. It is what a poll spends of the budget, short of
// retries, end lookups and logins; `meetwatch check` sizes the interval
// with it.
func (c *Client) ListingRequests(first Page) int {
	return 1 + pagesAfterFirst(first.Count, c.limit(first), c.cfg.Overlap)
}

// PageSizes returns the page size and the overlap a listing whose first
// page is first uses, as List works them out.
func (c *Client) PageSizes(first Page) (limit, overlap int) {
	limit = c.limit(first)
	overlap, _ = windows(limit, c.cfg.Overlap)
	return limit, overlap
}

// FirstPage sends one request for the listing's first page, as a poll's
// first request is sent (after the gate and the budget, with a token from
// the token source), and decodes it; it does not retry, nor log in again
// after a 401, so that the answer is the API's own. `meetwatch check`
// measures the API with it.
func (c *Client) FirstPage(ctx context.Context) (Page, error) {
	p, _, err := c.fetchPageOnce(ctx, c.cfg.SearchKey, 0, c.cfg.PageSize, nil, nil)
	return p, err
}

// Page is one decoded answer of the list endpoint.
type Page struct {
	Offset, Limit, Count int
	Records              []snapshot.Meeting
	// Null is true when data was null or absent rather than an array.
	Null bool
}

func (c *Client) pageURL(searchKey string, offset, limit int) string {
	q := url.Values{}
	q.Set("offset", strconv.Itoa(offset))
	q.Set("limit", strconv.Itoa(limit))
	q.Set("queryAll", strconv.FormatBool(c.cfg.QueryAll))
	if searchKey != "" {
		q.Set("searchKey", searchKey)
	}
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + OnlinePath
	u.RawQuery = q.Encode()
	return u.String()
}

// fetchPage gets and decodes one page. A network error, a 429 or a 5xx is
// retried with jittered exponential backoff (honouring Retry-After) while
// the context allows; a refused token is renewed once and the request sent
// again, unless it is a static token, which cannot be; a refused login is
// not retried. Every attempt waits for the gate
// and the request budget first, and for one of slots when given (see
// requestPage).
func (c *Client) fetchPage(ctx context.Context, searchKey string, offset, limit int, read snapshot.ReadFunc, slots chan struct{}) (Page, error) {
	reloggedIn := false
	wait := backoff.Backoff{Base: c.cfg.BackoffBase, Max: c.cfg.BackoffMax}
	for attempt := 0; ; attempt++ {
		p, retryAfter, err := c.fetchPageOnce(ctx, searchKey, offset, limit, read, slots)
		if err == nil {
			return p, nil
		}
		switch {
		case ctx.Err() != nil:
			return Page{}, err
		case errors.Is(err, ErrUnauthorized) && !reloggedIn && !errors.Is(err, ErrStaticTokenRefused):
			reloggedIn = true
			c.logger.Info("access token refused; renewing it once", "offset", offset)
			continue
		case attempt >= c.cfg.Retries || !retryable(err):
			return Page{}, err
		}
		d := wait.Next()
		if retryAfter > 0 {
			d = retryAfter
		}
		if dl, ok := ctx.Deadline(); ok && dl.Before(later(time.Now().Add(d), c.gate.NotBefore())) {
			return Page{}, err // the poll's deadline comes first
		}
		c.logger.Debug("retrying request", "offset", offset, "attempt", attempt+1, "wait_ms", d.Milliseconds(), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return Page{}, err
		case <-t.C:
		}
	}
}

// retryable reports whether another try of a request may succeed: network
// errors, bodies cut short or garbled on the way (a gateway's hiccup as
// often as not), 429 and 5xx. A 400 or 403 is a configuration problem that
// a retry would only repeat; a refused login would only be refused again;
// and a pause the API asked for that outlasts the deadline cannot end in
// time.
func retryable(err error) bool {
	if errors.Is(err, ErrLoginRefused) || errors.Is(err, ErrThrottled) || errors.Is(err, ErrNoBudget) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Temporary()
	}
	return true
}

// wait returns when the client may send a request: once the gate is open
// and the request budget allows one more, or with an error when ctx ends
// first or cannot last that long (ErrThrottled, ErrOverBudget).
func (c *Client) wait(ctx context.Context) error {
	return c.gate.admit(ctx, c.waitBudget)
}

// lookupKey marks the context of an end lookup, whose requests take from
// the budget only what it has now (see Confirm).
type lookupKey struct{}

func (c *Client) waitBudget(ctx context.Context) error {
	if c.cfg.Budget == nil {
		return nil
	}
	if ctx.Value(lookupKey{}) != nil {
		if !c.cfg.Budget.Allow() {
			return fmt.Errorf("waiting for the request budget: %w", ErrNoBudget)
		}
		return nil
	}
	if err := c.cfg.Budget.Wait(ctx); err != nil {
		if ctx.Err() == nil {
			err = ErrOverBudget
		}
		return fmt.Errorf("waiting for the request budget: %w", err)
	}
	return nil
}

func (c *Client) fetchPageOnce(ctx context.Context, searchKey string, offset, limit int, read snapshot.ReadFunc, slots chan struct{}) (Page, time.Duration, error) {
	body, reqID, retryAfter, err := c.requestPage(ctx, searchKey, offset, limit, slots)
	if body != nil {
		defer bodies.Put(body)
	}
	if err != nil {
		return Page{}, retryAfter, err
	}
	p, err := decodeBody(body.Bytes(), read)
	if err != nil {
		return Page{}, 0, fmt.Errorf("listing page at offset %d (request_id %s): %w", offset, reqID, err)
	}
	p.Offset = offset // what was asked is what the checks reason about
	return p, 0, nil
}

// requestPage sends one request for a page and reads its body whole, into
// a buffer from bodies that the caller puts back (it may come with an
// error), and returns it with the answer's X-Request-Id. With slots, it
// holds one of them from before the request until the body is read, and
// not while the body is decoded: the listing keeps that many requests in
// flight while pages already read are decoded.
func (c *Client) requestPage(ctx context.Context, searchKey string, offset, limit int, slots chan struct{}) (*bytes.Buffer, string, time.Duration, error) {
	if slots != nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, "", 0, context.Cause(ctx)
		}
		defer func() { <-slots }()
	}
	if err := c.wait(ctx); err != nil {
		return nil, "", 0, err
	}
	token, err := c.cfg.Tokens.Token(ctx)
	if err != nil {
		return nil, "", 0, fmt.Errorf("getting an access token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.pageURL(searchKey, offset, limit), nil)
	if err != nil {
		return nil, "", 0, fmt.Errorf("building request for offset %d: %w", offset, err)
	}
	req.Header.Set("X-Access-Token", token.Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meetwatch")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", 0, fmt.Errorf("listing page at offset %d: %w", offset, err)
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
	}()
	body := &cappedReader{r: resp.Body, left: c.cfg.MaxBodyBytes}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody)) // best effort: the status already says it failed
		apiErr := parseAPIError(resp.StatusCode, resp.Header.Get("X-Request-Id"), b, token.Reveal())
		retryAfter := c.gate.heed(resp.StatusCode, resp.Header, time.Now())
		if apiErr.Unauthorized() && !c.cfg.Tokens.Invalidate(token) {
			return nil, "", retryAfter, fmt.Errorf("listing page at offset %d: %w: %w", offset, ErrStaticTokenRefused, apiErr.logged())
		}
		return nil, "", retryAfter, fmt.Errorf("listing page at offset %d: %w", offset, apiErr.logged())
	}
	reqID := resp.Header.Get("X-Request-Id")
	buf, err := readBody(body)
	if err != nil {
		return buf, "", 0, fmt.Errorf("listing page at offset %d (request_id %s): %w", offset, reqID, err)
	}
	return buf, reqID, 0, nil
}

// maxErrorBody caps how much of an error answer is read.
const maxErrorBody = 64 << 10

// cappedReader fails a body that grows past its cap, rather than silently
// truncating it into something that might still decode.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("%w: body larger than the cap", ErrBadPage)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
