package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meetwatch/meetwatch/snapshot"
)

// OnlinePath is the API's ongoing-meeting list.
const OnlinePath = "/v1/mmc/management/conferences/online"

// MaxPageSize is the largest page the API serves.
const MaxPageSize = 500

// maxCount is the largest count a listing may claim. It is far above any
// real enterprise and guards the snapshot allocation against a hostile or
// broken answer.
const maxCount = 10_000_000

// Errors of a listing that cannot become a snapshot.
var (
	// ErrIncomplete means the listing did not cover every meeting the API
	// counted, so a missing meeting cannot be read as ended.
	ErrIncomplete = errors.New("incomplete listing")
	// ErrInconsistent means the list changed while it was read: the count
	// moved between pages or a confUUID appeared twice.
	ErrInconsistent = errors.New("inconsistent listing")
	// ErrBadPage means a page could not be decoded as the API's answer.
	ErrBadPage = errors.New("malformed page")
	// ErrUnauthorized means the API refused the access token.
	ErrUnauthorized = errors.New("authentication failed")
)

// APIError is an answer other than 200, with the API's error fields where it
// sent them. Gateways also answer with HTML or empty bodies; then only the
// status is known.
type APIError struct {
	Status    int
	Code      string // error_code, e.g. "USG.000000004"
	Message   string // error_msg
	RequestID string // request_id, or the X-Request-Id header
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "api answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, " %q", e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request_id %s)", e.RequestID)
	}
	return b.String()
}

// Is makes a 401, or the API's invalid-token code, match ErrUnauthorized.
func (e *APIError) Is(target error) bool {
	return target == ErrUnauthorized && (e.Status == http.StatusUnauthorized || e.Code == "USG.000000004")
}

// LogAttrs returns the error's API fields for a log line.
func (e *APIError) LogAttrs() []any {
	return []any{"status", e.Status, "error_code", e.Code, "error_msg", e.Message, "request_id", e.RequestID}
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the API's scheme and host, e.g. https://api.meeting.huaweicloud.com.
	BaseURL string
	// Token is sent as X-Access-Token.
	Token Secret
	// PageSize is the limit asked for per page, 1 to 500; 0 means 500.
	PageSize int
	// QueryAll lists every user's meetings (an enterprise admin's right).
	QueryAll bool
	// SearchKey, when set, filters the list as the API's searchKey does.
	SearchKey string
	// Concurrency bounds the pages fetched at once after the first; 0 means 4.
	Concurrency int
	// RequestTimeout bounds one request; 0 means 30s.
	RequestTimeout time.Duration
	// MaxBodyBytes caps one page's body; 0 means 32 MiB.
	MaxBodyBytes int64
	// HTTPClient, when set, replaces the client's own *http.Client.
	HTTPClient *http.Client
}

// Client lists the ongoing meetings, completely or not at all.
type Client struct {
	cfg  ClientConfig
	base *url.URL
	http *http.Client
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("api url %q: want http(s)://host", cfg.BaseURL)
	}
	switch {
	case cfg.PageSize == 0:
		cfg.PageSize = MaxPageSize
	case cfg.PageSize < 1 || cfg.PageSize > MaxPageSize:
		return nil, fmt.Errorf("page size %d: want 1 to %d", cfg.PageSize, MaxPageSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.Concurrency
		tr.ResponseHeaderTimeout = cfg.RequestTimeout
		hc = &http.Client{Transport: tr, Timeout: cfg.RequestTimeout}
	}
	return &Client{cfg: cfg, base: base, http: hc}, nil
}

// Host is the API host, for the events' source.
func (c *Client) Host() string { return c.base.Host }

// Page is one decoded answer of the list endpoint.
type Page struct {
	Offset, Limit, Count int
	Records              []snapshot.Meeting
	// Null is true when data was null or absent rather than an array.
	Null bool
}

