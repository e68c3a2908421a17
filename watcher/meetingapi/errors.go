package meetingapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/meetwatch/meetwatch/snapshot/redact"
	"github.com/meetwatch/meetwatch/watcher"
)

// Errors of a listing that cannot become a snapshot, and of getting a token.
// Those the watcher treats apart are its own sentinels, or match them.
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
	ErrUnauthorized = watcher.ErrUnauthorized
	// ErrStaticTokenRefused means the API refused a static access token,
	// which meetwatch has no credentials to renew: every request fails
	// until the token is replaced. An error that matches it matches
	// ErrUnauthorized too.
	ErrStaticTokenRefused = errors.New("the api refused the static access token, which cannot be renewed: replace it, or log in with an App ID or an account")
	// ErrRejected means the API refused the request as configured: a 400
	// (invalid parameters) or a 403 (queryAll without an admin's token).
	// Retrying would only repeat it, so polls back off instead.
	ErrRejected = watcher.ErrRejected
	// ErrOverBudget means the request budget could not allow the next
	// request before the context's deadline.
	ErrOverBudget = errors.New("the request budget cannot fit the listing before the deadline")
	// ErrNoBudget means the request budget has no room for an optional
	// request (an end lookup) now; the caller goes without it. It matches
	// watcher.ErrSkipped.
	ErrNoBudget error = skipped("no room in the request budget for a lookup")
	// ErrNoLookup means a meeting cannot be looked up: its record has no
	// conferenceID to filter the list by, or the listings are filtered by
	// another search key. The next listing settles it. It matches
	// watcher.ErrSkipped.
	ErrNoLookup error = skipped("no lookup by conferenceID")
	// ErrLoginFailed means no access token could be had: the API refused
	// the credentials, answered without a token, or could not be reached.
	// It never matches ErrUnauthorized, which is about a token the API
	// refused, so a caller that logs in again on ErrUnauthorized does not
	// loop on credentials that will never work.
	ErrLoginFailed = errors.New("login failed")
	// ErrLoginRefused means the login endpoint refused the credentials (a
	// 4xx answer other than 429). An error that matches it matches
	// ErrLoginFailed too. It is not retried: the token source remembers the
	// refusal and sends no other login until its backoff has passed (see
	// LoginConfig.Backoff).
	ErrLoginRefused = errors.New("the api refused the credentials")
	// ErrThrottled means the API asked for a pause (a 429 or 503 with
	// Retry-After) that ends after the caller's deadline, so the request
	// was not sent.
	ErrThrottled = errors.New("the api asked for a pause that outlasts the deadline")
)

// skipped is the type of ErrNoBudget and ErrNoLookup: an optional request
// that was never sent, by design.
type skipped string

func (e skipped) Error() string { return string(e) }

// Is tells the watcher that nothing failed: what the request would have
// told comes another way.
func (skipped) Is(target error) bool { return target == watcher.ErrSkipped }

// APIError is an answer other than 200, with the API's error fields where it
// sent them. Gateways also answer with HTML or empty bodies; then only the
// status is known.
type APIError struct {
	Status    int
	Code      string // error_code, e.g. "USG.000000004"
	Message   string // error_msg
	RequestID string // request_id, or the X-Request-Id header
}

// invalidTokenCode is the API's error_code for a missing, wrong or expired
// access token.
const invalidTokenCode = "USG.000000004"

// parseAPIError reads the API's JSON error body, when there is one, and
// scrubs every secret from what the server said, in case it echoed the
// request. A body that is not the API's JSON leaves only the status and the
// request id known.
func parseAPIError(status int, requestID string, body []byte, secrets ...string) *APIError {
	e := &APIError{Status: status, RequestID: requestID}
	var fields struct {
		Code      string `json:"error_code"`
		Message   string `json:"error_msg"`
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(body, &fields) == nil {
		e.Code, e.Message = fields.Code, fields.Message
		if fields.RequestID != "" {
			e.RequestID = fields.RequestID
		}
	}
	for _, s := range secrets {
		if s != "" {
			e.Code = strings.ReplaceAll(e.Code, s, redact.Placeholder)
			e.Message = strings.ReplaceAll(e.Message, s, redact.Placeholder)
			e.RequestID = strings.ReplaceAll(e.RequestID, s, redact.Placeholder)
		}
	}
	return e
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

// Is makes a 401, or the API's invalid-token code, match ErrUnauthorized,
// and a 400 or 403, a request refused as configured that a retry would
// only repeat, match ErrRejected.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Unauthorized()
	case ErrRejected:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusForbidden
	}
	return false
}

// Unauthorized reports a refused access token: a 401 or the API's
// invalid-token code.
func (e *APIError) Unauthorized() bool {
	return e.Status == http.StatusUnauthorized || e.Code == invalidTokenCode
}

// Temporary reports an answer that another try may not get: 429 and 5xx.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// logged wraps e with its API fields, for the log line that reports the
// poll it failed.
func (e *APIError) logged() error {
	return &watcher.AttrError{Err: e, Attrs: []slog.Attr{
		slog.Int("status", e.Status), slog.String("error_code", e.Code),
		slog.String("error_msg", e.Message), slog.String("request_id", e.RequestID),
	}}
}
