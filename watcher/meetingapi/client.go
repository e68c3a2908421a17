// Package meetingapi is meetwatch's client of the Huawei Cloud Meeting API:
// it lists the ongoing meetings completely or not at all, logs in (a static
// token, an App ID, or an account), and spends a request budget with
// polite retries.
//
// The watcher sees it only through its Lister interface and through the
// methods its errors carry (Rejected, Unauthorized, OverBudget), so that
// the engine never depends on HTTP.
package meetingapi

import (
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
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/meetwatch/meetwatch/snapshot"
	"github.com/meetwatch/meetwatch/watcher/backoff"
)

// OnlinePath is the API's ongoing-meeting list.
const OnlinePath = "/v1/mmc/management/conferences/online"

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
	// ListAttempts bounds how often an inconsistent listing is taken again
	// before the poll is given up; 0 means 3.
	ListAttempts int
	// Retries bounds the retries of one request after a network error, a
	// 429 or a 5xx; 0 means 3.
	Retries int
	// BackoffBase and BackoffMax shape the jittered exponential backoff
	// between retries; 0 means 500ms and 10s. A Retry-After header wins.
	BackoffBase, BackoffMax time.Duration
	// HTTPClient, when set, replaces the client's own *http.Client.
	HTTPClient *http.Client
	// Logger receives retries; nil discards them.
	Logger *slog.Logger
}

// Client lists the ongoing meetings, completely or not at all.
type Client struct {
	cfg      ClientConfig
	base     *url.URL
	http     *http.Client
	logger   *slog.Logger
	requests atomic.Int64
}

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
	return &Client{cfg: cfg, base: base, http: hc, logger: cfg.Logger.With("component", "api")}, nil
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

// Requests counts the HTTP requests this client has sent to the list
// endpoint, retries included, so that a poll can be held against the budget.
func (c *Client) Requests() int64 { return c.requests.Load() }

// BudgetTime returns how long the budget needs to allow n requests; 0 when
// there is no budget.
func (c *Client) BudgetTime(n int64) time.Duration {
	if c.cfg.Budget == nil || c.cfg.Budget.Limit() == rate.Inf || c.cfg.Budget.Limit() <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(c.cfg.Budget.Limit()) * float64(time.Second))
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
// again. Every attempt waits for the request budget first.
func (c *Client) fetchPage(ctx context.Context, searchKey string, offset, limit int) (Page, error) {
	reloggedIn := false
	wait := backoff.Backoff{Base: c.cfg.BackoffBase, Max: c.cfg.BackoffMax}
	for attempt := 0; ; attempt++ {
		p, retryAfter, err := c.fetchPageOnce(ctx, searchKey, offset, limit)
		if err == nil {
			return p, nil
		}
		switch {
		case ctx.Err() != nil:
			return Page{}, err
		case errors.Is(err, ErrUnauthorized) && !reloggedIn:
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
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
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
// a retry would only repeat.
func retryable(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Temporary()
	}
	return true
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

func (c *Client) fetchPageOnce(ctx context.Context, searchKey string, offset, limit int) (Page, time.Duration, error) {
	if c.cfg.Budget != nil {
		if err := c.cfg.Budget.Wait(ctx); err != nil {
			if ctx.Err() == nil {
				err = ErrOverBudget
			}
			return Page{}, 0, fmt.Errorf("waiting for the request budget: %w", err)
		}
	}
	token, err := c.cfg.Tokens.Token(ctx)
	if err != nil {
		return Page{}, 0, fmt.Errorf("getting an access token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.pageURL(searchKey, offset, limit), nil)
	if err != nil {
		return Page{}, 0, fmt.Errorf("building request for offset %d: %w", offset, err)
	}
	req.Header.Set("X-Access-Token", token.Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meetwatch")
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return Page{}, 0, fmt.Errorf("listing page at offset %d: %w", offset, err)
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
		if apiErr.Unauthorized() {
			c.cfg.Tokens.Invalidate(token)
		}
		return Page{}, retryAfter(resp.Header, time.Now()), fmt.Errorf("listing page at offset %d: %w", offset, apiErr)
	}
	p, err := DecodePage(body)
	if err != nil {
		return Page{}, 0, fmt.Errorf("listing page at offset %d (request_id %s): %w", offset, resp.Header.Get("X-Request-Id"), err)
	}
	p.Offset = offset // what was asked is what the checks reason about
	return p, 0, nil
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