// List fetches every page and returns the complete snapshot.
//
// The first page tells the count; the rest are fetched with bounded
// concurrency. The result is complete only when every page answered 200 and
// decoded, every record has a confUUID, the count never moved, and the
// distinct confUUIDs number exactly the count. Anything else is an error and
// no snapshot: a meeting a partial listing missed must not look ended.
func (c *Client) List(ctx context.Context) (snapshot.Snapshot, error) {
	first, err := c.fetchPage(ctx, 0, c.cfg.PageSize)
	if err != nil {
		return nil, err
	}
	count := first.Count
	// The server echoes the limit it applied; a gateway that caps pages
	// below what was asked must not leave gaps between them.
	step := c.cfg.PageSize
	if first.Limit > 0 && first.Limit < step {
		step = first.Limit
	}
	snap := make(snapshot.Snapshot, count)
	var mu sync.Mutex
	add := func(p Page) error {
		if p.Count != count {
			return fmt.Errorf("%w: count moved from %d to %d at offset %d", ErrInconsistent, count, p.Count, p.Offset)
		}
		if p.Null && p.Offset < count {
			return fmt.Errorf("%w: data is null at offset %d of %d", ErrIncomplete, p.Offset, count)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range p.Records {
			if _, dup := snap[m.UUID]; dup {
				return fmt.Errorf("%w: confUUID %s listed twice", ErrInconsistent, m.UUID)
			}
			snap[m.UUID] = m
		}
		return nil
	}
	if err := add(first); err != nil {
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Concurrency)
	for off := step; off < count; off += step {
		g.Go(func() error {
			p, err := c.fetchPage(gctx, off, step)
			if err != nil {
				return err
			}
			return add(p)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(snap) != count {
		return nil, fmt.Errorf("%w: %d distinct meetings listed, count is %d", ErrIncomplete, len(snap), count)
	}
	return snap, nil
}

func (c *Client) pageURL(offset, limit int) string {
	q := url.Values{}
	q.Set("offset", strconv.Itoa(offset))
	q.Set("limit", strconv.Itoa(limit))
	q.Set("queryAll", strconv.FormatBool(c.cfg.QueryAll))
	if c.cfg.SearchKey != "" {
		q.Set("searchKey", c.cfg.SearchKey)
	}
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + OnlinePath
	u.RawQuery = q.Encode()
	return u.String()
}

func (c *Client) fetchPage(ctx context.Context, offset, limit int) (Page, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.pageURL(offset, limit), nil)
	if err != nil {
		return Page{}, fmt.Errorf("building request for offset %d: %w", offset, err)
	}
	req.Header.Set("X-Access-Token", c.cfg.Token.Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meetwatch")
	resp, err := c.http.Do(req)
	if err != nil {
		return Page{}, fmt.Errorf("listing page at offset %d: %w", offset, err)
	}
	defer resp.Body.Close()
	body := &cappedReader{r: resp.Body, left: c.cfg.MaxBodyBytes}
	if resp.StatusCode != http.StatusOK {
		return Page{}, fmt.Errorf("listing page at offset %d: %w", offset, c.apiError(resp, body))
	}
	p, err := DecodePage(body)
	if err != nil {
		return Page{}, fmt.Errorf("listing page at offset %d (request_id %s): %w", offset, resp.Header.Get("X-Request-Id"), err)
	}
	p.Offset = offset // what was asked is what the checks above reason about
	return p, nil
}

// apiError reads the API's JSON error body, if there is one. The token is
// scrubbed from what the server said, in case it echoed it.
func (c *Client) apiError(resp *http.Response, body io.Reader) *APIError {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	var fields struct {
		Code      string `json:"error_code"`
		Message   string `json:"error_msg"`
		RequestID string `json:"request_id"`
	}
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10)) // best effort: the status already says it failed
	if json.Unmarshal(b, &fields) == nil {
		e.Code, e.Message = fields.Code, fields.Message
		if fields.RequestID != "" {
			e.RequestID = fields.RequestID
		}
	}
	if tok := c.cfg.Token.Reveal(); tok != "" {
		e.Message = strings.ReplaceAll(e.Message, tok, redacted)
	}
	return e
}

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
