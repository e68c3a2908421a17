package watcher

import (
	"errors"
	"log/slog"
)

// Errors of the engine, and those it asks its adapters to match with
// errors.Is so that it can treat a failure without importing the adapter.
var (
	// ErrFenced means this replica lost the lease, or another replica wrote
	// the state since this one read it: whatever it was about to write is
	// stale.
	ErrFenced = errors.New("fenced: this replica no longer leads")

	// ErrUnauthorized means the API refused the access token: the poll
	// fails with a message that says so.
	ErrUnauthorized = errors.New("authentication failed")
	// ErrRejected means the API refused a request as configured (a 400 or
	// a 403): a retry would only repeat it, and the message says what to
	// check.
	ErrRejected = errors.New("request rejected by the api")
	// ErrSkipped is what Confirm's error matches when the lookup was not
	// sent, by design (no room in the request budget, nothing to look the
	// meeting up by): nothing failed, and the next listing settles it.
	ErrSkipped = errors.New("lookup not sent")

	// errPollTimeout is the cause of a poll whose API part outlived its
	// deadline.
	errPollTimeout = errors.New("the api part of the poll took longer than its deadline")
)

// AttrError is an error with fields worth their own keys in the log line
// that reports it, such as the API's error code and request id. An adapter
// wraps its error in one; Run finds it anywhere in a poll's error chain
// and logs Attrs beside "err".
type AttrError struct {
	Err   error
	Attrs []slog.Attr
}

func (e *AttrError) Error() string { return e.Err.Error() }

func (e *AttrError) Unwrap() error { return e.Err }
