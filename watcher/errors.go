package watcher

import "errors"

// Errors of the engine.
var (
	// ErrFenced means this replica lost the lease, or another replica wrote
	// the state since this one read it: whatever it was about to write is
	// stale.
	ErrFenced = errors.New("fenced: this replica no longer leads")

	// errPollTimeout is the cause of a poll whose API part outlived its
	// deadline.
	errPollTimeout = errors.New("the api part of the poll took longer than its deadline")
)

// The behaviours the engine asks of an error. Adapters give their errors
// these methods, so that the engine decides how to treat a failure without
// importing the adapter or matching its sentinels.
type (
	// rejecter is an error of a request refused as configured (a 400 or a
	// 403): retrying at once would only repeat it, so polls back off.
	rejecter interface{ Rejected() bool }
	// unauthorized is an error of a refused access token.
	unauthorized interface{ Unauthorized() bool }
	// skipper is an error of an optional request not sent by design (an
	// end lookup without room in the budget): nothing failed.
	skipper interface{ Skipped() bool }
	// logAttrser is an error with fields worth a log line's keys.
	logAttrser interface{ LogAttrs() []any }
)

// errorIs reports whether some error in err's chain has the behaviour T and
// says yes to it.
func errorIs[T any](err error, says func(T) bool) bool {
	var target T
	return errors.As(err, &target) && says(target)
}
